// Batched matmul through cuBLAS (see gemm.cuh).
#include <algorithm>
#include <string>

#include "cuda/dequant.cuh"
#include "cuda/gemm.cuh"

namespace ffnskip::cuda {

namespace {

const char* cublas_status_name(cublasStatus_t s) {
    switch (s) {
        case CUBLAS_STATUS_SUCCESS:
            return "CUBLAS_STATUS_SUCCESS";
        case CUBLAS_STATUS_NOT_INITIALIZED:
            return "CUBLAS_STATUS_NOT_INITIALIZED";
        case CUBLAS_STATUS_ALLOC_FAILED:
            return "CUBLAS_STATUS_ALLOC_FAILED";
        case CUBLAS_STATUS_INVALID_VALUE:
            return "CUBLAS_STATUS_INVALID_VALUE";
        case CUBLAS_STATUS_ARCH_MISMATCH:
            return "CUBLAS_STATUS_ARCH_MISMATCH";
        case CUBLAS_STATUS_MAPPING_ERROR:
            return "CUBLAS_STATUS_MAPPING_ERROR";
        case CUBLAS_STATUS_EXECUTION_FAILED:
            return "CUBLAS_STATUS_EXECUTION_FAILED";
        case CUBLAS_STATUS_INTERNAL_ERROR:
            return "CUBLAS_STATUS_INTERNAL_ERROR";
        case CUBLAS_STATUS_NOT_SUPPORTED:
            return "CUBLAS_STATUS_NOT_SUPPORTED";
        default:
            return "cuBLAS error";
    }
}

void check_cublas(cublasStatus_t s, const char* call) {
    if (s == CUBLAS_STATUS_ALLOC_FAILED || s == CUBLAS_STATUS_NOT_INITIALIZED) {
        throw BackendUnavailable(std::string("CUDA backend: ") + call +
                                 " failed: " + cublas_status_name(s));
    }
    if (s != CUBLAS_STATUS_SUCCESS) {
        throw Error(std::string("cuBLAS error in ") + call + ": " + cublas_status_name(s));
    }
}

__global__ void to_f16_kernel(const float* __restrict__ x, __half* __restrict__ y, int64_t n) {
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        y[i] = __float2half_rn(x[i]);
    }
}

__global__ void add_bias_kernel(float* __restrict__ y, const float* __restrict__ bias, int64_t n,
                                int dim) {
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        y[i] += bias[i % dim];
    }
}

unsigned grid_for(int64_t n, int threads) {
    return static_cast<unsigned>(std::min<int64_t>((n + threads - 1) / threads, 4096));
}

}  // namespace

Gemm::Gemm(cudaStream_t stream, size_t slab_elems) : stream_(stream), slab_elems_(slab_elems) {
    check_cublas(cublasCreate(&handle_), "cublasCreate");
    try {
        check_cublas(cublasSetStream(handle_, stream_), "cublasSetStream");
        // Tensor-core kernels accumulate in fp32 with CUBLAS_COMPUTE_32F; no reduced-precision
        // reductions, so results stay within the stated tolerance of the CPU backend.
        check_cublas(cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
        const cudaError_t err = cudaMalloc(&slab_, slab_elems_ * sizeof(__half));
        if (err != cudaSuccess) {
            throw BackendUnavailable(
                "CUDA backend: cannot allocate the " +
                std::to_string(slab_elems_ * sizeof(__half) >> 20) +
                " MiB f16 weight slab for prompt GEMMs: " + cudaGetErrorString(err));
        }
    } catch (...) {
        cublasDestroy(handle_);
        throw;
    }
}

Gemm::~Gemm() {
    cudaFree(slab_);
    cublasDestroy(handle_);
}

void Gemm::matmul(const DevMatrix& w, const __half* x16, int n_tok, float* y, int64_t ldy,
                  float beta, int64_t r0, int64_t r1) {
    if (r1 < 0) r1 = w.rows;
    const int64_t slab_rows = std::max<int64_t>(1, static_cast<int64_t>(slab_elems_) / w.cols);
    const float alpha = 1.0f;
    for (int64_t a = r0; a < r1; a += slab_rows) {
        const int64_t b = std::min(r1, a + slab_rows);
        dequant_rows_f16(w, a, b, slab_, stream_);
        // Column-major view: the slab is W^T (cols x rows, ld cols), X is cols x n_tok (ld cols),
        // Y is rows x n_tok (ld ldy). Y = op_T(slab) * X.
        check_cublas(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(b - a), n_tok,
                                  static_cast<int>(w.cols), &alpha, slab_, CUDA_R_16F,
                                  static_cast<int>(w.cols), x16, CUDA_R_16F,
                                  static_cast<int>(w.cols), &beta, y + (a - r0), CUDA_R_32F,
                                  static_cast<int>(ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     "cublasGemmEx");
    }
}

void to_f16(const float* x, __half* y, int64_t n, cudaStream_t stream) {
    if (n <= 0) return;
    to_f16_kernel<<<grid_for(n, 256), 256, 0, stream>>>(x, y, n);
    FFNSKIP_CUDA_LAUNCH_CHECK();
}

void add_bias_rows(float* y, const float* bias, int n_tok, int dim, cudaStream_t stream) {
    const int64_t n = static_cast<int64_t>(n_tok) * dim;
    if (n <= 0) return;
    add_bias_kernel<<<grid_for(n, 256), 256, 0, stream>>>(y, bias, n, dim);
    FFNSKIP_CUDA_LAUNCH_CHECK();
}

}  // namespace ffnskip::cuda
