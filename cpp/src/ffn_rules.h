// The conditional-FFN rules of shared/DESIGN.md ("FFN skipping — exact semantics" and
// "Conditional FFN — two kinds"), each written once. Both compilers build this header: the CPU
// backend reaches the rules through SkipPolicy (ffn_skip.h), the CUDA gate kernels
// (cuda/skip_gate.cu) call them on the device. A rule changed here changes in both backends.
#pragma once

#include <math.h>

#include <cstdint>

#if defined(__CUDACC__)
#define FFNSKIP_HD __host__ __device__ __forceinline__
#else
#define FFNSKIP_HD inline
#endif

namespace ffnskip::rules {

// ---- both kinds --------------------------------------------------------------------------------
// Whether a token falls under the policy: it is a generated token (gen_index >= 0; prompt tokens
// are negative) past the first `warmup` ones, and the policy is enabled. Other tokens are dense.
FFNSKIP_HD bool token_past_warmup(bool enabled, int64_t gen_index, int warmup) {
    return enabled && gen_index >= 0 && gen_index >= warmup;
}

// ---- kind 1: block skip ------------------------------------------------------------------------
// Before layer l's FFN, with the token's budget (0 at layer 0; it never carries across tokens):
// a token past warm-up in a hot layer with budget left skips the FFN and spends one unit.
FFNSKIP_HD bool block_skip(bool past_warmup, bool hot, int32_t& budget) {
    if (!past_warmup || !hot || budget <= 0) return false;
    budget -= 1;
    return true;
}

// After layer l's FFN ran with gate value g = cos(h, h'): reaching the layer's threshold grants
// the budget. NaN thresholds (and NaN gate values) compare false: they never trigger.
FFNSKIP_HD void block_observe(bool past_warmup, bool hot, float g, float threshold, int32_t grant,
                              int32_t& budget) {
    if (!past_warmup || !hot) return;
    if (g >= threshold) budget = grant;
}

// The budget layer l grants: `span`, or for span == 0 every hot layer after l (hot layers end
// at hot_end).
FFNSKIP_HD int32_t block_grant(int span, int layer, int hot_end) {
    if (span > 0) return span;
    const int rest = hot_end - 1 - layer;
    return rest > 0 ? rest : 0;
}

// cos(a, b) from the sums ab = a.b, aa = a.a, bb = b.b (accumulated in double by the caller):
// 1 when both vectors are zero, 0 when only one is.
FFNSKIP_HD float cosine_from_sums(double ab, double aa, double bb) {
    if (aa == 0 && bb == 0) return 1.0f;
    if (aa == 0 || bb == 0) return 0.0f;
    return static_cast<float>(ab / sqrt(aa * bb));
}

// ---- kind 2: channel sparsity ------------------------------------------------------------------
// Whether entry v of a filtered vector (h, g or m) survives the layer's threshold t:
// |v| >= t, and always when the filter is off (t is NaN). Written as !(|v| < t) so that a NaN
// entry (only a broken model makes one) is kept and shows up downstream instead of vanishing.
FFNSKIP_HD bool channel_keep(float v, float t) {
    return !(fabsf(v) < t);
}

}  // namespace ffnskip::rules
