// Engine: one loaded model, one backend with its KV cache, the active skip policy and its
// statistics. The Python Generator (sampling, streaming, chat) drives it token by token; this
// is the C++ half of DESIGN.md's "Session/Generator".
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend.h"
#include "ffn_skip.h"
#include "model.h"

namespace ffnskip {

class Engine {
  public:
    // backend: "auto" (CUDA when available, else CPU), "cpu" or "cuda".
    Engine(const std::string& path, const std::string& backend, int n_ctx, int n_threads);
    // On an already loaded model, which several engines may share (the C API's contexts).
    Engine(std::shared_ptr<Model> model, const std::string& backend, int n_ctx, int n_threads);

    const Model& model() const { return *model_; }
    // Keeps the model (tokenizer, weights) alive while the caller uses it without the engine.
    std::shared_ptr<const Model> shared_model() const { return model_; }
    const Backend& backend() const { return *backend_; }
    int n_threads() const { return n_threads_; }

    // Appends tokens to the cache (batched); logits of the last token or of all of them.
    void eval(const int32_t* tokens, int n, bool all_logits, float* out);
    // Appends one generated token (gen_index counts from the first generated token) under the
    // active skip policy, if any, and folds its trace into the statistics.
    void eval_generated(int32_t token, int64_t gen_index, float* out);
    void kv_truncate(int n_keep) { backend_->kv_truncate(n_keep); }

    // Teacher-forced evaluation from an empty cache. prompt_len < 0: all tokens batched, dense.
    // Otherwise tokens[:prompt_len] are the prompt (batched, dense) and every later token is a
    // generated token under `skip` (null: dense) with exactly the decisions decoding would make:
    // batched where the backend supports it (Backend::batched_skip), else one at a time.
    // Statistics are reset first and then describe this call.
    void logits(const int32_t* tokens, int n, bool all_positions, const SkipConfig* skip,
                int prompt_len, float* out);

    // nullopt: dense decoding.
    void set_skip(const std::optional<SkipConfig>& cfg);
    const std::optional<SkipConfig>& skip_config() const { return skip_cfg_; }
    const SkipStats& skip_stats() const { return stats_; }
    void reset_skip_stats();

    void cancel() { cancel_.store(true); }
    void clear_cancel() { cancel_.store(false); }

  private:
    void decode_one(int32_t token, int64_t gen_index, const SkipPolicy* policy, bool record,
                    float* out);

    std::shared_ptr<Model> model_;
    std::unique_ptr<Backend> backend_;
    int n_threads_ = 0;
    std::optional<SkipConfig> skip_cfg_;
    std::unique_ptr<SkipPolicy> policy_;
    SkipStats stats_;
    SkipTrace trace_;
    std::atomic<bool> cancel_{false};
};

}  // namespace ffnskip
