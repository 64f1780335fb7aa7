// The FFN skip policy (shared/DESIGN.md, "FFN skipping — exact semantics"): a validated config
// turned into per-layer tables. The rules themselves live in ffn_rules.h, which the CUDA gate
// kernels compile too; the CPU backend reaches them through skip_ffn/observe_gate, the CUDA
// backend uploads the tables exported here.
#pragma once

#include <cstdint>
#include <vector>

#include "ffn_rules.h"
#include "ffnskip/ffnskip.h"

namespace ffnskip {

class SkipPolicy {
  public:
    // Validates cfg against n_layer and n_embd (InvalidArgument on a bad config).
    SkipPolicy(SkipConfig cfg, int n_layer, int n_embd);

    const SkipConfig& config() const { return cfg_; }
    int n_layer() const { return n_layer_; }
    bool is_hot(int layer) const { return hot_[static_cast<size_t>(layer)] != 0; }
    float threshold(int layer) const { return thr_[static_cast<size_t>(layer)]; }
    // Budget granted when layer `layer`'s gate fires: span, or (span == 0) every hot layer after
    // it.
    int grant(int layer) const { return grant_[static_cast<size_t>(layer)]; }
    // The n_embd values a skipped FFN of `layer` adds to the residual stream, or null (none).
    const float* compensation(int layer) const {
        if (n_embd_ == 0) return nullptr;
        return cfg_.compensation.data() + static_cast<size_t>(layer) * static_cast<size_t>(n_embd_);
    }
    // Device-friendly copies of the per-layer tables (1/0, thresholds with NaN, grants).
    const std::vector<uint8_t>& hot_table() const { return hot_; }
    const std::vector<float>& threshold_table() const { return thr_; }
    const std::vector<int32_t>& grant_table() const { return grant_; }

    // State of one token's walk through the layers. Budget never carries across tokens.
    struct TokenState {
        bool gated = false;  // the policy applies to this token (enabled and past warm-up)
        int32_t budget = 0;
    };
    // gen_index: 0 for the first generated token; negative for prompt tokens (always dense).
    TokenState begin_token(int64_t gen_index) const;
    // Before layer `layer`'s FFN: true means skip it (and the budget is consumed).
    bool skip_ffn(TokenState& s, int layer) const;
    // After layer `layer`'s FFN ran with gate value g = cos(h, h').
    void observe_gate(TokenState& s, int layer, float g) const;

  private:
    SkipConfig cfg_;
    int n_layer_;
    int n_embd_ = 0;  // compensation row length (0: no compensation)
    std::vector<uint8_t> hot_;
    std::vector<float> thr_;
    std::vector<int32_t> grant_;
};

// What a backend reports for the tokens decoded under a policy: per token and layer
// (index token * n_layer + layer), whether the FFN was skipped, and the gate value where the FFN
// ran (NaN where it was skipped).
struct SkipTrace {
    int n_layer = 0;
    int n_tokens = 0;
    std::vector<uint8_t> skipped;
    std::vector<float> gate;
    // With SkipConfig::record_ffn: FFN outputs, (token * n_layer + layer) * n_embd, NaN rows
    // where skipped. resize() clears them; record_ffn() sizes them for the current tokens.
    int n_embd = 0;
    std::vector<float> ffn_out;
    void resize(int layers, int tokens = 1);
    void record_ffn(int embd);
};

// Passed to Backend::forward for generated tokens: token i of the call is generated token
// gen_index + i. Backends without batched_skip() accept exactly one token per request.
struct SkipRequest {
    const SkipPolicy* policy = nullptr;
    int64_t gen_index = 0;
    SkipTrace* trace = nullptr;  // filled by the backend
};

// cos(a, b) accumulated in double; 1 when both are zero vectors, 0 when only one is.
float cosine_similarity(const float* a, const float* b, int64_t n);

// Fold every token of a trace into stats (gate values and FFN outputs only when asked).
void accumulate(SkipStats& stats, const SkipTrace& trace, bool record_gates, bool record_ffn);

}  // namespace ffnskip
