// Batched matmuls for prompt processing: Y[t, :] (+)= W X[t, :] for many tokens t at once.
// Weights are dequantized to f16 in row slabs (dequant.cuh) and multiplied with cuBLAS
// (f16 inputs, fp32 accumulation and output). Prompt throughput is compute-bound, so the
// tensor cores matter more than the extra pass over the weights.
#pragma once

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"

namespace ffnskip::cuda {

// Owns the cuBLAS handle and the f16 slab the weights are dequantized into.
class Gemm {
  public:
    // slab_elems: f16 capacity of the weight slab (a matrix larger than it goes in row slabs).
    Gemm(cudaStream_t stream, size_t slab_elems);
    ~Gemm();
    Gemm(const Gemm&) = delete;
    Gemm& operator=(const Gemm&) = delete;

    // Y[t * ldy + (r - r0)] = beta * Y[..] + sum_c W[r, c] X16[t * w.cols + c] for t < n_tok and
    // rows r in [r0, r1) (all rows when r1 < 0). beta = 1 adds a residual in place.
    void matmul(const DevMatrix& w, const __half* x16, int n_tok, float* y, int64_t ldy, float beta,
                int64_t r0 = 0, int64_t r1 = -1);

    size_t slab_elems() const { return slab_elems_; }

  private:
    cudaStream_t stream_;
    cublasHandle_t handle_ = nullptr;
    __half* slab_ = nullptr;
    size_t slab_elems_ = 0;
};

// y[i] = f16(x[i]) for i < n.
void to_f16(const float* x, __half* y, int64_t n, cudaStream_t stream);

// y[t, c] += bias[c] for t < n_tok, c < dim.
void add_bias_rows(float* y, const float* bias, int n_tok, int dim, cudaStream_t stream);

}  // namespace ffnskip::cuda
