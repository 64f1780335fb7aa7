// NEON versions of the per-token ops in ops.cpp (the AArch64 counterpart of ops_avx2.cpp).
#include <cmath>
#include <cstring>

#include "cpu/math_neon.h"
#include "cpu/ops_impl.h"

namespace ffnskip::cpu::neon {

namespace {

// silu(g) * u = g / (1 + 2^(-g log2 e)) * u
inline float32x4_t swiglu4(float32x4_t g, float32x4_t u) {
    const float32x4_t e = exp2_ps(vmulq_n_f32(g, -1.44269504088896341f));
    return vmulq_f32(vdivq_f32(g, vaddq_f32(vdupq_n_f32(1.0f), e)), u);
}

}  // namespace

void rmsnorm(const float* x, const float* w, float* out, int n, float eps) {
    // Sum of squares in double, as the scalar version.
    float64x2_t acc0 = vdupq_n_f64(0.0), acc1 = vdupq_n_f64(0.0);
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t v = vld1q_f32(x + i);
        const float64x2_t lo = vcvt_f64_f32(vget_low_f32(v)), hi = vcvt_high_f64_f32(v);
        acc0 = vfmaq_f64(acc0, lo, lo);
        acc1 = vfmaq_f64(acc1, hi, hi);
    }
    double ss = vaddvq_f64(vaddq_f64(acc0, acc1));
    for (int j = i; j < n; ++j) ss += static_cast<double>(x[j]) * x[j];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / n + eps));
    for (i = 0; i + 4 <= n; i += 4) {
        const float32x4_t v = vmulq_n_f32(vld1q_f32(x + i), inv);
        vst1q_f32(out + i, vmulq_f32(v, vld1q_f32(w + i)));
    }
    for (; i < n; ++i) out[i] = x[i] * inv * w[i];
}

void rope_apply(float* x, int n_heads, int head_dim, int n_rot, RopeStyle style, const float* cos_t,
                const float* sin_t) {
    const int half = n_rot / 2;
    for (int h = 0; h < n_heads; ++h) {
        float* v = x + static_cast<int64_t>(h) * head_dim;
        int i = 0;
        // NORM rotates the pairs (2i, 2i+1), loaded de-interleaved by LD2; NEOX rotates element
        // i with element i + n_rot/2.
        for (; i + 4 <= half; i += 4) {
            const float32x4_t c = vld1q_f32(cos_t + i), s = vld1q_f32(sin_t + i);
            float32x4_t a, b;
            float32x4x2_t pair;
            if (style == RopeStyle::Norm) {
                pair = vld2q_f32(v + 2 * i);
                a = pair.val[0], b = pair.val[1];
            } else {
                a = vld1q_f32(v + i), b = vld1q_f32(v + i + half);
            }
            const float32x4_t ra = vfmsq_f32(vmulq_f32(a, c), b, s);  // a c - b s
            const float32x4_t rb = vfmaq_f32(vmulq_f32(b, c), a, s);  // a s + b c
            if (style == RopeStyle::Norm) {
                const float32x4x2_t out = {{ra, rb}};  // named: vst2q_f32 may be a macro
                vst2q_f32(v + 2 * i, out);
            } else {
                vst1q_f32(v + i, ra);
                vst1q_f32(v + i + half, rb);
            }
        }
        for (; i < half; ++i) {
            const int a = style == RopeStyle::Norm ? 2 * i : i;
            const int b = style == RopeStyle::Norm ? 2 * i + 1 : i + half;
            const float x0 = v[a], x1 = v[b];
            v[a] = x0 * cos_t[i] - x1 * sin_t[i];
            v[b] = x0 * sin_t[i] + x1 * cos_t[i];
        }
    }
}

void swiglu(float* g, const float* u, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(g + i, swiglu4(vld1q_f32(g + i), vld1q_f32(u + i)));
    if (i == n) return;
    // The tail through the same vector code, so every element gets the same result.
    float gt[4] = {}, ut[4] = {};
    const size_t rest = static_cast<size_t>(n - i);
    std::memcpy(gt, g + i, rest * sizeof(float));
    std::memcpy(ut, u + i, rest * sizeof(float));
    vst1q_f32(gt, swiglu4(vld1q_f32(gt), vld1q_f32(ut)));
    std::memcpy(g + i, gt, rest * sizeof(float));
}

}  // namespace ffnskip::cpu::neon
