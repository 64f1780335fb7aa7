// AVX2 log-softmax statistics: exp as 2^x (math_avx2.h, relative error 2e-7) on float lanes,
// summed per chunk of 1024 elements in float and across chunks in double.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/logprob.h"
#include "cpu/math_avx2.h"

namespace ffnskip::cpu::avx2 {

namespace {

constexpr int64_t kChunk = 1024;
constexpr float kLog2e = 1.4426950408889634f;

double hsum_d(__m256 v) {
    alignas(32) float f[8];
    _mm256_store_ps(f, v);
    double s = 0;
    for (float x : f) s += x;
    return s;
}

}  // namespace

double logsumexp(const float* x, int64_t n, int64_t* argmax) {
    *argmax = 0;
    if (n <= 0) return -std::numeric_limits<double>::infinity();
    const int64_t n8 = n & ~int64_t{7};
    __m256 vm = _mm256_set1_ps(x[0]);
    __m256 unord = _mm256_setzero_ps();
    for (int64_t i = 0; i < n8; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        unord = _mm256_or_ps(unord, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        vm = _mm256_max_ps(vm, v);
    }
    float m = reduce_max(vm);
    bool nan = _mm256_movemask_ps(unord) != 0;
    for (int64_t i = n8; i < n; ++i) {
        nan |= std::isnan(x[i]);
        if (x[i] > m) m = x[i];
    }
    if (nan) return std::numeric_limits<double>::quiet_NaN();
    for (int64_t i = 0; i < n; ++i) {  // the first index holding the maximum
        if (x[i] == m) {
            *argmax = i;
            break;
        }
    }
    // x - m is exact for the entries that matter (Sterbenz), so the shift adds no rounding.
    const __m256 vmax = _mm256_set1_ps(m), l2e = _mm256_set1_ps(kLog2e);
    double s = 0;
    for (int64_t c = 0; c < n8; c += kChunk) {
        const int64_t end = std::min(n8, c + kChunk);
        __m256 acc = _mm256_setzero_ps();
        for (int64_t i = c; i < end; i += 8)
            acc = _mm256_add_ps(
                acc, exp2_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax), l2e)));
        s += hsum_d(acc);
    }
    for (int64_t i = n8; i < n; ++i) s += std::exp(static_cast<double>(x[i]) - m);
    return m + std::log(s);
}

double kl_divergence(const float* xp, double lse_p, const float* xq, double lse_q, int64_t n) {
    const int64_t n8 = n & ~int64_t{7};
    // p is off by one common factor (lse_p rounded to float); the sum of p carries the same
    // factor, so KL is scaled by it (relative error ~1e-7 x |lse_p|), not shifted.
    const __m256 vlse = _mm256_set1_ps(static_cast<float>(lse_p)), l2e = _mm256_set1_ps(kLog2e);
    double dot = 0, mass = 0;
    for (int64_t c = 0; c < n8; c += kChunk) {
        const int64_t end = std::min(n8, c + kChunk);
        __m256 vd = _mm256_setzero_ps(), vp = _mm256_setzero_ps();
        for (int64_t i = c; i < end; i += 8) {
            const __m256 a = _mm256_loadu_ps(xp + i), b = _mm256_loadu_ps(xq + i);
            const __m256 p = exp2_ps(_mm256_mul_ps(_mm256_sub_ps(a, vlse), l2e));
            vd = _mm256_fmadd_ps(p, _mm256_sub_ps(a, b), vd);
            vp = _mm256_add_ps(vp, p);
        }
        dot += hsum_d(vd);
        mass += hsum_d(vp);
    }
    for (int64_t i = n8; i < n; ++i) {
        const double p = std::exp(xp[i] - lse_p);
        dot += p * (static_cast<double>(xp[i]) - xq[i]);
        mass += p;
    }
    return dot + (lse_q - lse_p) * mass;
}

}  // namespace ffnskip::cpu::avx2
