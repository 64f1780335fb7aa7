#include "cpu/ops.h"

#include <cmath>

#include "cpu/ops_impl.h"

namespace ffnskip::cpu {

void rmsnorm(const float* x, const float* w, float* out, int n, float eps) {
#if defined(FFNSKIP_X86)
    if (use_avx2()) return avx2::rmsnorm(x, w, out, n, eps);
#endif
#if defined(FFNSKIP_NEON)
    if (use_neon()) return neon::rmsnorm(x, w, out, n, eps);
#endif
    double ss = 0;
    for (int i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / n + eps));
    for (int i = 0; i < n; ++i) out[i] = x[i] * inv * w[i];
}

void rope_table(int pos, int n_rot, float base, float* cos_out, float* sin_out, float scale,
                const float* freq_factors, float magnitude) {
    for (int i = 0; i < n_rot / 2; ++i) {
        double theta = pos * std::pow(static_cast<double>(base), -2.0 * i / n_rot) * scale;
        if (freq_factors) theta /= freq_factors[i];
        cos_out[i] = static_cast<float>(magnitude * std::cos(theta));
        sin_out[i] = static_cast<float>(magnitude * std::sin(theta));
    }
}

void rope_apply(float* x, int n_heads, int head_dim, int n_rot, RopeStyle style, const float* cos_t,
                const float* sin_t) {
#if defined(FFNSKIP_X86)
    if (use_avx2()) return avx2::rope_apply(x, n_heads, head_dim, n_rot, style, cos_t, sin_t);
#endif
#if defined(FFNSKIP_NEON)
    if (use_neon()) return neon::rope_apply(x, n_heads, head_dim, n_rot, style, cos_t, sin_t);
#endif
    const int half = n_rot / 2;
    for (int h = 0; h < n_heads; ++h) {
        float* v = x + static_cast<int64_t>(h) * head_dim;
        for (int i = 0; i < half; ++i) {
            // NORM rotates adjacent pairs; NEOX rotates element i with element i + n_rot/2.
            const int a = style == RopeStyle::Norm ? 2 * i : i;
            const int b = style == RopeStyle::Norm ? 2 * i + 1 : i + half;
            const float x0 = v[a], x1 = v[b];
            v[a] = x0 * cos_t[i] - x1 * sin_t[i];
            v[b] = x0 * sin_t[i] + x1 * cos_t[i];
        }
    }
}

void swiglu(float* g, const float* u, int64_t n) {
#if defined(FFNSKIP_X86)
    if (use_avx2()) return avx2::swiglu(g, u, n);
#endif
#if defined(FFNSKIP_NEON)
    if (use_neon()) return neon::swiglu(g, u, n);
#endif
    for (int64_t i = 0; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

// gelu_tanh(x) = x/2 (1 + tanh(z)) = x sigmoid(2z), z = sqrt(2/pi) (x + 0.044715 x^3): the
// sigmoid form has the shape of silu's and cannot overflow to inf/inf.
void geglu(float* g, const float* u, int64_t n) {
#if defined(FFNSKIP_X86)
    if (use_avx2()) return avx2::geglu(g, u, n);
#endif
    constexpr float k2c = 1.5957691216057308f;  // 2 sqrt(2/pi)
    for (int64_t i = 0; i < n; ++i) {
        const float x = g[i];
        g[i] = x / (1.0f + std::exp(-k2c * (x + 0.044715f * x * x * x))) * u[i];
    }
}

void gated_act(FfnAct act, float* g, const float* u, int64_t n) {
    if (act == FfnAct::GeluTanh) return geglu(g, u, n);
    swiglu(g, u, n);
}

// Compiled for the baseline ISA, vectorized by the compiler (and bound by memory anyway).
void add_inplace(float* x, const float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

}  // namespace ffnskip::cpu
