// Building blocks shared by the AVX2 kernel files (compiled with -mavx2 -mfma -mf16c only).
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quants.h"

namespace ffnskip::cpu::avx2 {

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

inline float half(uint16_t h) {
    return _cvtsh_ss(h);
}

// 16 packed nibbles -> 32 bytes: low nibbles are elements 0..15, high nibbles 16..31.
inline __m256i nibbles32(const uint8_t* qs) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    const __m128i m = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

// Bit j of a 32-bit word -> 0x10 in byte j (the 5th bit of Q5_0/Q5_1 codes).
inline __m256i bit4_from_u32(const uint8_t* qh) {
    uint32_t bits;
    std::memcpy(&bits, qh, 4);
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(static_cast<int>(bits)),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
    const __m256i sel = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
    const __m256i on = _mm256_cmpeq_epi8(_mm256_and_si256(spread, sel), sel);
    return _mm256_and_si256(on, _mm256_set1_epi8(0x10));
}

// Weight codes of one 32-block: signed types give q - offset, unsigned ones the raw code.
struct Q4_0 {
    using Block = block_q4_0;
    static constexpr bool kSigned = true, kMin = false;
    static __m256i codes(const Block& b) {
        return _mm256_sub_epi8(nibbles32(b.qs), _mm256_set1_epi8(8));
    }
    static float min(const Block&) { return 0.0f; }
};
struct Q4_1 {
    using Block = block_q4_1;
    static constexpr bool kSigned = false, kMin = true;
    static __m256i codes(const Block& b) { return nibbles32(b.qs); }
    static float min(const Block& b) { return half(b.m); }
};
struct Q5_0 {
    using Block = block_q5_0;
    static constexpr bool kSigned = true, kMin = false;
    static __m256i codes(const Block& b) {
        return _mm256_sub_epi8(_mm256_or_si256(nibbles32(b.qs), bit4_from_u32(b.qh)),
                               _mm256_set1_epi8(16));
    }
    static float min(const Block&) { return 0.0f; }
};
struct Q5_1 {
    using Block = block_q5_1;
    static constexpr bool kSigned = false, kMin = true;
    static __m256i codes(const Block& b) {
        return _mm256_or_si256(nibbles32(b.qs), bit4_from_u32(b.qh));
    }
    static float min(const Block& b) { return half(b.m); }
};
struct Q8_0 {
    using Block = block_q8_0;
    static constexpr bool kSigned = true, kMin = false;
    static __m256i codes(const Block& b) {
        return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
    }
    static float min(const Block&) { return 0.0f; }
};

// Unsigned codes (0..31) of sub-block j (32 elements) of a Q4_K / Q5_K super-block.
inline __m256i q4k_codes(const uint8_t* qs, int j) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * (j / 2)));
    return _mm256_and_si256(_mm256_srli_epi16(v, 4 * (j & 1)), _mm256_set1_epi8(0x0F));
}
inline __m256i q5k_codes(const uint8_t* qs, const uint8_t* qh, int j) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh));
    const __m256i bit = _mm256_and_si256(_mm256_srli_epi16(h, j), _mm256_set1_epi8(1));
    return _mm256_or_si256(q4k_codes(qs, j), _mm256_slli_epi16(bit, 4));
}
// Unsigned codes (0..63) of group g (32 elements) of a Q6_K super-block.
inline __m256i q6k_codes(const block_q6_K& b, int g) {
    const int h = g / 4, k = g % 4;
    const __m256i l =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.ql + 64 * h + 32 * (k & 1)));
    const __m256i hv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh + 32 * h));
    const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(l, 4 * (k / 2)), _mm256_set1_epi8(0x0F));
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(hv, 2 * k), _mm256_set1_epi8(0x03));
    return _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
}

inline void scale_min_k4(const uint8_t* s, uint8_t* sc, uint8_t* mn) {
    for (int j = 0; j < 4; ++j) {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 0xF) | ((s[j] >> 6) << 4);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
    }
}

}  // namespace ffnskip::cpu::avx2

#include "cpu/transposed.h"
#include "weight_view.h"

namespace ffnskip::cpu::avx2 {
// Quantized-weight matmul on prepared 16-bit activations, rows [r0, r1) of W. One token
// (kernels_matvec_quant_avx2.cpp):
void matvec_quant(const WeightView& w, const uint8_t* acts, float* y, int64_t r0, int64_t r1);
// Any n_tok >= 1 through the prompt tiles (kernels_gemm_quant_avx2.cpp), for prompts:
void gemm_quant(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y, int64_t ldy,
                int64_t r0, int64_t r1);
// The K-quants (Q4_K plain or grouped, Q5_K, Q6_K) at several tokens on rows decoded into folded
// 16-bit codes (kernels_gemm_k_avx2.cpp); false, doing nothing, for the other types.
bool gemm_k_folded(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y, int64_t ldy,
                   int64_t r0, int64_t r1);
// kernels.h matmul_each_token for the quantized types (grouped or not): several-token variants
// of the one-token tiles (kernels_matvec_quant_avx2.cpp); false, doing nothing, for the others.
bool matmul_each_token(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y,
                       int64_t ldy, int64_t r0, int64_t r1);
// One token, listed rows only: y[rows[k]] = dot(W row rows[k], acts) (quantized types;
// kernels_matvec_quant_avx2.cpp).
void matvec_rows(const WeightView& w, const uint8_t* acts, const int32_t* rows, int64_t n,
                 float* y);
// Channel-sparse matvec on weights laid out by input channel (kernels_sparse_avx2.cpp), at the
// lane width cpu::sparse_lanes() says.
void sparse_matvec(const TransposedView& t, const SparseInput& x, float* y, int64_t k0, int64_t k1);
// Prompt-sized matmul: f32 GEMM over dequantized weight panels (kernels_gemm_f32_avx2.cpp); used
// for the float weight types, reads only the f32 x.
void gemm_f32(const WeightView& w, const float* x, int64_t n_tok, float* y, int64_t ldy, int64_t r0,
              int64_t r1);
// Quantize one token row into the 16-bit activation layout of kernels_impl.h (bit-exact with the
// scalar path; kernels_avx2.cpp).
void prepare_row(const float* x, int64_t cols, int group, uint8_t* out);
// The fast dequantization of kernels_avx2.cpp (bit-exact with dequantize_row_ref).
void dequantize_row(uint32_t type, const void* src, float* dst, int64_t n);
}  // namespace ffnskip::cpu::avx2

namespace ffnskip::cpu::avx512vnni {
// The prompt matmul of K-quant weights (Q4_K plain or grouped, Q5_K, Q6_K) with 512-bit VNNI
// lanes (kernels_gemm_k_avx512vnni.cpp), only where cpu::gemm_lanes() is 512; false, doing
// nothing, for the other types.
bool gemm_k(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y, int64_t ldy,
            int64_t r0, int64_t r1);
}  // namespace ffnskip::cpu::avx512vnni

namespace ffnskip::cpu::amx {
// The prompt matmul of any quantized type on AMX BF16 tiles (kernels_gemm_amx.cpp), from the f32
// x; only where cpu::gemm_amx() is on.
void gemm(const WeightView& w, const float* x, int64_t n_tok, float* y, int64_t ldy, int64_t r0,
          int64_t r1);
}  // namespace ffnskip::cpu::amx

namespace ffnskip::cpu::avx512 {
// The same product with 512-bit lanes (kernels_sparse_avx512.cpp); only where cpu_has_avx512().
void sparse_matvec(const TransposedView& t, const SparseInput& x, float* y, int64_t k0, int64_t k1);
}  // namespace ffnskip::cpu::avx512
