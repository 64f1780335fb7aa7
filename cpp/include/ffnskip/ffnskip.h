// ffnskip-native public C++ API: error types and the small value types shared by the loader,
// both backends and the Python bindings. The engine classes live in cpp/src (model.h, engine.h,
// backend.h; the token-by-token loop is python/ffnskip_native/generator.py).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffnskip {

// Every error the engine raises derives from Error; the bindings map each to a Python class of
// the same meaning (ffnskip_native.Error and subclasses).
struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};
// A GGUF file (or vocab / template inside it) is malformed or uses something unsupported.
struct FormatError : Error {
    using Error::Error;
};
// The file could not be opened / read (missing, a directory, permission): OSError in Python.
struct IoError : Error {
    using Error::Error;
};
// A caller passed a bad value (token id out of range, bad config): ValueError in Python.
struct InvalidArgument : Error {
    using Error::Error;
};
// Tokens would not fit in the context window.
struct ContextOverflow : Error {
    using Error::Error;
};
// The requested backend is not compiled in or has no device.
struct BackendUnavailable : Error {
    using Error::Error;
};
// The machine cannot give what a request needs: memory (the message names the bytes), address
// space or threads. ResourceError in Python (a MemoryError).
struct ResourceError : Error {
    using Error::Error;
};
// Work stopped because cancel() was called or a callback asked to stop.
struct Cancelled : Error {
    using Error::Error;
};
// Another call is using the engine right now: calls that touch its state run one at a time, and
// a second one is refused at once instead of waiting (RuntimeError in Python).
struct Busy : Error {
    using Error::Error;
};

// Conditional-FFN configuration: two kinds of gate that compose (shared/DESIGN.md, "FFN skipping
// — exact semantics" and "Conditional FFN — two kinds").
//
// Tokens: prompt tokens and the first `warmup` generated tokens are dense for both kinds, and so
// is every token when `enabled` is false. The remaining ("gated") tokens walk the layers:
//
// Kind 1, block skip: in the hot layers (cold_start <= l < n_layer - cold_end) with a budget
// starting at 0 per token: budget > 0 skips the whole FFN and decrements it; otherwise the FFN
// runs and a gate value g = cos(h, h') >= threshold[l] sets budget = span (span == 0: all
// remaining hot layers). Kind 1 is off when every threshold is NaN.
//
// Kind 2, channel sparsity: in every layer whose FFN runs (cold layers included: kind 2 has only
// its own per-layer thresholds), with t = NaN meaning "this filter is off":
//     h~ = h * [|h| >= t_in[l]]        h = ffn_norm(x), the FFN input
//     g  = act(W_gate h~)              act = SiLU
//     k  = [|g| >= t_gate[l]]          (neurons; dropped ones read no W_up row, no W_down column)
//     m  = g * k * (W_up h~)
//     m~ = m * [|m| >= t_mid[l]]
//     h' = h + W_down m~
// and kind 1's gate value is cos(h, h') of this h'. A layer with all three thresholds NaN (or a
// config with all three lists empty: kind 2 off) computes the dense FFN, bit for bit.
// Either kind alone or both: kind 1 alone leaves t_* empty; kind 2 alone sets threshold NaN.
struct SkipConfig {
    bool enabled = true;
    int warmup = 32;
    int cold_start = 2;
    int cold_end = 2;
    // One value for every layer, or exactly n_layer values. NaN never triggers.
    std::vector<float> threshold = {0.98f};
    int span = 3;
    // Kind 2 thresholds on |h|, |g| and |m|: empty (filter off everywhere), one value for every
    // layer, or exactly n_layer values; each >= 0 (+inf drops everything) or NaN (off there).
    std::vector<float> t_in, t_gate, t_mid;
    // Keep every gate value in SkipStats (calibration input).
    bool record_gates = false;
    // Keep every computed FFN output FFN_l(norm(h)) in SkipStats (calibration input; backends
    // that cannot record refuse the config).
    bool record_ffn = false;
    // Count |h|, |g| and |m| of every FFN that runs for a gated token into per-layer log-scale
    // histograms in SkipStats (calibration input for kind 2's thresholds; CPU backend only).
    bool record_channels = false;
    // Optional skip compensation, n_layer x n_embd row-major (empty: none). A skipped FFN block
    // adds row l to the residual stream instead of nothing: the calibration tool sets it to the
    // mean FFN update of the tokens its profile skips (beyond the paper; measured in issue 7).
    std::vector<float> compensation;

    // Throws InvalidArgument naming the problem (negative counts, wrong threshold length,
    // thresholds outside [-1, 1] other than NaN, channel thresholds of the wrong length or
    // negative, compensation not n_layer x n_embd or not finite). n_embd = 0 checks only that the
    // compensation has whole rows per layer.
    void validate(int n_layer, int n_embd = 0) const;
    float threshold_for(int layer) const {
        return threshold.size() == 1 ? threshold[0] : threshold[static_cast<size_t>(layer)];
    }
};

// Per-layer histograms of |v| for the channel thresholds' quantiles: bin 0 holds |v| <
// 2^kHistMinExp (zeros included), the last bin |v| >= 2^kHistMaxExp (and NaN); in between each
// octave [2^e, 2^(e+1)) is split into kHistPerOctave equal-width bins, so bin edges are exact
// floats and a quantile read from the histogram is within 1/32 of an octave (2.2%) of the exact
// one.
struct ChannelHist {
    static constexpr int kHistMinExp = -24;
    static constexpr int kHistMaxExp = 16;
    static constexpr int kHistPerOctave = 32;
    static constexpr int kBins = 2 + (kHistMaxExp - kHistMinExp) * kHistPerOctave;
    // Lower edge of bin `bin` (0 for bin 0).
    static float lower_edge(int bin);
};

// Statistics of the policy over the tokens decoded under it.
struct SkipStats {
    int n_layer = 0;
    int64_t tokens = 0;              // generated tokens processed with the policy active
    std::vector<int64_t> evaluated;  // per layer: FFN blocks computed for those tokens
    std::vector<int64_t> skipped;    // per layer: FFN blocks skipped
    std::vector<float> gates;        // tokens x n_layer when recording, NaN where no gate ran
    int n_embd = 0;                  // row length of ffn_out
    std::vector<float> ffn_out;      // tokens x n_layer x n_embd when recording, NaN if skipped
    // Per layer: FFN weight bytes those tokens read, counted as read (the weight layout's scale
    // tables included; 0 for a skipped block), and what one dense FFN reads.
    std::vector<int64_t> ffn_bytes_read;
    std::vector<int64_t> ffn_bytes_dense;
    // Kind 2, per layer: FFN evaluations with a channel filter on (channel_runs), and the entries
    // each filter dropped, summed over them (of n_embd for t_in, n_ff for t_gate and t_mid;
    // t_mid counts only neurons that t_gate kept).
    std::vector<int64_t> channel_runs, dropped_in, dropped_gate, dropped_mid;
    // With record_gates: tokens x n_layer x 3 (t_in, t_gate, t_mid) of those counts, -1 where
    // no channel-sparse FFN ran.
    std::vector<int32_t> drops;
    // With record_channels: n_layer x ChannelHist::kBins counts each, of |h|, |g| and |m|.
    std::vector<int64_t> hist_h, hist_g, hist_m;

    void reset(int layers);
    int64_t total_skipped() const;
    double skip_ratio() const;  // total skipped / (tokens * n_layer)
    // 1 - bytes read / (tokens x dense bytes per token); 0 without tokens.
    double ffn_bytes_saved() const;
};

}  // namespace ffnskip
