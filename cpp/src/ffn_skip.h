// The FFN skip policy (shared/DESIGN.md, "FFN skipping — exact semantics"): a validated config
// turned into per-layer tables. The rules themselves live in ffn_rules.h, which the CUDA gate
// kernels compile too; the CPU backend reaches them through skip_ffn/observe_gate, the CUDA
// backend uploads the tables exported here.
#pragma once

#include <cmath>
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

    // Kind 2: the layer's thresholds on |h|, |g| and |m| (NaN: that filter is off there).
    struct ChannelThresholds {
        float in, gate, mid;
        bool on() const { return !std::isnan(in) || !std::isnan(gate) || !std::isnan(mid); }
    };
    ChannelThresholds channel(int layer) const { return chan_[static_cast<size_t>(layer)]; }
    // Whether some layer has a channel filter on.
    bool channel_any() const { return channel_any_; }

    // State of one token's walk through the layers. Budget never carries across tokens.
    struct TokenState {
        bool past_warmup = false;  // the policy applies to this token (enabled and past warm-up)
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
    std::vector<ChannelThresholds> chan_;
    bool channel_any_ = false;
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
    // Per (token, layer): FFN weight bytes read, -1 for "the dense FFN's" (what a backend without
    // channel sparsity leaves; a skipped block counts 0 whatever it says), and kind 2's counts:
    // 1 where a channel filter ran, and the entries each filter dropped (SkipStats).
    std::vector<int64_t> ffn_bytes;
    std::vector<uint8_t> channel_run;
    std::vector<int32_t> dropped_in, dropped_gate, dropped_mid;
    // With SkipConfig::record_channels: n_layer x ChannelHist::kBins counts of this call's |h|,
    // |g| and |m| (record_channels() sizes and zeroes them; resize() clears them).
    std::vector<int64_t> hist_h, hist_g, hist_m;
    void resize(int layers, int tokens = 1);
    void record_ffn(int embd);
    void record_channels();
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

// Fold every token of a trace into stats (gate values and FFN outputs only when asked). Entries of
// trace.ffn_bytes that are -1 count as stats.ffn_bytes_dense of their layer.
void accumulate(SkipStats& stats, const SkipTrace& trace, bool record_gates, bool record_ffn);

// The histogram bin of |v| (ChannelHist): exponent and top mantissa bits of the float, no log.
inline int channel_hist_bin(float v) {
    uint32_t bits;
    static_assert(sizeof bits == sizeof v, "float is 32 bits");
    __builtin_memcpy(&bits, &v, sizeof bits);
    bits &= 0x7fffffffu;
    const int e = static_cast<int>(bits >> 23) - 127;
    if (e < ChannelHist::kHistMinExp) return 0;
    if (e >= ChannelHist::kHistMaxExp) return ChannelHist::kBins - 1;  // inf and NaN too
    constexpr int kShift = 23 - 5;  // 2^5 = kHistPerOctave bins per octave
    static_assert(1 << (23 - kShift) == ChannelHist::kHistPerOctave, "bins per octave");
    return 1 + (e - ChannelHist::kHistMinExp) * ChannelHist::kHistPerOctave +
           static_cast<int>((bits >> kShift) & (ChannelHist::kHistPerOctave - 1));
}

}  // namespace ffnskip
