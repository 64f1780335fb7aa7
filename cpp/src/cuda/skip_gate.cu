// The skip gate's kernels (see skip_gate.cuh).
#include <algorithm>

#include "cuda/norm_rope.cuh"
#include "cuda/skip_gate.cuh"

namespace ffnskip::cuda {

namespace {

constexpr int kEndThreads = 256;

__global__ void __launch_bounds__(kNormThreads)
    ffn_begin_kernel(const SkipGateView g, int layer, float* __restrict__ h,
                     const float* __restrict__ w, float* __restrict__ hn, int dim, float eps) {
    __shared__ int s_skip;
    __shared__ int s_channel;
    if (threadIdx.x == 0) {
        if (layer == 0) *g.budget = 0;  // budget never carries across tokens
        const bool skip = gate_skip_ffn(g, layer);
        g.skipped[layer] = skip ? 1 : 0;
        g.gate[layer] = __int_as_float(0x7fffffff);  // NaN until a gate value exists
        s_skip = skip ? 1 : 0;
        s_channel = !skip && gate_channel_on(g, layer) ? 1 : 0;
        for (int k = 0; k < 3; ++k) g.drops[3 * layer + k] = s_channel ? 0 : -1;
    }
    __syncthreads();
    if (s_skip) {
        // A skipped FFN adds its compensation row (zeros when the policy has none).
        const float* c = g.comp + static_cast<size_t>(layer) * dim;
        for (int i = threadIdx.x; i < dim; i += blockDim.x) h[i] += c[i];
        return;
    }
    rmsnorm_row(h, w, hn, dim, eps);
    if (!s_channel) return;
    // h~ = h * [|h| >= t_in]: each thread filters the entries it normalized.
    const float t = g.t_in[layer];
    int dropped = 0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        if (!rules::channel_keep(hn[i], t)) {
            hn[i] = 0.0f;
            ++dropped;
        }
    }
    __shared__ int scratch[kWarp];
    dropped = block_sum(dropped, scratch);
    if (threadIdx.x == 0) g.drops[3 * layer] = dropped;
}

__global__ void __launch_bounds__(kEndThreads)
    ffn_end_kernel(const SkipGateView g, int layer, const double* __restrict__ part, int n_part) {
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

// m = silu(gate) * k * up with k = [|silu(gate)| >= t_gate], then m~ = m * [|m| >= t_mid].
__global__ void channel_swiglu_kernel(const SkipGateView g, int layer, const float* gate,
                                      const float* up, float* out, int64_t n) {
    if (g.skipped[layer]) return;
    const bool on = g.drops[3 * layer] >= 0;  // ffn_begin decided (stream order)
    const float t_gate = g.t_gate[layer], t_mid = g.t_mid[layer];
    int dropped_gate = 0, dropped_mid = 0;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const float x = gate[i];
        const float s = x * (1.0f / (1.0f + __expf(-x)));
        float m = s * up[i];
        if (on) {
            if (!rules::channel_keep(s, t_gate)) {
                m = 0.0f;
                ++dropped_gate;
            } else if (!rules::channel_keep(m, t_mid)) {
                m = 0.0f;
                ++dropped_mid;
            }
        }
        out[i] = m;
    }
    if (!on) return;
    __shared__ int scratch[kWarp];
    dropped_gate = block_sum(dropped_gate, scratch);
    dropped_mid = block_sum(dropped_mid, scratch);
    if (threadIdx.x == 0) {
        atomicAdd(g.drops + 3 * layer + 1, dropped_gate);
        atomicAdd(g.drops + 3 * layer + 2, dropped_mid);
    }
}

}  // namespace

void channel_swiglu(const SkipGateView& g, int layer, const float* gate, const float* up,
                    float* out, int64_t n, cudaStream_t stream) {
    if (n <= 0) return;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 4096));
    channel_swiglu_kernel<<<blocks, 256, 0, stream>>>(g, layer, gate, up, out, n);
    FFNSKIP_CUDA_LAUNCH_CHECK();
}

void ffn_begin(const SkipGateView& g, int layer, float* h, const float* w, float* hn, int dim,
               float eps, cudaStream_t stream) {
    ffn_begin_kernel<<<1, kNormThreads, 0, stream>>>(g, layer, h, w, hn, dim, eps);
    FFNSKIP_CUDA_LAUNCH_CHECK();
}

void ffn_end(const SkipGateView& g, int layer, const double* gate_part, int n_part,
             cudaStream_t stream) {
    ffn_end_kernel<<<1, kEndThreads, 0, stream>>>(g, layer, gate_part, n_part);
    FFNSKIP_CUDA_LAUNCH_CHECK();
}

}  // namespace ffnskip::cuda
