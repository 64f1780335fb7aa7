// ffnskip-native public C++ API: error types and the small value types shared by the loader,
// both backends and the Python bindings. The engine classes live in cpp/src (model.h, generator.h).
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
// Work stopped because cancel() was called or a callback asked to stop.
struct Cancelled : Error {
    using Error::Error;
};
// Another call is using the engine right now: calls that touch its state run one at a time, and
// a second one is refused at once instead of waiting (RuntimeError in Python).
struct Busy : Error {
    using Error::Error;
};

// FFN skipping configuration. Semantics (shared/DESIGN.md, "FFN skipping — exact semantics"):
// dense for prompt tokens, the first `warmup` generated tokens and the cold layers
// (l < cold_start or l >= n_layer - cold_end); otherwise, walking hot layers in order with a
// budget starting at 0: budget > 0 skips the FFN and decrements, else the FFN runs and a gate
// value >= threshold[l] sets budget = span (span == 0: all remaining hot layers).
struct SkipConfig {
    bool enabled = true;
    int warmup = 32;
    int cold_start = 2;
    int cold_end = 2;
    // One value for every layer, or exactly n_layer values. NaN never triggers.
    std::vector<float> threshold = {0.98f};
    int span = 3;
    // Keep every gate value in SkipStats (calibration input).
    bool record_gates = false;
    // Keep every computed FFN output FFN_l(norm(h)) in SkipStats (calibration input; backends
    // that cannot record refuse the config).
    bool record_ffn = false;
    // Optional skip compensation, n_layer x n_embd row-major (empty: none). A skipped FFN block
    // adds row l to the residual stream instead of nothing: the calibration tool sets it to the
    // mean FFN update of the tokens its profile skips (beyond the paper; measured in issue 7).
    std::vector<float> compensation;

    // Throws InvalidArgument naming the problem (negative counts, wrong threshold length,
    // thresholds outside [-1, 1] other than NaN, compensation not n_layer x n_embd or not
    // finite). n_embd = 0 checks only that the compensation has whole rows per layer.
    void validate(int n_layer, int n_embd = 0) const;
    float threshold_for(int layer) const {
        return threshold.size() == 1 ? threshold[0] : threshold[static_cast<size_t>(layer)];
    }
};

// Statistics of the skip policy over the tokens decoded under it.
struct SkipStats {
    int n_layer = 0;
    int64_t tokens = 0;              // generated tokens processed with the policy active
    std::vector<int64_t> evaluated;  // per layer: FFN blocks computed for those tokens
    std::vector<int64_t> skipped;    // per layer: FFN blocks skipped
    std::vector<float> gates;        // tokens x n_layer when recording, NaN where no gate ran
    int n_embd = 0;                  // row length of ffn_out
    std::vector<float> ffn_out;      // tokens x n_layer x n_embd when recording, NaN if skipped

    void reset(int layers);
    int64_t total_skipped() const;
    double skip_ratio() const;  // total skipped / (tokens * n_layer)
};

}  // namespace ffnskip
