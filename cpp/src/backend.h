// The interface both backends implement (shared/DESIGN.md, "Backends").
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ffn_skip.h"
#include "model.h"

namespace ffnskip {

class Backend {
  public:
    virtual ~Backend() = default;
    virtual const char* name() const = 0;
    virtual int n_ctx() const = 0;
    // Tokens currently in the KV cache.
    virtual int n_past() const = 0;

    // Appends tokens[0..n) at positions n_past().. to the KV cache and writes logits: the last
    // token's (n_vocab floats) or, with all_logits, every token's (n x n_vocab, row-major).
    // `skip` applies the FFN skip policy to these generated tokens (null = dense); more than one
    // token per skip request only where batched_skip() is true.
    // Throws ContextOverflow if n_past() + n > n_ctx(); Cancelled if *cancel becomes true between
    // chunks of a long prompt (the cache is then rolled back to its state before the call).
    virtual void forward(const int32_t* tokens, int n, float* logits, bool all_logits,
                         const SkipRequest* skip) = 0;
    // Whether forward() accepts a skip request for several tokens at once (each token with its
    // own budget walk). Rows of a batch only interact through the KV cache, which a skipped FFN
    // does not touch, so this equals feeding the tokens one at a time.
    virtual bool batched_skip() const { return false; }
    // Keep the first n_keep cache entries (n_keep <= n_past()).
    virtual void kv_truncate(int n_keep) = 0;
    void reset() { kv_truncate(0); }

    void set_cancel_flag(const std::atomic<bool>* cancel) { cancel_ = cancel; }

    // The data pointers of the model's weight views (Model::tok_embd, output, the layer
    // matrices) that this backend never reads after construction because it keeps its own
    // copy (device memory, a re-laid-out host copy). The engine copies every other weight out
    // of the file mapping (Model::detach_weights); a weight missing here costs memory, one
    // listed wrongly could crash the process (SIGBUS) if the file is truncated.
    virtual std::vector<const uint8_t*> unread_weights() const { return {}; }

  protected:
    bool cancelled() const { return cancel_ && cancel_->load(std::memory_order_relaxed); }
    const std::atomic<bool>* cancel_ = nullptr;
};

// n_threads <= 0: the number of physical cores.
std::unique_ptr<Backend> make_cpu_backend(std::shared_ptr<const Model> model, int n_ctx,
                                          int n_threads);

// Throws BackendUnavailable saying why (not compiled in, no device, out of memory).
std::unique_ptr<Backend> make_cuda_backend(std::shared_ptr<const Model> model, int n_ctx);
// True when the CUDA backend is compiled in and a device is present; otherwise *why says which.
bool cuda_available(std::string* why);

}  // namespace ffnskip
