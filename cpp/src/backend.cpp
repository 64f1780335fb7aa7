#include "backend.h"

#include <algorithm>
#include <string>

namespace ffnskip {

Backend::Backend(std::shared_ptr<const Model> model, int n_ctx, int max_chunk, int n_slots)
    : model_(std::move(model)),
      hp_(model_->hparams().for_context(n_ctx)),
      n_ctx_(n_ctx),
      max_chunk_(max_chunk) {
    if (n_ctx_ < 1) throw InvalidArgument("n_ctx must be >= 1, got " + std::to_string(n_ctx_));
    if (n_slots < 1) throw InvalidArgument("n_slots must be >= 1, got " + std::to_string(n_slots));
    slot_past_.assign(static_cast<size_t>(n_slots), 0);
}

void Backend::check_tokens(const int32_t* tokens, int n) const {
    for (int i = 0; i < n; ++i) {
        if (tokens[i] < 0 || tokens[i] >= hp_.n_vocab) {
            throw InvalidArgument("token id " + std::to_string(tokens[i]) +
                                  " is out of range [0, " + std::to_string(hp_.n_vocab) + ")");
        }
    }
}

void Backend::check(const int32_t* tokens, int n, const SkipRequest* skip) const {
    if (n <= 0) throw InvalidArgument("forward: no tokens");
    if (static_cast<int64_t>(n_past()) + n > n_ctx_) {
        throw ContextOverflow("context overflow: " + std::to_string(n_past()) + " cached + " +
                              std::to_string(n) + " new tokens > n_ctx " + std::to_string(n_ctx_));
    }
    check_tokens(tokens, n);
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
    const int start = n_past();
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
            slot_past_[0] += T;
        }
    } catch (...) {
        slot_past_[0] = start;  // the half-filled cache entries are simply forgotten
        throw;
    }
}

void Backend::kv_truncate(int n_keep) {
    slot_truncate(0, n_keep);
}

int Backend::slot_past(int slot) const {
    if (slot < 0 || slot >= n_slots()) {
        throw InvalidArgument("slot " + std::to_string(slot) + " is out of range [0, " +
                              std::to_string(n_slots()) + ")");
    }
    return slot_past_[static_cast<size_t>(slot)];
}

void Backend::slot_truncate(int slot, int n_keep) {
    const int past = slot_past(slot);
    if (n_keep < 0 || n_keep > past) {
        throw InvalidArgument("kv_truncate(" + std::to_string(n_keep) + "): only " +
                              std::to_string(past) + " tokens are cached");
    }
    slot_past_[static_cast<size_t>(slot)] = n_keep;
}

void Backend::forward_batch(const BatchSeq* seqs, int n_seqs, const SkipPolicy* policy,
                            SkipTrace* trace) {
    if (n_seqs <= 0) throw InvalidArgument("forward_batch: no sequences");
    std::vector<uint8_t> used(slot_past_.size(), 0);
    int64_t rows = 0;
    for (int i = 0; i < n_seqs; ++i) {
        const BatchSeq& s = seqs[i];
        const int past = slot_past(s.slot);
        if (used[static_cast<size_t>(s.slot)]++) {
            throw InvalidArgument("forward_batch: slot " + std::to_string(s.slot) +
                                  " appears twice in one step");
        }
        if (s.n <= 0 || s.tokens == nullptr) throw InvalidArgument("forward_batch: no tokens");
        if (static_cast<int64_t>(past) + s.n > n_ctx_) {
            throw ContextOverflow("context overflow in slot " + std::to_string(s.slot) + ": " +
                                  std::to_string(past) + " cached + " + std::to_string(s.n) +
                                  " new tokens > n_ctx " + std::to_string(n_ctx_));
        }
        check_tokens(s.tokens, s.n);
        rows += s.n;
    }
    if (rows > max_chunk_) {
        throw InvalidArgument("forward_batch: " + std::to_string(rows) + " rows > the step limit " +
                              std::to_string(max_chunk_));
    }
    if (policy) {
        if (!trace) throw InvalidArgument("forward_batch: a skip policy needs a trace");
        if (policy->n_layer() != hp_.n_layer) {
            throw InvalidArgument("skip policy built for " + std::to_string(policy->n_layer()) +
                                  " layers, the model has " + std::to_string(hp_.n_layer));
        }
        trace->resize(hp_.n_layer, static_cast<int>(rows));
        if (policy->config().record_ffn) trace->record_ffn(hp_.n_embd);
    }
    // A step writes only past each slot's fill level, so a failed step leaves the slots as they
    // were: their levels advance only after it returns.
    run_batch(seqs, n_seqs, policy, trace);
    for (int i = 0; i < n_seqs; ++i) slot_past_[static_cast<size_t>(seqs[i].slot)] += seqs[i].n;
}

void Backend::run_batch(const BatchSeq*, int, const SkipPolicy*, SkipTrace*) {
    throw BackendUnavailable(std::string("the ") + name() +
                             " backend runs one sequence at a time (no batched step)");
}

}  // namespace ffnskip
