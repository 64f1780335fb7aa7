// FFN gate kernels (see ffn_gate.cuh).
#include <algorithm>

#include "cuda/ffn_gate.cuh"
#include "cuda/norm_rope.cuh"

namespace ffnskip::cuda {

namespace {

constexpr int kEndThreads = 256;

__global__ void __launch_bounds__(kNormThreads)
    ffn_begin_kernel(const GateView g, int layer, float* __restrict__ h,
                     const float* __restrict__ w, float* __restrict__ hn, int dim, float eps) {
    __shared__ int s_skip;
    if (threadIdx.x == 0) {
        if (layer == 0) *g.budget = 0;  // budget never carries across tokens
        const bool skip = gate_skip_ffn(g, layer);
        g.skipped[layer] = skip ? 1 : 0;
        g.gate[layer] = __int_as_float(0x7fffffff);  // NaN until a gate value exists
        s_skip = skip ? 1 : 0;
    }
    __syncthreads();
    if (s_skip) {
        // A skipped FFN adds its compensation row (zeros when the policy has none).
        const float* c = g.comp + static_cast<size_t>(layer) * dim;
        for (int i = threadIdx.x; i < dim; i += blockDim.x) h[i] += c[i];
        return;
    }
    rmsnorm_row(h, w, hn, dim, eps);
}

__global__ void __launch_bounds__(kEndThreads)
    ffn_end_kernel(const GateView g, int layer, const double* __restrict__ part, int n_part) {
    if (g.skipped[layer] || g.ctl->mode == kGateDense) return;
    __shared__ double scratch[kWarp];
    double ab = 0, aa = 0, bb = 0;
    for (int i = threadIdx.x; i < n_part; i += blockDim.x) {
        ab += part[3 * i];
        aa += part[3 * i + 1];
        bb += part[3 * i + 2];
    }
    ab = block_sum(ab, scratch);
    aa = block_sum(aa, scratch);
    bb = block_sum(bb, scratch);
    if (threadIdx.x != 0) return;
    const float value = rules::cosine_from_sums(ab, aa, bb);
    g.gate[layer] = value;
    gate_observe(g, layer, value);
}

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

void ffn_begin(const GateView& g, int layer, float* h, const float* w, float* hn, int dim,
               float eps, cudaStream_t stream) {
    ffn_begin_kernel<<<1, kNormThreads, 0, stream>>>(g, layer, h, w, hn, dim, eps);
    FFNSKIP_CUDA_LAUNCH_CHECK();
}

void ffn_end(const GateView& g, int layer, const double* gate_part, int n_part,
             cudaStream_t stream) {
    ffn_end_kernel<<<1, kEndThreads, 0, stream>>>(g, layer, gate_part, n_part);
    FFNSKIP_CUDA_LAUNCH_CHECK();
}

void swiglu(const float* g, const float* u, float* out, int64_t n, const int32_t* skip,
            cudaStream_t stream) {
    if (n <= 0) return;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 4096));
    swiglu_kernel<<<blocks, 256, 0, stream>>>(g, u, out, n, skip);
    FFNSKIP_CUDA_LAUNCH_CHECK();
}

}  // namespace ffnskip::cuda
