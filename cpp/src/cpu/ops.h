// Small per-token CPU ops of the forward pass (vector-sized work; the matmuls are in kernels.h,
// attention in attention.h). AVX2 versions are picked at the level the kernels run at.
#pragma once

#include <cstdint>
#include <vector>

#include "model.h"

namespace ffnskip::cpu {

// out = x / sqrt(mean(x^2) + eps) * w
void rmsnorm(const float* x, const float* w, float* out, int n, float eps);

// magnitude * cos/sin of pos * base^(-2i/n_rot) * scale / freq_factors[i] for i < n_rot/2
// (freq_factors null: 1), computed in double for long contexts. scale, freq_factors and magnitude
// are the rope scaling of Hparams (linear: scale = 1/factor; llama3: per-pair divisors;
// rope_table_magnitude).
void rope_table(int pos, int n_rot, float base, float* cos_out, float* sin_out, float scale = 1.0f,
                const float* freq_factors = nullptr, float magnitude = 1.0f);
// Rotates the first n_rot dims of each of n_heads heads (stride head_dim) in place.
void rope_apply(float* x, int n_heads, int head_dim, int n_rot, RopeStyle style, const float* cos_t,
                const float* sin_t);

// g[i] = silu(g[i]) * u[i]. Element-wise with the same result for an element wherever it sits
// in the array (the dense and the skip path batch different rows).
void swiglu(float* g, const float* u, int64_t n);
// g[i] = gelu(g[i]) * u[i], GELU in its tanh approximation (GeGLU); element-wise as swiglu.
void geglu(float* g, const float* u, int64_t n);
// The gated activation the model's FFN uses (Hparams::ffn_act): swiglu or geglu.
void gated_act(FfnAct act, float* g, const float* u, int64_t n);

// x[i] += y[i]
void add_inplace(float* x, const float* y, int64_t n);

}  // namespace ffnskip::cpu
