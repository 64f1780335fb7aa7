// Building blocks shared by every CUDA op family: error checking that throws the engine's typed
// errors (library code never prints or aborts), warp/block reductions and the f16/bf16 bit
// conversions used by both the device kernels and the host-side tests of the dequantizers.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "ffnskip/ffnskip.h"
#include "fp16.h"

namespace ffnskip::cuda {

constexpr int kWarp = 32;

// `#pragma unroll` inside __host__ __device__ code, without the host compiler warning about it.
#ifdef __CUDA_ARCH__
#define FFNSKIP_UNROLL _Pragma("unroll")
#else
#define FFNSKIP_UNROLL
#endif

// A failed CUDA call becomes ffnskip::Error naming the call and the runtime's message.
[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* call, const char* file,
                                          int line) {
    throw Error(std::string("CUDA error in ") + call + " (" + file + ":" + std::to_string(line) +
                "): " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

#define FFNSKIP_CUDA_CHECK(call)                                                        \
    do {                                                                                \
        const cudaError_t ffnskip_err_ = (call);                                        \
        if (ffnskip_err_ != cudaSuccess)                                                \
            ::ffnskip::cuda::throw_cuda_error(ffnskip_err_, #call, __FILE__, __LINE__); \
    } while (0)

// Launch errors (bad configuration) surface at the launch, not at the next synchronisation.
#define FFNSKIP_CUDA_LAUNCH_CHECK() FFNSKIP_CUDA_CHECK(cudaGetLastError())

inline unsigned ceil_div(int64_t a, int64_t b) {
    return static_cast<unsigned>((a + b - 1) / b);
}

// A weight matrix resident on the device. Rows are `stride` bytes apart: the upload pads each
// row to 16 bytes so that vector loads of the row start are always aligned.
struct DevMatrix {
    uint32_t type = 0;
    const uint8_t* data = nullptr;
    int64_t rows = 0;
    int64_t cols = 0;
    size_t row_bytes = 0;  // bytes of payload per row (the GGUF row size)
    size_t stride = 0;     // bytes between rows on the device (>= row_bytes, multiple of 16)
};

// ---- f16 / bf16 bits ---------------------------------------------------------------------
// Weights arrive as raw bits inside packed blocks, so the conversions take uint16_t. The host
// versions exist so that the block decoders can be unit-tested without a device.
__host__ __device__ inline float half_bits_to_float(uint16_t h) {
#ifdef __CUDA_ARCH__
    return __half2float(__ushort_as_half(h));
#else
    return fp16_to_fp32(h);
#endif
}

__host__ __device__ inline float bf16_bits_to_float(uint16_t h) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(static_cast<uint32_t>(h) << 16);
#else
    return bf16_to_fp32(h);
#endif
}

// ---- reductions ----------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = kWarp / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the whole block; every thread gets the result. `scratch` holds one T per warp.
// Fixed reduction order, so results are bit-identical between runs (graph replay == direct).
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
    const int n_warps = (blockDim.x + kWarp - 1) / kWarp;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    T r = lane < n_warps ? scratch[lane] : T(0);
    return warp_sum(r);
}

}  // namespace ffnskip::cuda
