#include "cpu/logprob.h"

#include <cmath>
#include <limits>

#include "cpu/ops_impl.h"

namespace ffnskip::cpu {

double logsumexp(const float* x, int64_t n, int64_t* argmax) {
#if defined(FFNSKIP_X86)
    if (use_avx2()) return avx2::logsumexp(x, n, argmax);
#endif
    *argmax = 0;
    if (n <= 0) return -std::numeric_limits<double>::infinity();
    float m = x[0];
    bool nan = false;
    for (int64_t i = 0; i < n; ++i) {
        nan |= std::isnan(x[i]);
        if (x[i] > m) m = x[i], *argmax = i;
    }
    if (nan) return std::numeric_limits<double>::quiet_NaN();
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(x[i]) - m);
    return m + std::log(s);
}

double kl_divergence(const float* xp, double lse_p, const float* xq, double lse_q, int64_t n) {
#if defined(FFNSKIP_X86)
    if (use_avx2()) return avx2::kl_divergence(xp, lse_p, xq, lse_q, n);
#endif
    double dot = 0, mass = 0;
    for (int64_t i = 0; i < n; ++i) {
        const double p = std::exp(xp[i] - lse_p);
        dot += p * (static_cast<double>(xp[i]) - xq[i]);
        mass += p;
    }
    return dot + (lse_q - lse_p) * mass;
}

}  // namespace ffnskip::cpu
