// Row dequantization kernels (see dequant.cuh): one warp per row, lanes over block parts exactly
// as in the GEMV, so reads are coalesced the same way.
#include <string>

#include "cuda/blocks.cuh"
#include "cuda/dequant.cuh"

namespace ffnskip::cuda {

namespace {

constexpr int kRowsPerCta = 4;

// Writes row `row` of w into dst[0..cols) through store(dst, i, value).
template <uint32_t T, typename Store>
__device__ __forceinline__ void decode_row(const uint8_t* __restrict__ row, int cols, int lane,
                                           Store store) {
    using B = Blk<T>;
    constexpr int kBlocksPerIter = kWarp / B::LPB;
    const int nb = cols / B::QK;
    const int part = lane % B::LPB;
    const int o0 = B::off0(part), o1 = B::off1(part);
    for (int b = lane / B::LPB; b < nb; b += kBlocksPerIter) {
        float v[8];
        B::decode(row + static_cast<size_t>(b) * B::BYTES, part, v);
        const int base = b * B::QK;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            store(base + o0 + i, v[i]);
            store(base + o1 + i, v[4 + i]);
        }
    }
    if constexpr (kPlainType<T>) {
        for (int i = nb * B::QK + lane; i < cols; i += kWarp) store(i, B::scalar(row, i));
    }
}

template <uint32_t T>
__global__ void __launch_bounds__(kRowsPerCta* kWarp)
    embed_kernel(const uint8_t* __restrict__ w, size_t stride, int64_t n_rows, int cols,
                 const int32_t* __restrict__ tokens, int n, float* __restrict__ out) {
    const int i =
        static_cast<int>(blockIdx.x) * kRowsPerCta + static_cast<int>(threadIdx.x) / kWarp;
    const int lane = threadIdx.x % kWarp;
    if (i >= n) return;
    float* dst = out + static_cast<size_t>(i) * cols;
    const int32_t tok = tokens[i];
    if (tok < 0 || tok >= n_rows) {
        for (int c = lane; c < cols; c += kWarp) dst[c] = 0.0f;
        return;
    }
    decode_row<T>(w + static_cast<size_t>(tok) * stride, cols, lane,
                  [dst](int c, float v) { dst[c] = v; });
}

template <uint32_t T>
__global__ void __launch_bounds__(kRowsPerCta* kWarp)
    dequant_f16_kernel(const uint8_t* __restrict__ w, size_t stride, int64_t r0, int64_t r1,
                       int cols, __half* __restrict__ out) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * kRowsPerCta + threadIdx.x / kWarp;
    const int lane = threadIdx.x % kWarp;
    if (r0 + i >= r1) return;
    __half* dst = out + static_cast<size_t>(i) * cols;
    decode_row<T>(w + static_cast<size_t>(r0 + i) * stride, cols, lane,
                  [dst](int c, float v) { dst[c] = __float2half_rn(v); });
}

}  // namespace

void embed_rows(const DevMatrix& w, const int32_t* tokens, int n, float* out, cudaStream_t stream) {
    if (n <= 0) return;
    const bool ok = dispatch_type(w.type, [&](auto t) {
        embed_kernel<decltype(t)::value>
            <<<ceil_div(n, kRowsPerCta), kRowsPerCta * kWarp, 0, stream>>>(
                w.data, w.stride, w.rows, static_cast<int>(w.cols), tokens, n, out);
    });
    if (!ok)
        throw Error(std::string("CUDA embed_rows: no kernel for weight type ") + type_name(w.type));
    FFNSKIP_CUDA_LAUNCH_CHECK();
}

void dequant_rows_f16(const DevMatrix& w, int64_t r0, int64_t r1, __half* out,
                      cudaStream_t stream) {
    if (r1 <= r0) return;
    const bool ok = dispatch_type(w.type, [&](auto t) {
        dequant_f16_kernel<decltype(t)::value>
            <<<ceil_div(r1 - r0, kRowsPerCta), kRowsPerCta * kWarp, 0, stream>>>(
                w.data, w.stride, r0, r1, static_cast<int>(w.cols), out);
    });
    if (!ok) {
        throw Error(std::string("CUDA dequant_rows_f16: no kernel for weight type ") +
                    type_name(w.type));
    }
    FFNSKIP_CUDA_LAUNCH_CHECK();
}

}  // namespace ffnskip::cuda
