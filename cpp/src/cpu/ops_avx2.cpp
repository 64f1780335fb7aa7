// AVX2 + FMA versions of the per-token ops in ops.cpp.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/math_avx2.h"
#include "cpu/ops_impl.h"

namespace ffnskip::cpu::avx2 {

namespace {

// silu(g) * u = g / (1 + 2^(-g log2 e)) * u
inline __m256 swiglu8(__m256 g, __m256 u) {
    const __m256 e = exp2_ps(_mm256_mul_ps(g, _mm256_set1_ps(-1.44269504088896341f)));
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

// gelu_tanh(g) * u = g / (1 + 2^(-2 sqrt(2/pi) log2 e (g + 0.044715 g^3))) * u (see ops.cpp)
inline __m256 geglu8(__m256 g, __m256 u) {
    const __m256 g3 = _mm256_mul_ps(_mm256_mul_ps(g, g), g);
    const __m256 z = _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), g3, g);
    const __m256 e = exp2_ps(_mm256_mul_ps(z, _mm256_set1_ps(-2.302208198f)));
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

// v[i] = op8(v[i], u[i]), the tail through the same vector code so that every element gets the
// same result wherever it sits.
template <class Op8>
void gated8(float* g, const float* u, int64_t n, Op8 op8) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(g + i, op8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
    }
    if (i == n) return;
    float gt[8] = {}, ut[8] = {};
    const size_t rest = static_cast<size_t>(n - i);
    std::memcpy(gt, g + i, rest * sizeof(float));
    std::memcpy(ut, u + i, rest * sizeof(float));
    _mm256_storeu_ps(gt, op8(_mm256_loadu_ps(gt), _mm256_loadu_ps(ut)));
    std::memcpy(g + i, gt, rest * sizeof(float));
}

}  // namespace

void rmsnorm(const float* x, const float* w, float* out, int n, float eps) {
    // Sum of squares in double, as the scalar version.
    __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        acc0 = _mm256_fmadd_pd(lo, lo, acc0);
        acc1 = _mm256_fmadd_pd(hi, hi, acc1);
    }
    const __m256d acc = _mm256_add_pd(acc0, acc1);
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(acc), _mm256_extractf128_pd(acc, 1));
    double ss = _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
    for (int j = i; j < n; ++j) ss += static_cast<double>(x[j]) * x[j];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / n + eps));
    const __m256 iv = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), iv);
        _mm256_storeu_ps(out + i, _mm256_mul_ps(v, _mm256_loadu_ps(w + i)));
    }
    for (; i < n; ++i) out[i] = x[i] * inv * w[i];
}

void rope_apply(float* x, int n_heads, int head_dim, int n_rot, RopeStyle style, const float* cos_t,
                const float* sin_t) {
    const int half = n_rot / 2;
    for (int h = 0; h < n_heads; ++h) {
        float* v = x + static_cast<int64_t>(h) * head_dim;
        int i = 0;
        if (style == RopeStyle::Norm) {
            // Pairs (2i, 2i+1): even lanes x0 c - x1 s, odd lanes x1 c + x0 s (fmaddsub).
            const __m256i dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
            for (; i + 4 <= half; i += 4) {
                const __m256 c =
                    _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(cos_t + i)), dup);
                const __m256 s =
                    _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(sin_t + i)), dup);
                const __m256 xv = _mm256_loadu_ps(v + 2 * i);
                const __m256 sw = _mm256_permute_ps(xv, _MM_SHUFFLE(2, 3, 0, 1));
                _mm256_storeu_ps(v + 2 * i, _mm256_fmaddsub_ps(xv, c, _mm256_mul_ps(sw, s)));
            }
            for (; i < half; ++i) {
                const float x0 = v[2 * i], x1 = v[2 * i + 1];
                v[2 * i] = x0 * cos_t[i] - x1 * sin_t[i];
                v[2 * i + 1] = x0 * sin_t[i] + x1 * cos_t[i];
            }
        } else {
            for (; i + 8 <= half; i += 8) {
                const __m256 c = _mm256_loadu_ps(cos_t + i), s = _mm256_loadu_ps(sin_t + i);
                const __m256 a = _mm256_loadu_ps(v + i), b = _mm256_loadu_ps(v + i + half);
                _mm256_storeu_ps(v + i, _mm256_fmsub_ps(a, c, _mm256_mul_ps(b, s)));
                _mm256_storeu_ps(v + i + half, _mm256_fmadd_ps(a, s, _mm256_mul_ps(b, c)));
            }
            for (; i < half; ++i) {
                const float x0 = v[i], x1 = v[i + half];
                v[i] = x0 * cos_t[i] - x1 * sin_t[i];
                v[i + half] = x0 * sin_t[i] + x1 * cos_t[i];
            }
        }
    }
}

void swiglu(float* g, const float* u, int64_t n) {
    gated8(g, u, n, [](__m256 a, __m256 b) { return swiglu8(a, b); });
}

void geglu(float* g, const float* u, int64_t n) {
    gated8(g, u, n, [](__m256 a, __m256 b) { return geglu8(a, b); });
}

}  // namespace ffnskip::cpu::avx2
