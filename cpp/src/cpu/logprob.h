// Log-softmax statistics of logit rows, for the quality tools: teacher-forced perplexity, top-1
// agreement and KL between the dense and the skipping model's next-token distributions. With
// vocabularies of 150k entries these cost as much as the forward pass itself when done in numpy
// (float64 temporaries of rows x vocab); here each row is one streaming pass.
#pragma once

#include <cstdint>

namespace ffnskip::cpu {

// log(sum_i exp(x[i])), shifted by the maximum and accumulated in double; *argmax gets the first
// index of the maximum. A NaN anywhere in the row gives NaN.
double logsumexp(const float* x, int64_t n, int64_t* argmax);

// KL(P || Q) = sum_i p_i (log p_i - log q_i) for P = softmax(xp) and Q = softmax(xq), given the
// rows' log-sum-exps: sum_i p_i (xp_i - xq_i) + (lse_q - lse_p) sum_i p_i. Identical rows give
// exactly 0.
double kl_divergence(const float* xp, double lse_p, const float* xq, double lse_q, int64_t n);

#if defined(FFNSKIP_X86)
namespace avx2 {
double logsumexp(const float* x, int64_t n, int64_t* argmax);
double kl_divergence(const float* xp, double lse_p, const float* xq, double lse_q, int64_t n);
}  // namespace avx2
#endif

}  // namespace ffnskip::cpu
