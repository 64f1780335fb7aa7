// AVX-512 VNNI prompt tile for the K-quants (Q4_K plain or grouped, Q5_K, Q6_K), several tokens at
// once, on rows decoded into folded 16-bit codes (gemm_k_folded.h: the decoders and the driver).
// Per super-block and (row, token) it spends 8 vpdpwssd (32 multiply-adds each), one conversion
// and one FMA; its AVX2 twin (kernels_gemm_k_avx2.cpp) 16 vpmaddwd, 16 vpaddd, two conversions
// and two FMAs. Measured x1.55 over the AVX2 per-32-block tile on the Qwen2.5-1.5B prompt.
//
// Integer range: a lane sums 16 products per super-block, each at most 4096 * 32767 in
// magnitude: 2^31 - 65536, so the int32 lanes cannot overflow.
//
// Built with -mavx512vnni on top of the AVX-512 flags; called only where cpu::gemm_lanes() is 512
// (the CPU has AVX-512 F/BW/VL/DQ and VNNI). No std::vector here (thread_scratch.h says why).
// GCC 12's AVX-512 headers initialize the "undefined" pass-through operand of _mm512_cvtepi32_ps
// and of the 256-bit extraction in _mm512_reduce_add_ps from itself, which -Wuninitialized
// reports at every use; nothing here reads an uninitialized value.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "cpu/gemm_k_folded.h"

namespace ffnskip::cpu::avx512vnni {

namespace {

using gemm_k::KRow;
using gemm_k::kSubs;
using gemm_k::kSuper;
using gemm_k::TokAct;

// The decoders' widening stores: 32 byte codes -> 16-bit, times their scale, in one register.
struct Store512 {
    static void unsigned32(int16_t* dst, __m256i codes, int scale) {
        _mm512_store_si512(dst, _mm512_mullo_epi16(_mm512_cvtepu8_epi16(codes),
                                                   _mm512_set1_epi16(static_cast<int16_t>(scale))));
    }
    static void signed16x2(int16_t* dst, __m256i codes, int8_t s0, int8_t s1) {
        const __m512i scale = _mm512_inserti64x4(_mm512_set1_epi16(s0), _mm256_set1_epi16(s1), 1);
        _mm512_store_si512(dst, _mm512_mullo_epi16(_mm512_cvtepi8_epi16(codes), scale));
    }
};

// R rows x NT tokens: out[t][r] = dot(row r, token t).
template <bool kMin, int R, int NT>
void tile(const KRow* rows, const TokAct* acts, int64_t nsb, float* const* out) {
    __m512 acc[R][NT];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
        for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_setzero_ps();
    if constexpr (kMin) {  // sum_b min_w[b] * s_x[b]: 16 blocks (2 super-blocks) per operation
        const int64_t nb = nsb * kSubs;
        for (int64_t b = 0; b < nb; b += 16) {
            const __mmask16 k = nb - b >= 16 ? 0xFFFF : 0x00FF;  // nb is a multiple of 8
#pragma GCC unroll 16
            for (int t = 0; t < NT; ++t) {
                const __m512 s = _mm512_maskz_loadu_ps(k, acts[t].s + b);
#pragma GCC unroll 16
                for (int r = 0; r < R; ++r)
                    acc[r][t] =
                        _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, rows[r].mn + b), s, acc[r][t]);
            }
        }
    }
    for (int64_t s0 = 0; s0 < nsb; s0 += 16) {
        const int n = static_cast<int>(std::min<int64_t>(16, nsb - s0));
        const __mmask16 k = static_cast<__mmask16>((1u << n) - 1);
        alignas(64) float scale[R][NT][16];  // d_w[s] * d_x[s]
#pragma GCC unroll 16
        for (int t = 0; t < NT; ++t) {
            const __m512 dx = _mm512_maskz_loadu_ps(k, acts[t].d + s0);
#pragma GCC unroll 16
            for (int r = 0; r < R; ++r)
                _mm512_store_ps(scale[r][t],
                                _mm512_mul_ps(_mm512_maskz_loadu_ps(k, rows[r].d + s0), dx));
        }
        for (int i = 0; i < n; ++i) {
            const int64_t at = (s0 + i) * kSuper;
            __m512i sum[R][NT];
#pragma GCC unroll 16
            for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
                for (int t = 0; t < NT; ++t) sum[r][t] = _mm512_setzero_si512();
#pragma GCC unroll 8
            for (int j = 0; j < kSubs; ++j) {
                __m512i w[R];
#pragma GCC unroll 16
                for (int r = 0; r < R; ++r) w[r] = _mm512_load_si512(rows[r].q + at + 32 * j);
#pragma GCC unroll 16
                for (int t = 0; t < NT; ++t) {
                    const __m512i a = _mm512_loadu_si512(acts[t].q + at + 32 * j);
#pragma GCC unroll 16
                    for (int r = 0; r < R; ++r) sum[r][t] = _mm512_dpwssd_epi32(sum[r][t], w[r], a);
                }
            }
#pragma GCC unroll 16
            for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
                for (int t = 0; t < NT; ++t)
                    acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[r][t]),
                                                _mm512_set1_ps(scale[r][t][i]), acc[r][t]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
        for (int t = 0; t < NT; ++t) out[t][r] = _mm512_reduce_add_ps(acc[r][t]);
}

// 3 rows x 4 tokens: 12 integer and 12 float accumulators, 3 weight vectors and one activation
// vector in the 32 registers.
struct Tiles512 {
    static constexpr int kRows = 3, kTokens = 4, kDecoded = 4 * kRows;
    template <bool kMin, int R, int NT>
    static void tile(const KRow* rows, const TokAct* acts, int64_t nsb, float* const* out) {
        avx512vnni::tile<kMin, R, NT>(rows, acts, nsb, out);
    }
};

}  // namespace

bool gemm_k(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y, int64_t ldy,
            int64_t r0, int64_t r1) {
    return gemm_k::gemm_k_folded<Store512, Tiles512>(w, acts, n_tok, y, ldy, r0, r1);
}

}  // namespace ffnskip::cpu::avx512vnni
