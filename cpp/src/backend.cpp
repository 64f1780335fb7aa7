#include "backend.h"

#include <algorithm>
#include <string>

namespace ffnskip {

Backend::Backend(std::shared_ptr<const Model> model, int n_ctx, int max_chunk)
    : model_(std::move(model)), hp_(model_->hparams()), n_ctx_(n_ctx), max_chunk_(max_chunk) {
    if (n_ctx_ < 1) throw InvalidArgument("n_ctx must be >= 1, got " + std::to_string(n_ctx_));
}

void Backend::check(const int32_t* tokens, int n, const SkipRequest* skip) const {
    if (n <= 0) throw InvalidArgument("forward: no tokens");
    if (static_cast<int64_t>(n_past_) + n > n_ctx_) {
        throw ContextOverflow("context overflow: " + std::to_string(n_past_) + " cached + " +
                              std::to_string(n) + " new tokens > n_ctx " + std::to_string(n_ctx_));
    }
    for (int i = 0; i < n; ++i) {
        if (tokens[i] < 0 || tokens[i] >= hp_.n_vocab) {
            throw InvalidArgument("token id " + std::to_string(tokens[i]) +
                                  " is out of range [0, " + std::to_string(hp_.n_vocab) + ")");
        }
    }
    if (!skip) return;
    if (!skip->policy || !skip->trace) {
        throw InvalidArgument("forward: a skip request needs a policy and a trace");
    }
    if (n != 1 && !batched_skip()) {
        throw InvalidArgument(std::string("forward: the ") + name() +
                              " backend takes a skip request for exactly one token");
    }
    if (skip->policy->n_layer() != hp_.n_layer) {
        throw InvalidArgument("skip policy built for " + std::to_string(skip->policy->n_layer()) +
                              " layers, the model has " + std::to_string(hp_.n_layer));
    }
}

void Backend::forward(const int32_t* tokens, int n, float* logits, bool all_logits,
                      const SkipRequest* skip) {
    check(tokens, n, skip);
    if (skip) {
        skip->trace->resize(hp_.n_layer, n);
        if (skip->policy->config().record_ffn) skip->trace->record_ffn(hp_.n_embd);
        if (skip->policy->config().record_channels) skip->trace->record_channels();
    }
    const int start = n_past_;
    try {
        for (int c = 0; c < n; c += max_chunk_) {
            if (c > 0 && cancelled()) throw Cancelled("cancelled during prompt processing");
            const int T = std::min(max_chunk_, n - c);
            float* out = nullptr;
            if (all_logits) {
                out = logits + static_cast<int64_t>(c) * hp_.n_vocab;
            } else if (c + T == n) {
                out = logits;
            }
            run_chunk(tokens + c, T, out, all_logits, skip, c);
            n_past_ += T;
        }
    } catch (...) {
        n_past_ = start;  // the half-filled cache entries are simply forgotten
        throw;
    }
}

void Backend::kv_truncate(int n_keep) {
    if (n_keep < 0 || n_keep > n_past_) {
        throw InvalidArgument("kv_truncate(" + std::to_string(n_keep) + "): only " +
                              std::to_string(n_past_) + " tokens are cached");
    }
    n_past_ = n_keep;
}

}  // namespace ffnskip
