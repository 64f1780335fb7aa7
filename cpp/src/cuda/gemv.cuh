// Decode matrix-vector products y = W x for one token, one warp per output row, reading the
// GGUF blocks directly (blocks.cuh) and accumulating in fp32. Decode is bound by weight
// bandwidth, so the epilogues (bias, residual add, the FFN gate's dot products, SwiGLU) are fused
// here rather than costing another pass over activations or another launch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"

namespace ffnskip::cuda {

constexpr int kGemvWarps = 4;  // rows per CTA: small CTAs keep all SMs busy on short matrices
constexpr int kGemvThreads = kGemvWarps * kWarp;

// One matrix of a (possibly fused) GEMV launch. Matrices fused in one launch share the type,
// the input x and the column count (q, k and v projections).
struct GemvJob {
    const uint8_t* w = nullptr;
    size_t stride = 0;  // bytes between rows
    int rows = 0;
    const float* bias = nullptr;  // optional, [rows]
    float* y = nullptr;           // [rows]
};

struct GemvArgs {
    GemvJob job[3];
    int n_jobs = 1;
    int cols = 0;
    const float* x = nullptr;   // [cols], 16-byte aligned
    bool accumulate = false;    // y += W x (residual), instead of y = W x
    const int* skip = nullptr;  // when set and *skip != 0 the kernel returns at once
    // With accumulate: per CTA, (sum h*h', sum h*h, sum h'*h') over its rows, where h is y before
    // and h' after, in double. The FFN gate reduces these in a fixed order (deterministic).
    double* gate_part = nullptr;
};

// CTAs a GEMV over `rows` output rows launches (sizes the gate_part buffer: 3 doubles each).
inline unsigned gemv_ctas(int64_t rows) {
    return ceil_div(rows, kGemvWarps);
}

// Throws Error for a weight type without a kernel (the loader only admits supported types).
void gemv(uint32_t type, const GemvArgs& args, cudaStream_t stream);

// out[r] = silu(Wg[r] x) * (Wu[r] x): the FFN's gate and up projections in one pass. Both
// matrices must have the same type and shape; *skip != 0 makes it return before any load.
void gemv_swiglu(const DevMatrix& gate, const DevMatrix& up, const float* x, float* out,
                 const int* skip, cudaStream_t stream);

}  // namespace ffnskip::cuda
