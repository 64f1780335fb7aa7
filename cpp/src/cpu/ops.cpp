#include "cpu/ops.h"

#include <cmath>
#include <cstring>

#include "cpu/kernels.h"

namespace ffnskip::cpu {

void rmsnorm(const float* x, const float* w, float* out, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / n + eps));
    for (int i = 0; i < n; ++i) out[i] = x[i] * inv * w[i];
}

void rope_table(int pos, int n_rot, float base, float* cos_out, float* sin_out) {
    for (int i = 0; i < n_rot / 2; ++i) {
        const double theta = pos * std::pow(static_cast<double>(base), -2.0 * i / n_rot);
        cos_out[i] = static_cast<float>(std::cos(theta));
        sin_out[i] = static_cast<float>(std::sin(theta));
    }
}

void rope_apply(float* x, int n_heads, int head_dim, int n_rot, RopeStyle style, const float* cos_t,
                const float* sin_t) {
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
    for (int64_t i = 0; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void attend(const float* q, const uint16_t* k, const uint16_t* v, int64_t row_stride, int n_pos,
            int head_dim, float scale, float* scores, float* out) {
    float mx = -INFINITY;
    for (int j = 0; j < n_pos; ++j) {
        scores[j] = dot_f16_f32(k + j * row_stride, q, head_dim) * scale;
        mx = scores[j] > mx ? scores[j] : mx;
    }
    double sum = 0;
    for (int j = 0; j < n_pos; ++j) {
        scores[j] = std::exp(scores[j] - mx);
        sum += scores[j];
    }
    const float inv = static_cast<float>(1.0 / sum);
    std::memset(out, 0, sizeof(float) * static_cast<size_t>(head_dim));
    for (int j = 0; j < n_pos; ++j) axpy_f16(scores[j] * inv, v + j * row_stride, out, head_dim);
}

}  // namespace ffnskip::cpu
