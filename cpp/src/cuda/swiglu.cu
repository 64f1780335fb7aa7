// SwiGLU kernel (see swiglu.cuh).
#include <algorithm>

#include "cuda/common.cuh"
#include "cuda/swiglu.cuh"

namespace ffnskip::cuda {

namespace {

// out may alias g or u: each element is read and written by the same thread.
__global__ void swiglu_kernel(const float* g, const float* u, float* out, int64_t n,
                              const int32_t* skip) {
    if (skip && *skip) return;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const float x = g[i];
        out[i] = x * (1.0f / (1.0f + __expf(-x))) * u[i];
    }
}

}  // namespace

void swiglu(const float* g, const float* u, float* out, int64_t n, const int32_t* skip,
            cudaStream_t stream) {
    if (n <= 0) return;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 4096));
    swiglu_kernel<<<blocks, 256, 0, stream>>>(g, u, out, n, skip);
    FFNSKIP_CUDA_LAUNCH_CHECK();
}

}  // namespace ffnskip::cuda
