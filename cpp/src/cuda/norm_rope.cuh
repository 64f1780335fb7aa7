// RMSNorm and rotary position embedding (+ the KV-cache write that follows RoPE).
//   rmsnorm(x) = x / sqrt(mean(x^2) + eps) * w
//   RoPE, pair i < n_rot/2 of every head rotated by pos * base^(-2i/n_rot):
//     NORM style: (x[2i], x[2i+1]);   NEOX style: (x[i], x[i + n_rot/2])
// Positions come either from device memory (the decode graph) or from the host (prompt chunks).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"

namespace ffnskip::cuda {

constexpr int kNormThreads = 256;

// One block normalises one row; every thread of the block must call it.
__device__ __forceinline__ void rmsnorm_row(const float* __restrict__ x,
                                            const float* __restrict__ w, float* __restrict__ y,
                                            int dim, float eps) {
    __shared__ float scratch[kWarp];
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += x[i] * x[i];
    ss = block_sum(ss, scratch);
    const float inv = rsqrtf(ss / static_cast<float>(dim) + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) y[i] = x[i] * inv * w[i];
}

// y[t, :] = rmsnorm(x[t, :]) * w for t < n_rows (rows dim apart).
void rmsnorm(const float* x, const float* w, float* y, int n_rows, int dim, float eps,
             cudaStream_t stream);

struct RopeArgs {
    float* q = nullptr;         // [n_tok, n_head * head_dim], rotated in place
    const float* k = nullptr;   // [n_tok, n_head_kv * head_dim]
    const float* v = nullptr;   // [n_tok, n_head_kv * head_dim]
    __half* k_cache = nullptr;  // this layer's [n_ctx, n_head_kv * head_dim]
    __half* v_cache = nullptr;
    int n_tok = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_rot = 0;
    bool neox = false;
    float base = 10000.0f;
    float scale = 1.0f;                // linear rope scaling: angles times 1 / factor
    const int32_t* pos_dev = nullptr;  // when set, the first token's position is *pos_dev
    int pos0 = 0;                      // ... otherwise pos0; token t sits at position first + t
};

// Rotates q and k of every token and stores k (rotated) and v in the f16 cache.
void rope_store_kv(const RopeArgs& a, cudaStream_t stream);

}  // namespace ffnskip::cuda
