// AVX2 prompt tile for the K-quants (Q4_K plain or grouped, Q5_K, Q6_K), several tokens at once,
// on rows decoded into folded 16-bit codes (gemm_k_folded.h: the decoders and the driver). The
// AVX2 twin of kernels_gemm_k_avx512vnni.cpp, for hosts without AVX-512 VNNI (the reference
// level of the speed claims): per half super-block (128 values) and (row, token) it spends 8
// vpmaddwd and 8 vpaddd, then one conversion and one FMA; the per-32-block tile of
// kernels_gemm_quant_avx2.cpp spends 4 x 6 operations on the same values.
//
// Integer range: a lane sums 16 products per half super-block (8 vpmaddwd of 2), each at most
// 4096 * 32767 in magnitude: 2^31 - 65536, so the int32 lanes cannot overflow. A whole
// super-block in one lane could (32 products), hence the two halves.
//
// Each token's arithmetic is the same whatever the number of tokens in the call, as in the
// VNNI tile, so a prompt read in chunks of kDecodedMinTokens or more gives the same outputs.
#include <immintrin.h>

#include "cpu/gemm_k_folded.h"

namespace ffnskip::cpu::avx2 {

namespace {

using gemm_k::KRow;
using gemm_k::kSubs;
using gemm_k::kSuper;
using gemm_k::TokAct;

// The decoders' widening stores: 32 byte codes -> 16-bit, times their scale, in two registers.
struct Store256 {
    static void unsigned32(int16_t* dst, __m256i codes, int scale) {
        const __m256i s = _mm256_set1_epi16(static_cast<int16_t>(scale));
        auto* d = reinterpret_cast<__m256i*>(dst);
        _mm256_store_si256(
            d, _mm256_mullo_epi16(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(codes)), s));
        _mm256_store_si256(
            d + 1, _mm256_mullo_epi16(_mm256_cvtepu8_epi16(_mm256_extracti128_si256(codes, 1)), s));
    }
    static void signed16x2(int16_t* dst, __m256i codes, int8_t s0, int8_t s1) {
        auto* d = reinterpret_cast<__m256i*>(dst);
        _mm256_store_si256(d,
                           _mm256_mullo_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(codes)),
                                              _mm256_set1_epi16(s0)));
        _mm256_store_si256(
            d + 1, _mm256_mullo_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(codes, 1)),
                                      _mm256_set1_epi16(s1)));
    }
};

constexpr int kHalf = kSuper / 2;  // values per integer sum

// acc + madd(w, a), kept in its register: without the empty asm GCC re-associates a half
// super-block's 8 integer additions into a tree, computes every product first and spills them
// (24 stores and loads per half in the 2 x 3 tile, and 20% slower than the per-32 tile).
inline __m256i madd_into(__m256i acc, __m256i w, __m256i a) {
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(w, a));
    asm("" : "+x"(acc));
    return acc;
}

// R rows x NT tokens: out[t][r] = dot(row r, token t).
template <bool kMin, int R, int NT>
void tile(const KRow* rows, const TokAct* acts, int64_t nsb, float* const* out) {
    __m256 acc[R][NT];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t) acc[r][t] = _mm256_setzero_ps();
    if constexpr (kMin) {  // sum_b min_w[b] * s_x[b]: one super-block's 8 blocks per operation
        for (int64_t b = 0; b < nsb * kSubs; b += kSubs) {
#pragma GCC unroll 8
            for (int t = 0; t < NT; ++t) {
                const __m256 s = _mm256_loadu_ps(acts[t].s + b);
#pragma GCC unroll 8
                for (int r = 0; r < R; ++r)
                    acc[r][t] = _mm256_fmadd_ps(_mm256_loadu_ps(rows[r].mn + b), s, acc[r][t]);
            }
        }
    }
    for (int64_t s = 0; s < nsb; ++s) {
        float scale[R][NT];  // d_w[s] * d_x[s]
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
            for (int t = 0; t < NT; ++t) scale[r][t] = rows[r].d[s] * acts[t].d[s];
        for (int h = 0; h < 2; ++h) {
            const int64_t at = s * kSuper + h * kHalf;
            __m256i sum[R][NT];
#pragma GCC unroll 8
            for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
                for (int t = 0; t < NT; ++t) sum[r][t] = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int k = 0; k < kHalf / 16; ++k) {
                __m256i w[R];
#pragma GCC unroll 8
                for (int r = 0; r < R; ++r)
                    w[r] = _mm256_load_si256(
                        reinterpret_cast<const __m256i*>(rows[r].q + at + 16 * k));
#pragma GCC unroll 8
                for (int t = 0; t < NT; ++t) {
                    const __m256i a = _mm256_loadu_si256(
                        reinterpret_cast<const __m256i*>(acts[t].q + at + 16 * k));
#pragma GCC unroll 8
                    for (int r = 0; r < R; ++r) sum[r][t] = madd_into(sum[r][t], w[r], a);
                }
            }
#pragma GCC unroll 8
            for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
                for (int t = 0; t < NT; ++t)
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[r][t]),
                                                _mm256_set1_ps(scale[r][t]), acc[r][t]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t) out[t][r] = hsum(acc[r][t]);
}

// 2 rows x 3 tokens: 6 integer and 6 float accumulators, 2 weight vectors and one activation
// vector in the 16 registers.
struct Tiles256 {
    static constexpr int kRows = 2, kTokens = 3, kDecoded = 8 * kRows;
    template <bool kMin, int R, int NT>
    static void tile(const KRow* rows, const TokAct* acts, int64_t nsb, float* const* out) {
        avx2::tile<kMin, R, NT>(rows, acts, nsb, out);
    }
};

}  // namespace

bool gemm_k_folded(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y, int64_t ldy,
                   int64_t r0, int64_t r1) {
    return gemm_k::gemm_k_folded<Store256, Tiles256>(w, acts, n_tok, y, ldy, r0, r1);
}

}  // namespace ffnskip::cpu::avx2
