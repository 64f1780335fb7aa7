// The interface both backends implement (shared/DESIGN.md, "Backends"). The base class owns what
// does not depend on the hardware: input checks, the KV cache's fill level, chunking, cancel and
// roll-back. A backend implements run_chunk (the model's math for a few tokens) and kv storage.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ffn_skip.h"
#include "model.h"

namespace ffnskip {

// One sequence's part of a batched step (Backend::forward_batch): tokens[0..n) are appended to
// KV slot `slot` at positions slot_past(slot)... gen_index >= 0: they are generated tokens
// gen_index.. under the step's skip policy; < 0: prompt tokens (dense). logits: the last
// token's n_vocab floats, or null.
struct BatchSeq {
    int slot = 0;
    const int32_t* tokens = nullptr;
    int n = 0;
    int64_t gen_index = -1;
    float* logits = nullptr;
};

class Backend {
  public:
    virtual ~Backend() = default;
    virtual const char* name() const = 0;
    int n_ctx() const { return n_ctx_; }
    // Tokens currently in the KV cache.
    int n_past() const { return slot_past_[0]; }

    // Appends tokens[0..n) at positions n_past().. to the KV cache and writes logits: the last
    // token's (n_vocab floats) or, with all_logits, every token's (n x n_vocab, row-major).
    // `skip` applies the FFN skip policy to these generated tokens (null = dense); more than one
    // token per skip request only where batched_skip() is true.
    // Throws InvalidArgument (no tokens, an id out of range, a bad skip request), ContextOverflow
    // if n_past() + n > n_ctx(), Cancelled if *cancel becomes true between chunks. On any error
    // the cache is rolled back to its state before the call.
    void forward(const int32_t* tokens, int n, float* logits, bool all_logits,
                 const SkipRequest* skip);
    // Whether forward() accepts a skip request for several tokens at once (each token with its
    // own budget walk). Rows of a batch only interact through the KV cache, which a skipped FFN
    // does not touch, so this equals feeding the tokens one at a time.
    virtual bool batched_skip() const { return false; }
    // Readies the backend for decoding under `policy` (null: dense): the CPU backend builds the
    // weight layouts its channel filters need and frees those no longer needed. forward() also
    // builds missing ones on demand; this just moves the work (and the freeing) to set-up time.
    virtual void prepare_skip(const SkipPolicy* /*policy*/) {}
    // Keep the first n_keep cache entries (0 <= n_keep <= n_past()); later entries are never
    // read again and get overwritten.
    void kv_truncate(int n_keep);
    void reset() { kv_truncate(0); }

    void set_cancel_flag(const std::atomic<bool>* cancel) { cancel_ = cancel; }

    // The data pointers of the model's weight views (Model::tok_embd, output, the layer
    // matrices) that this backend never reads after construction because it keeps its own
    // copy (device memory, a re-laid-out host copy). The engine copies every other weight out
    // of the file mapping (Model::detach_weights); a weight missing here costs memory, one
    // listed wrongly could crash the process (SIGBUS) if the file is truncated.
    virtual std::vector<const uint8_t*> unread_weights() const { return {}; }

    // ---- several sequences (serving) ---------------------------------------------------------
    // The KV cache has n_slots() slots of n_ctx() positions each; slot 0 is the one forward()
    // uses. forward_batch() runs one step over several sequences, each in its own slot at its own
    // position: one pass over the weights for all their rows. A sequence's logits are bitwise the
    // same whatever other sequences share the step and however its tokens were split into steps.
    int n_slots() const { return static_cast<int>(slot_past_.size()); }
    int slot_past(int slot) const;
    // Throws InvalidArgument (a bad or repeated slot, no tokens, a bad id, more than
    // max_batch_rows() rows in all, a policy for another model), ContextOverflow (a slot would
    // overflow), BackendUnavailable (this backend has no batched step). On error no slot changes.
    // `trace` (needed with a policy) gets one row per token of the step, in order.
    void forward_batch(const BatchSeq* seqs, int n_seqs, const SkipPolicy* policy,
                       SkipTrace* trace);
    void slot_truncate(int slot, int n_keep);
    int max_batch_rows() const { return max_chunk_; }

  protected:
    // n_ctx < 1 or n_slots < 1 is an InvalidArgument.
    Backend(std::shared_ptr<const Model> model, int n_ctx, int max_chunk, int n_slots = 1);

    // The batched step (checked by forward_batch): the default refuses.
    virtual void run_batch(const BatchSeq* seqs, int n_seqs, const SkipPolicy* policy,
                           SkipTrace* trace);

    // Runs tokens[0..T) (T <= max_chunk, already checked) at positions n_past().. through the
    // model, writing their K/V at those positions. logits: T rows with all_logits, else the last
    // token's row (null: none wanted). With a skip request, token t of the chunk is token
    // first + t of the call: generated token skip->gen_index + first + t, whose decisions go to
    // row first + t of skip->trace (sized for the whole call by forward()). The base advances
    // n_past() after the chunk returns.
    virtual void run_chunk(const int32_t* tokens, int T, float* logits, bool all_logits,
                           const SkipRequest* skip, int first) = 0;

    std::shared_ptr<const Model> model_;
    const Hparams hp_;  // the model's, for this n_ctx (Hparams::for_context)

  private:
    bool cancelled() const { return cancel_ && cancel_->load(std::memory_order_relaxed); }
    void check(const int32_t* tokens, int n, const SkipRequest* skip) const;

    void check_tokens(const int32_t* tokens, int n) const;

    int n_ctx_;
    int max_chunk_;
    std::vector<int> slot_past_;  // tokens cached per slot; forward() uses slot 0
    const std::atomic<bool>* cancel_ = nullptr;
};

// n_threads <= 0: the number of physical cores.
// n_slots: KV slots for forward_batch (1: the single-sequence engine).
std::unique_ptr<Backend> make_cpu_backend(std::shared_ptr<const Model> model, int n_ctx,
                                          int n_threads, int n_slots = 1);

// Throws BackendUnavailable saying why (not compiled in, no device, out of memory).
std::unique_ptr<Backend> make_cuda_backend(std::shared_ptr<const Model> model, int n_ctx);
// True when the CUDA backend is compiled in and a device is present; otherwise *why says which.
bool cuda_available(std::string* why);

}  // namespace ffnskip
