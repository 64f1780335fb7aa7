// Decode GEMV kernels (see gemv.cuh). A warp owns one output row: its lanes walk the row's
// blocks so that neighbouring lanes read neighbouring bytes, decode 8 weights each in registers
// and multiply with x (read through the read-only cache, shared by all warps of the SM).
#include <string>

#include "cuda/blocks.cuh"
#include "cuda/gemv.cuh"

namespace ffnskip::cuda {

namespace {

// Partial dot product of one row with x for this lane; warp_sum gives the full value.
template <uint32_t T>
__device__ __forceinline__ float row_dot_lane(const uint8_t* __restrict__ row,
                                              const float* __restrict__ x, int cols, int lane) {
    using B = Blk<T>;
    constexpr int kBlocksPerIter = kWarp / B::LPB;
    const int nb = cols / B::QK;
    const int part = lane % B::LPB;
    const int o0 = B::off0(part), o1 = B::off1(part);
    float acc = 0.0f;
#pragma unroll 4
    for (int b = lane / B::LPB; b < nb; b += kBlocksPerIter) {
        float v[8];
        B::decode(row + static_cast<size_t>(b) * B::BYTES, part, v);
        const float* xb = x + static_cast<size_t>(b) * B::QK;
        const float4 a = __ldg(reinterpret_cast<const float4*>(xb + o0));
        const float4 c = __ldg(reinterpret_cast<const float4*>(xb + o1));
        acc += v[0] * a.x + v[1] * a.y + v[2] * a.z + v[3] * a.w;
        acc += v[4] * c.x + v[5] * c.y + v[6] * c.z + v[7] * c.w;
    }
    if constexpr (kPlainType<T>) {
        // Plain rows need not be a multiple of 8 long; the few trailing values go one by one.
        for (int i = nb * B::QK + lane; i < cols; i += kWarp)
            acc += B::scalar(row, i) * __ldg(x + i);
    }
    return acc;
}

template <uint32_t T>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(const GemvArgs a) {
    if (a.skip && *a.skip) return;
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
    int r = static_cast<int>(blockIdx.x) * kGemvWarps + warp;
    int j = 0;
    while (j + 1 < a.n_jobs && r >= a.job[j].rows) {
        r -= a.job[j].rows;
        ++j;
    }
    const GemvJob& job = a.job[j];
    double p_hh1 = 0, p_hh = 0, p_h1h1 = 0;
    if (r < job.rows) {
        float d = warp_sum(
            row_dot_lane<T>(job.w + static_cast<size_t>(r) * job.stride, a.x, a.cols, lane));
        if (lane == 0) {
            if (job.bias) d += job.bias[r];
            if (a.accumulate) {
                const float h = job.y[r];
                const float h1 = h + d;
                job.y[r] = h1;
                p_hh1 = static_cast<double>(h) * h1;
                p_hh = static_cast<double>(h) * h;
                p_h1h1 = static_cast<double>(h1) * h1;
            } else {
                job.y[r] = d;
            }
        }
    }
    if (a.gate_part) {
        __shared__ double s[kGemvWarps][3];
        if (lane == 0) {
            s[warp][0] = p_hh1;
            s[warp][1] = p_hh;
            s[warp][2] = p_h1h1;
        }
        __syncthreads();
        if (threadIdx.x < 3) {
            double t = 0;
            for (int w = 0; w < kGemvWarps; ++w) t += s[w][threadIdx.x];
            a.gate_part[3 * blockIdx.x + threadIdx.x] = t;
        }
    }
}

template <uint32_t T>
__global__ void __launch_bounds__(kGemvThreads)
    gemv_swiglu_kernel(const uint8_t* __restrict__ wg, const uint8_t* __restrict__ wu,
                       size_t stride, int rows, int cols, const float* __restrict__ x,
                       float* __restrict__ out, const int* skip) {
    if (skip && *skip) return;
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
    const int r = static_cast<int>(blockIdx.x) * kGemvWarps + warp;
    if (r >= rows) return;
    const size_t off = static_cast<size_t>(r) * stride;
    const float g = warp_sum(row_dot_lane<T>(wg + off, x, cols, lane));
    const float u = warp_sum(row_dot_lane<T>(wu + off, x, cols, lane));
    // silu(g) = g * sigmoid(g); the reciprocal form stays finite (0) when exp(-g) overflows.
    if (lane == 0) out[r] = g * (1.0f / (1.0f + __expf(-g))) * u;
}

}  // namespace

void gemv(uint32_t type, const GemvArgs& args, cudaStream_t stream) {
    int64_t rows = 0;
    for (int j = 0; j < args.n_jobs; ++j) rows += args.job[j].rows;
    if (rows == 0) return;
    const bool ok = dispatch_type(type, [&](auto t) {
        gemv_kernel<decltype(t)::value><<<gemv_ctas(rows), kGemvThreads, 0, stream>>>(args);
    });
    if (!ok) throw Error(std::string("CUDA gemv: no kernel for weight type ") + type_name(type));
    FFNSKIP_CUDA_LAUNCH_CHECK();
}

void gemv_swiglu(const DevMatrix& gate, const DevMatrix& up, const float* x, float* out,
                 const int* skip, cudaStream_t stream) {
    if (gate.type != up.type || gate.rows != up.rows || gate.cols != up.cols ||
        gate.stride != up.stride) {
        throw Error("CUDA gemv_swiglu: gate and up projections differ in type or shape");
    }
    const int rows = static_cast<int>(gate.rows), cols = static_cast<int>(gate.cols);
    const bool ok = dispatch_type(gate.type, [&](auto t) {
        gemv_swiglu_kernel<decltype(t)::value><<<gemv_ctas(rows), kGemvThreads, 0, stream>>>(
            gate.data, up.data, gate.stride, rows, cols, x, out, skip);
    });
    if (!ok) {
        throw Error(std::string("CUDA gemv_swiglu: no kernel for weight type ") +
                    type_name(gate.type));
    }
    FFNSKIP_CUDA_LAUNCH_CHECK();
}

}  // namespace ffnskip::cuda
