// The quantized weight types as the AVX2 integer matmul reads them: per-type block decoders
// shared by its one-token file (kernels_matvec_quant_avx2.cpp) and its prompt file
// (kernels_gemm_quant_avx2.cpp). Included only by those two (compiled with -mavx2 -mfma -mf16c).
//
// Every weight type is walked in blocks of 32 values: the block's codes are widened to two
// vectors of 16-bit integers (elements 0-15 and 16-31) and multiplied with vpmaddwd, 16
// multiply-adds per instruction. The 8 int32 lanes of one block are converted to float and scaled
// by (weight scale x activation scale) once per block; the min/offset terms (Q4_1, Q5_1, Q4_K,
// Q5_K) are a float dot product of per-block mins with the activation block sums, done per chunk of
// blocks.
//
// Q4_0 / Q4_1 weights may arrive "grouped" (repack.h: 8 blocks' scales side by side), read by
// tile_1tok_grouped for one token and by decode_row for more; Q4_K ones with their block scales
// re-packed (Q4KGrouped), read by the same paths as plain Q4_K.
//
// Integer ranges: an activation is at most 32767 in magnitude, a code at most 128 (Q8_0) or
// 4096 (Q6_K codes pre-multiplied by their int8 scale), and one int32 lane sums 4 products, so
// lanes stay below 2^31.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cpu/kernels_avx2.h"
#include "cpu/kernels_impl.h"
#include "cpu/repack.h"
#include "ggml_types.h"

namespace ffnskip::cpu::avx2 {

// 32 byte codes -> 16-bit halves (elements 0-15 and 16-31), sign- or zero-extended.
template <bool kSigned>
inline void widen(__m256i v, __m256i& lo, __m256i& hi) {
    const __m128i l = _mm256_castsi256_si128(v), h = _mm256_extracti128_si256(v, 1);
    lo = kSigned ? _mm256_cvtepi8_epi16(l) : _mm256_cvtepu8_epi16(l);
    hi = kSigned ? _mm256_cvtepi8_epi16(h) : _mm256_cvtepu8_epi16(h);
}

// 16 bytes of packed nibbles (element i low, 16 + i high) -> 16-bit elements 0-15 and 16-31:
// zero-extended bytes give the high nibble by a plain shift.
inline void nibbles16(const uint8_t* qs, __m256i& lo, __m256i& hi) {
    const __m256i t = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
    lo = _mm256_and_si256(t, _mm256_set1_epi16(0x0F));
    hi = _mm256_srli_epi16(t, 4);
}

// ---- per-type block decoding -----------------------------------------------------------------
// A type is read in units of kGroup blocks of 32 (a K-quant super-block is 8 blocks):
//   scales(row, u, dw, mn): the float scale of each block of unit u, and its additive min term
//                           (w = dw * code + mn) when kMin;
//   codes(row, u, j, lo, hi): the 16-bit codes of block j of unit u.
template <class T>
struct Simple {
    using Inner = T;
    using Block = typename T::Block;
    static constexpr int kGroup = 1;
    static constexpr size_t kUnitBytes = sizeof(Block);
    static constexpr bool kMin = T::kMin;
    static void scales(const uint8_t* row, int64_t u, float* dw, float* mn) {
        const Block& blk = reinterpret_cast<const Block*>(row)[u];
        if constexpr (kMin) {  // d and m are adjacent halves: one conversion for both
            uint32_t dm16;
            std::memcpy(&dm16, &blk.d, 4);
            const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dm16)));
            _mm_store_ss(dw, dm);
            _mm_store_ss(mn, _mm_movehdup_ps(dm));
        } else {
            *dw = half(blk.d);
        }
    }
    static void codes(const uint8_t* row, int64_t u, int, __m256i& lo, __m256i& hi) {
        const Block& blk = reinterpret_cast<const Block*>(row)[u];
        if constexpr (std::is_same_v<T, Q4_0> || std::is_same_v<T, Q4_1>) {
            nibbles16(blk.qs, lo, hi);
            if constexpr (T::kSigned) {
                lo = _mm256_sub_epi16(lo, _mm256_set1_epi16(8));
                hi = _mm256_sub_epi16(hi, _mm256_set1_epi16(8));
            }
        } else if constexpr (std::is_same_v<T, Q8_0>) {
            const auto* q = reinterpret_cast<const __m128i*>(blk.qs);
            lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(q));
            hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(q + 1));
        } else {
            widen<T::kSigned>(T::codes(blk), lo, hi);
        }
    }
};

// Q4_K / Q5_K: block j has w = (d * sc_j) * code - dmin * m_j with 6-bit sc_j, m_j.
template <class Block>
struct Q45K {
    static constexpr int kGroup = 8;
    static constexpr size_t kUnitBytes = sizeof(Block);
    static constexpr bool kMin = true;
    static constexpr bool kQ5 = sizeof(Block) == sizeof(block_q5_K);
    // The 8 block scales d * sc_j and min terms -(dmin * m_j) of super-block u, in registers.
    static void scales8(const uint8_t* row, int64_t u, __m256& dw, __m256& mn) {
        const Block& b = reinterpret_cast<const Block*>(row)[u];
        // scale_min_k4 on whole 32-bit words: 8 six-bit scales and mins, one per byte.
        uint32_t s[3];
        std::memcpy(s, b.scales, 12);
        const uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
        const uint32_t sc_lo = s[0] & m6, mn_lo = s[1] & m6;
        const uint32_t sc_hi = (s[2] & m4) | ((s[0] >> 6) & m2) << 4;
        const uint32_t mn_hi = ((s[2] >> 4) & m4) | ((s[1] >> 6) & m2) << 4;
        const __m256 sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
            _mm_cvtsi64_si128(static_cast<int64_t>(sc_lo | static_cast<uint64_t>(sc_hi) << 32))));
        const __m256 m = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(
            _mm_cvtsi64_si128(static_cast<int64_t>(mn_lo | static_cast<uint64_t>(mn_hi) << 32))));
        dw = _mm256_mul_ps(_mm256_set1_ps(half(b.d)), sc);
        // -(dmin * m): the scalar path rounds the product, then negates.
        mn = _mm256_xor_ps(_mm256_mul_ps(_mm256_set1_ps(half(b.dmin)), m), _mm256_set1_ps(-0.0f));
    }
    static void scales(const uint8_t* row, int64_t u, float* dw, float* mn) {
        __m256 d, m;
        scales8(row, u, d, m);
        _mm256_storeu_ps(dw, d);
        _mm256_storeu_ps(mn, m);
    }
    // Blocks 2p and 2p + 1: Q4_K keeps them in the low and high nibbles of the same 32 bytes, so
    // they are widened once for both.
    static void pair(const uint8_t* row, int64_t u, int p, __m256i* c) {
        if constexpr (kQ5) {
            codes(row, u, 2 * p, c[0], c[1]);
            codes(row, u, 2 * p + 1, c[2], c[3]);
        } else {
            const auto* q = reinterpret_cast<const __m128i*>(
                reinterpret_cast<const Block*>(row)[u].qs + 32 * p);
            const __m256i t0 = _mm256_cvtepu8_epi16(_mm_loadu_si128(q));
            const __m256i t1 = _mm256_cvtepu8_epi16(_mm_loadu_si128(q + 1));
            const __m256i m = _mm256_set1_epi16(0x0F);
            c[0] = _mm256_and_si256(t0, m);
            c[1] = _mm256_and_si256(t1, m);
            c[2] = _mm256_srli_epi16(t0, 4);
            c[3] = _mm256_srli_epi16(t1, 4);
        }
    }
    static void codes(const uint8_t* row, int64_t u, int j, __m256i& lo, __m256i& hi) {
        const Block& b = reinterpret_cast<const Block*>(row)[u];
        if constexpr (kQ5) {
            widen<false>(q5k_codes(b.qs, b.qh, j), lo, hi);
        } else {  // zero-extended bytes: the high nibble by a plain shift
            const auto* q = reinterpret_cast<const __m128i*>(b.qs + 32 * (j / 2));
            const __m256i t0 = _mm256_cvtepu8_epi16(_mm_loadu_si128(q));
            const __m256i t1 = _mm256_cvtepu8_epi16(_mm_loadu_si128(q + 1));
            if (j & 1) {
                lo = _mm256_srli_epi16(t0, 4);
                hi = _mm256_srli_epi16(t1, 4);
            } else {
                lo = _mm256_and_si256(t0, _mm256_set1_epi16(0x0F));
                hi = _mm256_and_si256(t1, _mm256_set1_epi16(0x0F));
            }
        }
    }
};

// Q4_K with its block scales and mins re-packed at load (repack.cpp): byte j of the 8 bytes
// after d and dmin holds the low 4 bits of sc_j and m_j, the next word their top 2 bits. Codes
// are in place. Per super-block and row the decode is ~12 vector operations, against ~25 (half
// of them scalar) for the file's packing.
struct Q4KGrouped : Q45K<block_q4_K> {
    static void scales8(const uint8_t* row, int64_t u, __m256& dw, __m256& mn) {
        const uint8_t* b = row + u * sizeof(block_q4_K);
        const __m256i lo4 =
            _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 4)));
        uint32_t top, dd;
        std::memcpy(&top, b + 12, 4);
        std::memcpy(&dd, b, 4);
        // Lane j: sc_j's top bits at bits 4-5, m_j's at 20-21.
        const __m256i hi =
            _mm256_slli_epi32(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(top)),
                                                _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)),
                              4);
        const __m256i c30 = _mm256_set1_epi32(0x30);
        const __m256i sc = _mm256_or_si256(_mm256_and_si256(lo4, _mm256_set1_epi32(15)),
                                           _mm256_and_si256(hi, c30));
        const __m256i m = _mm256_or_si256(_mm256_srli_epi32(lo4, 4),
                                          _mm256_and_si256(_mm256_srli_epi32(hi, 16), c30));
        const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dd)));  // d, dmin
        dw = _mm256_mul_ps(_mm256_broadcastss_ps(dm), _mm256_cvtepi32_ps(sc));
        // -(dmin * m): the scalar path rounds the product, then negates.
        mn = _mm256_xor_ps(
            _mm256_mul_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(dm)), _mm256_cvtepi32_ps(m)),
            _mm256_set1_ps(-0.0f));
    }
    static void scales(const uint8_t* row, int64_t u, float* dw, float* mn) {
        __m256 d, m;
        scales8(row, u, d, m);
        _mm256_storeu_ps(dw, d);
        _mm256_storeu_ps(mn, m);
    }
};

// Q6_K: w = d * sc_g * (code - 32) per 16 values; sc_g (int8) is folded into the 16-bit codes.
struct Q6K {
    static constexpr int kGroup = 8;
    static constexpr size_t kUnitBytes = sizeof(block_q6_K);
    static constexpr bool kMin = false;
    static void scales8(const uint8_t* row, int64_t u, __m256& dw, __m256&) {
        dw = _mm256_set1_ps(half(reinterpret_cast<const block_q6_K*>(row)[u].d));
    }
    static void scales(const uint8_t* row, int64_t u, float* dw, float*) {
        _mm256_storeu_ps(dw, _mm256_set1_ps(half(reinterpret_cast<const block_q6_K*>(row)[u].d)));
    }
    // code - 32 is taken on the 32 bytes (one subtraction), then sign-extended.
    static void codes(const uint8_t* row, int64_t u, int j, __m256i& lo, __m256i& hi) {
        const block_q6_K& b = reinterpret_cast<const block_q6_K*>(row)[u];
        widen<true>(_mm256_sub_epi8(q6k_codes(b, j), _mm256_set1_epi8(32)), lo, hi);
        lo = _mm256_mullo_epi16(lo, _mm256_set1_epi16(b.scales[2 * j]));
        hi = _mm256_mullo_epi16(hi, _mm256_set1_epi16(b.scales[2 * j + 1]));
    }
    static void pair(const uint8_t* row, int64_t u, int p, __m256i* c) {
        codes(row, u, 2 * p, c[0], c[1]);
        codes(row, u, 2 * p + 1, c[2], c[3]);
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
    static constexpr size_t kGroupBytes = kGroupBlocks * kBlock;
    static constexpr size_t kCodes = (kMin ? 2 : 1) * 2 * kGroupBlocks;
    // 16-bit codes of block j of the group starting at g.
    static void codes(const uint8_t* g, int j, __m256i& lo, __m256i& hi) {
        nibbles16(g + kCodes + 16 * j, lo, hi);
        if constexpr (Q::kSigned) {
            lo = _mm256_sub_epi16(lo, _mm256_set1_epi16(8));
            hi = _mm256_sub_epi16(hi, _mm256_set1_epi16(8));
        }
    }
    // The 8 scales (field 0) or mins (field 1) of the group at g, as floats.
    static __m256 halves(const uint8_t* g, int field) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 16 * field)));
    }
};

template <class T>
struct IsGrouped : std::false_type {};
template <class Q>
struct IsGrouped<Grouped<Q>> : std::true_type {};

template <class T>
struct TypeTag {
    using type = T;
};

// Calls f(TypeTag<T>{}) with the decoder T of `type` (plain or grouped); does nothing for a type
// without one (kernels.cpp admits only these).
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
        case GGML_Q4_K | kGroupedFlag:
            return f(TypeTag<Q4KGrouped>{});
        default:
            return;
    }
}

}  // namespace ffnskip::cpu::avx2
