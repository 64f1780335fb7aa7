// Decoding of the GGUF weight blocks (layouts in quants.h) in registers, shared by the decode
// GEMV, the dequantize-to-f16 pass of the batched GEMM and the embedding lookup, so that every
// weight type is decoded by exactly one piece of code on the device.
//
// Each type is read in "parts" of 8 values. A block of QK values has LPB parts, decoded by LPB
// neighbouring lanes so that a warp reads consecutive bytes (coalesced). Part p yields
// v[0..4) at offsets off0(p)..+3 and v[4..8) at off1(p)..+3 inside the block: the nibble
// layouts put element j and j + 16 (or j + 32) in one byte, hence two runs of four.
// Plain types (F32, F16, BF16) use 8-element "blocks" read with one or two 16-byte loads.
//
// Everything is __host__ __device__ so that tests/test_cuda_kernels.py can run the decoders on
// the CPU (harness::decode_row_host) against the scalar reference without a GPU.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cuda/common.cuh"
#include "ggml_types.h"
#include "quants.h"

namespace ffnskip::cuda {

// Rows start 16-byte aligned on the device, so 20, 24, 144 and 176-byte blocks keep 4-byte
// alignment; 18, 22, 34 and 210-byte blocks are only 2-byte aligned and their 32-bit loads are
// assembled from 16-bit halves.
__host__ __device__ __forceinline__ uint16_t ld16(const uint8_t* p) {
    return *reinterpret_cast<const uint16_t*>(p);
}
__host__ __device__ __forceinline__ uint32_t ld32_a2(const uint8_t* p) {
    return static_cast<uint32_t>(ld16(p)) | static_cast<uint32_t>(ld16(p + 2)) << 16;
}
__host__ __device__ __forceinline__ uint32_t ld32_a4(const uint8_t* p) {
    return *reinterpret_cast<const uint32_t*>(p);
}

template <uint32_t T>
struct Blk;

template <>
struct Blk<GGML_F32> {
    static constexpr int QK = 8, LPB = 1, BYTES = 32;
    __host__ __device__ static int off0(int) { return 0; }
    __host__ __device__ static int off1(int) { return 4; }
    __host__ __device__ static void decode(const uint8_t* b, int, float v[8]) {
        const float4 a = reinterpret_cast<const float4*>(b)[0];
        const float4 c = reinterpret_cast<const float4*>(b)[1];
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
        v[4] = c.x, v[5] = c.y, v[6] = c.z, v[7] = c.w;
    }
    __host__ __device__ static float scalar(const uint8_t* row, int64_t i) {
        return reinterpret_cast<const float*>(row)[i];
    }
};

template <>
struct Blk<GGML_F16> {
    static constexpr int QK = 8, LPB = 1, BYTES = 16;
    __host__ __device__ static int off0(int) { return 0; }
    __host__ __device__ static int off1(int) { return 4; }
    __host__ __device__ static void decode(const uint8_t* b, int, float v[8]) {
        const uint4 a = *reinterpret_cast<const uint4*>(b);
        const uint32_t w[4] = {a.x, a.y, a.z, a.w};
        FFNSKIP_UNROLL
        for (int i = 0; i < 4; ++i) {
            v[2 * i] = half_bits_to_float(static_cast<uint16_t>(w[i] & 0xffffu));
            v[2 * i + 1] = half_bits_to_float(static_cast<uint16_t>(w[i] >> 16));
        }
    }
    __host__ __device__ static float scalar(const uint8_t* row, int64_t i) {
        return half_bits_to_float(reinterpret_cast<const uint16_t*>(row)[i]);
    }
};

template <>
struct Blk<GGML_BF16> {
    static constexpr int QK = 8, LPB = 1, BYTES = 16;
    __host__ __device__ static int off0(int) { return 0; }
    __host__ __device__ static int off1(int) { return 4; }
    __host__ __device__ static void decode(const uint8_t* b, int, float v[8]) {
        const uint4 a = *reinterpret_cast<const uint4*>(b);
        const uint32_t w[4] = {a.x, a.y, a.z, a.w};
        FFNSKIP_UNROLL
        for (int i = 0; i < 4; ++i) {
            v[2 * i] = bf16_bits_to_float(static_cast<uint16_t>(w[i] & 0xffffu));
            v[2 * i + 1] = bf16_bits_to_float(static_cast<uint16_t>(w[i] >> 16));
        }
    }
    __host__ __device__ static float scalar(const uint8_t* row, int64_t i) {
        return bf16_bits_to_float(reinterpret_cast<const uint16_t*>(row)[i]);
    }
};

// Q8_0: d, qs[32]; part p holds qs[8p..8p+8).
template <>
struct Blk<GGML_Q8_0> {
    static constexpr int QK = 32, LPB = 4, BYTES = sizeof(block_q8_0);
    __host__ __device__ static int off0(int p) { return 8 * p; }
    __host__ __device__ static int off1(int p) { return 8 * p + 4; }
    __host__ __device__ static void decode(const uint8_t* b, int p, float v[8]) {
        const float d = half_bits_to_float(ld16(b));
        const uint32_t lo = ld32_a2(b + 2 + 8 * p), hi = ld32_a2(b + 2 + 8 * p + 4);
        FFNSKIP_UNROLL
        for (int i = 0; i < 4; ++i) {
            v[i] = d * static_cast<float>(static_cast<int8_t>((lo >> (8 * i)) & 0xffu));
            v[4 + i] = d * static_cast<float>(static_cast<int8_t>((hi >> (8 * i)) & 0xffu));
        }
    }
};

// Q4_0: d, qs[16]; element j < 16 is the low nibble of qs[j], element j + 16 its high nibble.
template <>
struct Blk<GGML_Q4_0> {
    static constexpr int QK = 32, LPB = 4, BYTES = sizeof(block_q4_0);
    __host__ __device__ static int off0(int p) { return 4 * p; }
    __host__ __device__ static int off1(int p) { return 4 * p + 16; }
    __host__ __device__ static void decode(const uint8_t* b, int p, float v[8]) {
        const float d = half_bits_to_float(ld16(b));
        const uint32_t q = ld32_a2(b + 2 + 4 * p);
        FFNSKIP_UNROLL
        for (int i = 0; i < 4; ++i) {
            const uint32_t byte = (q >> (8 * i)) & 0xffu;
            v[i] = d * (static_cast<float>(byte & 0xfu) - 8.0f);
            v[4 + i] = d * (static_cast<float>(byte >> 4) - 8.0f);
        }
    }
};

// Q4_1: d, m, qs[16]; value = d * q + m.
template <>
struct Blk<GGML_Q4_1> {
    static constexpr int QK = 32, LPB = 4, BYTES = sizeof(block_q4_1);
    __host__ __device__ static int off0(int p) { return 4 * p; }
    __host__ __device__ static int off1(int p) { return 4 * p + 16; }
    __host__ __device__ static void decode(const uint8_t* b, int p, float v[8]) {
        const float d = half_bits_to_float(ld16(b)), m = half_bits_to_float(ld16(b + 2));
        const uint32_t q = ld32_a4(b + 4 + 4 * p);
        FFNSKIP_UNROLL
        for (int i = 0; i < 4; ++i) {
            const uint32_t byte = (q >> (8 * i)) & 0xffu;
            v[i] = d * static_cast<float>(byte & 0xfu) + m;
            v[4 + i] = d * static_cast<float>(byte >> 4) + m;
        }
    }
};

// Q5_0: d, qh (bit j = 5th bit of element j), qs[16]; value = d * (q - 16).
template <>
struct Blk<GGML_Q5_0> {
    static constexpr int QK = 32, LPB = 4, BYTES = sizeof(block_q5_0);
    __host__ __device__ static int off0(int p) { return 4 * p; }
    __host__ __device__ static int off1(int p) { return 4 * p + 16; }
    __host__ __device__ static void decode(const uint8_t* b, int p, float v[8]) {
        const float d = half_bits_to_float(ld16(b));
        const uint32_t qh = ld32_a2(b + 2);
        const uint32_t q = ld32_a2(b + 6 + 4 * p);
        FFNSKIP_UNROLL
        for (int i = 0; i < 4; ++i) {
            const int j = 4 * p + i;
            const uint32_t byte = (q >> (8 * i)) & 0xffu;
            const uint32_t lo = (byte & 0xfu) | ((qh >> j) & 1u) << 4;
            const uint32_t hi = (byte >> 4) | ((qh >> (j + 16)) & 1u) << 4;
            v[i] = d * (static_cast<float>(lo) - 16.0f);
            v[4 + i] = d * (static_cast<float>(hi) - 16.0f);
        }
    }
};

// Q5_1: d, m, qh, qs[16]; value = d * q + m.
template <>
struct Blk<GGML_Q5_1> {
    static constexpr int QK = 32, LPB = 4, BYTES = sizeof(block_q5_1);
    __host__ __device__ static int off0(int p) { return 4 * p; }
    __host__ __device__ static int off1(int p) { return 4 * p + 16; }
    __host__ __device__ static void decode(const uint8_t* b, int p, float v[8]) {
        const float d = half_bits_to_float(ld16(b)), m = half_bits_to_float(ld16(b + 2));
        const uint32_t qh = ld32_a4(b + 4);
        const uint32_t q = ld32_a4(b + 8 + 4 * p);
        FFNSKIP_UNROLL
        for (int i = 0; i < 4; ++i) {
            const int j = 4 * p + i;
            const uint32_t byte = (q >> (8 * i)) & 0xffu;
            const uint32_t lo = (byte & 0xfu) | ((qh >> j) & 1u) << 4;
            const uint32_t hi = (byte >> 4) | ((qh >> (j + 16)) & 1u) << 4;
            v[i] = d * static_cast<float>(lo) + m;
            v[4 + i] = d * static_cast<float>(hi) + m;
        }
    }
};

// The 6-bit scale and min of sub-block j of a Q4_K / Q5_K super-block (12 packed bytes).
__host__ __device__ __forceinline__ void k_scale_min(const uint8_t* s, int j, float& sc,
                                                     float& mn) {
    if (j < 4) {
        sc = static_cast<float>(s[j] & 63);
        mn = static_cast<float>(s[j + 4] & 63);
    } else {
        sc = static_cast<float>((s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4));
        mn = static_cast<float>((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

// Q4_K: 8 sub-blocks of 32; qs byte 32c + l holds element 64c + l (low nibble, sub-block 2c)
// and 64c + 32 + l (high nibble, sub-block 2c + 1). Part p: c = p / 8, l = 4 (p % 8)...+3.
template <>
struct Blk<GGML_Q4_K> {
    static constexpr int QK = QK_K, LPB = 32, BYTES = sizeof(block_q4_K);
    __host__ __device__ static int off0(int p) { return 64 * (p / 8) + 4 * (p % 8); }
    __host__ __device__ static int off1(int p) { return off0(p) + 32; }
    __host__ __device__ static void decode(const uint8_t* b, int p, float v[8]) {
        const float d = half_bits_to_float(ld16(b)), dmin = half_bits_to_float(ld16(b + 2));
        const int c = p / 8;
        float sc0, m0, sc1, m1;
        k_scale_min(b + 4, 2 * c, sc0, m0);
        k_scale_min(b + 4, 2 * c + 1, sc1, m1);
        const float d0 = d * sc0, n0 = dmin * m0, d1 = d * sc1, n1 = dmin * m1;
        const uint32_t q = ld32_a4(b + 16 + 32 * c + 4 * (p % 8));
        FFNSKIP_UNROLL
        for (int i = 0; i < 4; ++i) {
            const uint32_t byte = (q >> (8 * i)) & 0xffu;
            v[i] = d0 * static_cast<float>(byte & 0xfu) - n0;
            v[4 + i] = d1 * static_cast<float>(byte >> 4) - n1;
        }
    }
};

// Q5_K: as Q4_K plus qh[32]: bit 2c of qh[l] is the 5th bit of element 64c + l, bit 2c + 1 that
// of element 64c + 32 + l.
template <>
struct Blk<GGML_Q5_K> {
    static constexpr int QK = QK_K, LPB = 32, BYTES = sizeof(block_q5_K);
    __host__ __device__ static int off0(int p) { return 64 * (p / 8) + 4 * (p % 8); }
    __host__ __device__ static int off1(int p) { return off0(p) + 32; }
    __host__ __device__ static void decode(const uint8_t* b, int p, float v[8]) {
        const float d = half_bits_to_float(ld16(b)), dmin = half_bits_to_float(ld16(b + 2));
        const int c = p / 8, l = 4 * (p % 8);
        float sc0, m0, sc1, m1;
        k_scale_min(b + 4, 2 * c, sc0, m0);
        k_scale_min(b + 4, 2 * c + 1, sc1, m1);
        const float d0 = d * sc0, n0 = dmin * m0, d1 = d * sc1, n1 = dmin * m1;
        const uint32_t qh = ld32_a4(b + 16 + l);
        const uint32_t q = ld32_a4(b + 48 + 32 * c + l);
        FFNSKIP_UNROLL
        for (int i = 0; i < 4; ++i) {
            const uint32_t byte = (q >> (8 * i)) & 0xffu;
            const uint32_t h = (qh >> (8 * i)) & 0xffu;
            const uint32_t lo = (byte & 0xfu) | ((h >> (2 * c)) & 1u) << 4;
            const uint32_t hi = (byte >> 4) | ((h >> (2 * c + 1)) & 1u) << 4;
            v[i] = d0 * static_cast<float>(lo) - n0;
            v[4 + i] = d1 * static_cast<float>(hi) - n1;
        }
    }
};

// Q6_K: two halves n of 128 values; for l < 32 in half n, ql[64n + l] and ql[64n + 32 + l]
// give the low 4 bits and qh[32n + l] the top 2 bits of the values at 128n + l (+32, +64, +96).
// Part p: n = p / 16, g = (p / 8) % 2 picks {+0, +64} or {+32, +96}, l = 4 (p % 8)...+3.
template <>
struct Blk<GGML_Q6_K> {
    static constexpr int QK = QK_K, LPB = 32, BYTES = sizeof(block_q6_K);
    __host__ __device__ static int off0(int p) {
        return 128 * (p / 16) + 32 * ((p / 8) % 2) + 4 * (p % 8);
    }
    __host__ __device__ static int off1(int p) { return off0(p) + 64; }
    __host__ __device__ static void decode(const uint8_t* b, int p, float v[8]) {
        const int n = p / 16, g = (p / 8) % 2, l = 4 * (p % 8);
        const float d = half_bits_to_float(ld16(b + 208));
        const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192) + 8 * n + l / 16;
        const float d0 = d * static_cast<float>(sc[2 * g]);
        const float d1 = d * static_cast<float>(sc[4 + 2 * g]);
        const uint32_t ql = ld32_a2(b + 64 * n + 32 * g + l);
        const uint32_t qh = ld32_a2(b + 128 + 32 * n + l);
        FFNSKIP_UNROLL
        for (int i = 0; i < 4; ++i) {
            const uint32_t byte = (ql >> (8 * i)) & 0xffu;
            const uint32_t h = (qh >> (8 * i)) & 0xffu;
            const int lo = static_cast<int>((byte & 0xfu) | ((h >> (2 * g)) & 3u) << 4) - 32;
            const int hi = static_cast<int>((byte >> 4) | ((h >> (4 + 2 * g)) & 3u) << 4) - 32;
            v[i] = d0 * static_cast<float>(lo);
            v[4 + i] = d1 * static_cast<float>(hi);
        }
    }
};

template <uint32_t T>
inline constexpr bool kPlainType = T == GGML_F32 || T == GGML_F16 || T == GGML_BF16;

// Host-side dispatch over every weight type: f(std::integral_constant<uint32_t, T>{}).
// Returns false for a type the CUDA kernels do not implement.
template <typename F>
bool dispatch_type(uint32_t type, F&& f) {
    switch (type) {
        case GGML_F32:
            f(std::integral_constant<uint32_t, GGML_F32>{});
            return true;
        case GGML_F16:
            f(std::integral_constant<uint32_t, GGML_F16>{});
            return true;
        case GGML_BF16:
            f(std::integral_constant<uint32_t, GGML_BF16>{});
            return true;
        case GGML_Q8_0:
            f(std::integral_constant<uint32_t, GGML_Q8_0>{});
            return true;
        case GGML_Q4_0:
            f(std::integral_constant<uint32_t, GGML_Q4_0>{});
            return true;
        case GGML_Q4_1:
            f(std::integral_constant<uint32_t, GGML_Q4_1>{});
            return true;
        case GGML_Q5_0:
            f(std::integral_constant<uint32_t, GGML_Q5_0>{});
            return true;
        case GGML_Q5_1:
            f(std::integral_constant<uint32_t, GGML_Q5_1>{});
            return true;
        case GGML_Q4_K:
            f(std::integral_constant<uint32_t, GGML_Q4_K>{});
            return true;
        case GGML_Q5_K:
            f(std::integral_constant<uint32_t, GGML_Q5_K>{});
            return true;
        case GGML_Q6_K:
            f(std::integral_constant<uint32_t, GGML_Q6_K>{});
            return true;
        default:
            return false;
    }
}

}  // namespace ffnskip::cuda
