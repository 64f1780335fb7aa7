// The quantized weight types as the NEON integer matmul reads them: per-type block decoders and
// the prepared activation row, shared by its one-token file (kernels_matvec_quant_neon.cpp) and
// its prompt file (kernels_gemm_quant_neon.cpp), the AArch64 counterparts of the AVX2 files.
//
// Every weight type is walked in blocks of 32 values: the block's codes are widened to four
// int16x8 vectors and multiplied with the activation's by SMLAL/SMLAL2 (eight instructions, 32
// multiply-adds, into four int32 lanes); the lanes are converted to float and scaled by (weight
// scale x activation scale) once per block. The min/offset terms (Q4_1, Q5_1, Q4_K, Q5_K) are a
// float dot product of per-block mins with the activation block sums.
//
// Speed has not been measured on ARM hardware (only correctness, under emulation): the tile shapes
// follow the AVX2 kernels, and no software prefetch is issued.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cpu/kernels_impl.h"
#include "cpu/kernels_neon.h"
#include "cpu/repack.h"
#include "ggml_types.h"

namespace ffnskip::cpu::neon {

// ---- per-type block decoding -----------------------------------------------------------------
// A type is read in units of kGroup blocks of 32 (a K-quant super-block is 8 blocks):
//   scales(row, u, dw, mn): the float scale of each block of unit u, and its additive min term
//                           (w = dw * code + mn) when kMin;
//   codes(row, u, j, q):    the 16-bit codes of block j of unit u.
template <class T>
struct Simple {
    using Inner = T;
    using Block = typename T::Block;
    static constexpr int kGroup = 1;
    static constexpr bool kMin = T::kMin;
    static void scales(const uint8_t* row, int64_t u, float* dw, float* mn) {
        const Block& blk = reinterpret_cast<const Block*>(row)[u];
        *dw = half(blk.d);
        if constexpr (kMin) *mn = half(blk.m);
    }
    static void codes(const uint8_t* row, int64_t u, int, int16x8_t q[4]) {
        widen(T::codes(reinterpret_cast<const Block*>(row)[u]), q);
    }
};

// Q4_K / Q5_K: block j has w = (d * sc_j) * code - dmin * m_j with 6-bit sc_j, m_j.
template <class Block>
struct Q45K {
    static constexpr int kGroup = 8;
    static constexpr bool kMin = true;
    static void scales(const uint8_t* row, int64_t u, float* dw, float* mn) {
        const Block& b = reinterpret_cast<const Block*>(row)[u];
        float32x4_t sc[2], m[2];
        scale_min_k4(b.scales, sc, m);
        const float32x4_t dd = halves2(&b.d);  // d, dmin
        for (int h = 0; h < 2; ++h) {
            vst1q_f32(dw + 4 * h, vmulq_laneq_f32(sc[h], dd, 0));
            // -(dmin * m): the scalar path rounds the product, then negates.
            vst1q_f32(mn + 4 * h, vnegq_f32(vmulq_laneq_f32(m[h], dd, 1)));
        }
    }
    static void codes(const uint8_t* row, int64_t u, int j, int16x8_t q[4]) {
        const Block& b = reinterpret_cast<const Block*>(row)[u];
        if constexpr (sizeof(Block) == sizeof(block_q5_K)) {
            widen(q5k_codes(b.qs, reinterpret_cast<const block_q5_K&>(b).qh, j), q);
        } else {
            widen(q4k_codes(b.qs, j), q);
        }
    }
};

// Q6_K: w = d * sc_g * (code - 32) per 16 values; sc_g (int8) is folded into the 16-bit codes.
struct Q6K {
    static constexpr int kGroup = 8;
    static constexpr bool kMin = false;
    static void scales(const uint8_t* row, int64_t u, float* dw, float*) {
        const float32x4_t d = vdupq_n_f32(half(reinterpret_cast<const block_q6_K*>(row)[u].d));
        vst1q_f32(dw, d);
        vst1q_f32(dw + 4, d);
    }
    static void codes(const uint8_t* row, int64_t u, int j, int16x8_t q[4]) {
        const block_q6_K& b = reinterpret_cast<const block_q6_K*>(row)[u];
        widen(q6k_codes(b, j), q);
        for (int i = 0; i < 4; ++i) q[i] = vmulq_n_s16(q[i], b.scales[2 * j + i / 2]);
    }
};

// Q4_0 / Q4_1 rows in the grouped layout of repack.h: in a group of 8 blocks, field f (0 the
// scale, 1 the min) of block j sits at 16 f + 2 j and block j's codes at kCodes + 16 j; the
// blocks after the last group are plain (Simple<Q>).
template <class Q>
struct Grouped {
    using Plain = Simple<Q>;
    using Block = typename Q::Block;
    static constexpr bool kMin = Q::kMin;
    static constexpr size_t kBlock = sizeof(Block);
    static constexpr size_t kCodes = (kMin ? 2 : 1) * 2 * kGroupBlocks;
    // 16-bit codes of block j of the group starting at g.
    static void codes(const uint8_t* g, int j, int16x8_t q[4]) {
        const int8x16x2_t c = nibbles32(g + kCodes + 16 * j);
        widen(kMin ? c : sub_s8(c, 8), q);
    }
    // The 8 scales (field 0) or mins (field 1) of the group at g, as floats.
    static void halves(const uint8_t* g, int field, float32x4_t out[2]) {
        const float16x8_t h = vld1q_f16(reinterpret_cast<const float16_t*>(g + 16 * field));
        out[0] = vcvt_f32_f16(vget_low_f16(h));
        out[1] = vcvt_high_f32_f16(h);
    }
};

template <class T>
struct IsGrouped : std::false_type {};
template <class Q>
struct IsGrouped<Grouped<Q>> : std::true_type {};

struct ActRow {  // one prepared activation row (kernels_impl.h): codes, block scales, block sums
    const int16_t* q = nullptr;
    const float* d = nullptr;
    const float* s = nullptr;
    ActRow() = default;
    ActRow(const uint8_t* acts, int64_t nb)
        : q(reinterpret_cast<const int16_t*>(acts)),
          d(reinterpret_cast<const float*>(acts + nb * kActBlock * sizeof(int16_t))),
          s(d + nb) {}
};

template <class T>
struct TypeTag {
    using type = T;
};

// Calls f(TypeTag<T>{}) with the decoder T of `type` (plain or grouped); does nothing for a type
// without one (kernels.cpp admits only these; grouped Q4_K is never made for NEON, repack.h).
template <class F>
void with_decoder(uint32_t type, F&& f) {
    switch (type) {
        case GGML_Q4_0:
            return f(TypeTag<Simple<Q4_0>>{});
        case GGML_Q4_1:
            return f(TypeTag<Simple<Q4_1>>{});
        case GGML_Q5_0:
            return f(TypeTag<Simple<Q5_0>>{});
        case GGML_Q5_1:
            return f(TypeTag<Simple<Q5_1>>{});
        case GGML_Q8_0:
            return f(TypeTag<Simple<Q8_0>>{});
        case GGML_Q4_K:
            return f(TypeTag<Q45K<block_q4_K>>{});
        case GGML_Q5_K:
            return f(TypeTag<Q45K<block_q5_K>>{});
        case GGML_Q6_K:
            return f(TypeTag<Q6K>{});
        case GGML_Q4_0 | kGroupedFlag:
            return f(TypeTag<Grouped<Q4_0>>{});
        case GGML_Q4_1 | kGroupedFlag:
            return f(TypeTag<Grouped<Q4_1>>{});
        default:
            return;
    }
}

}  // namespace ffnskip::cpu::neon
