// AVX-512 VNNI prompt matmul for the K-quants (Q4_K plain or grouped, Q5_K, Q6_K), several
// tokens at once. Activations carry one scale per 256-value super-block (kernels_impl.h), so a
// super-block's whole dot product can be summed in integers once the weights' 6-bit (Q6_K: 8-bit)
// sub-block scales are folded into their codes:
//   dot(W row, x) = sum_s d_w[s] * d_x[s] * sum_i (sc * code)[i] * q_x[i] + sum_b min_w[b] * s_x[b]
// Each row is decoded once per chunk of tokens into those folded 16-bit codes (|sc * code| <=
// 4096), its super-block scales and its per-32 min terms; the tile then spends per super-block and
// (row, token) 8 vpdpwssd (32 multiply-adds each), one conversion and one FMA, against 8 x 6
// AVX2 operations per super-block in the per-32-block tile of kernels_gemm_quant_avx2.cpp.
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

#include <algorithm>
#include <cstring>

#include "cpu/kernels_avx2.h"
#include "cpu/kernels_impl.h"
#include "cpu/repack.h"
#include "cpu/thread_scratch.h"
#include "ggml_types.h"
#include "quants.h"

namespace ffnskip::cpu::avx512vnni {

namespace {

constexpr int kSuper = 256;
constexpr int kSubs = kSuper / kActBlock;  // blocks of 32 per super-block

// One weight row as the tile reads it.
struct KRow {
    int16_t* q;  // nsb * 256 codes times their sub-block scale, 64-byte aligned
    float* d;    // nsb super-block scales
    float* mn;   // nsb * 8 additive min terms (types with a min only)
};

// Codes 0..15 (or 0..31, 0..63) of one block of 32 as bytes -> 16-bit, times the block's scale.
inline void store_scaled_u8(int16_t* dst, __m256i codes, int scale) {
    _mm512_store_si512(dst, _mm512_mullo_epi16(_mm512_cvtepu8_epi16(codes),
                                               _mm512_set1_epi16(static_cast<int16_t>(scale))));
}

// Q4_K / Q5_K: the super-block scale d and the 8 min terms -(dmin * m_j), rounded as the scalar
// path rounds them.
inline void scale_and_mins(uint16_t d16, uint16_t dmin16, const uint8_t* m, float* d, float* mn) {
    *d = avx2::half(d16);
    const float dmin = avx2::half(dmin16);
    for (int j = 0; j < kSubs; ++j) mn[j] = -(dmin * static_cast<float>(m[j]));
}

// The per-type decoders: super-block `sb` (one GGUF block) -> 256 folded codes, its scale and
// (kMin) the 8 min terms.
template <bool kGrouped>
struct DecodeQ4K {
    static constexpr bool kMin = true;
    static constexpr size_t kBytes = sizeof(block_q4_K);
    static void run(const uint8_t* sb, int16_t* q, float* d, float* mn) {
        const auto& b = *reinterpret_cast<const block_q4_K*>(sb);
        uint8_t sc[8], m[8];
        if constexpr (kGrouped)
            grouped_q4k_scale_mins(b.scales, sc, m);
        else
            avx2::scale_min_k4(b.scales, sc, m);
        scale_and_mins(b.d, b.dmin, m, d, mn);
        const __m256i low = _mm256_set1_epi8(0x0F);
        for (int p = 0; p < 4; ++p) {  // blocks 2p and 2p + 1 share 32 bytes (low, high nibbles)
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * p));
            store_scaled_u8(q + 64 * p, _mm256_and_si256(v, low), sc[2 * p]);
            store_scaled_u8(q + 64 * p + 32, _mm256_and_si256(_mm256_srli_epi16(v, 4), low),
                            sc[2 * p + 1]);
        }
    }
};

struct DecodeQ5K {
    static constexpr bool kMin = true;
    static constexpr size_t kBytes = sizeof(block_q5_K);
    static void run(const uint8_t* sb, int16_t* q, float* d, float* mn) {
        const auto& b = *reinterpret_cast<const block_q5_K*>(sb);
        uint8_t sc[8], m[8];
        avx2::scale_min_k4(b.scales, sc, m);
        scale_and_mins(b.d, b.dmin, m, d, mn);
        for (int j = 0; j < kSubs; ++j)
            store_scaled_u8(q + 32 * j, avx2::q5k_codes(b.qs, b.qh, j), sc[j]);
    }
};

// Q6_K: codes - 32 (signed) times an int8 scale per 16 values; no min.
struct DecodeQ6K {
    static constexpr bool kMin = false;
    static constexpr size_t kBytes = sizeof(block_q6_K);
    static void run(const uint8_t* sb, int16_t* q, float* d, float*) {
        const auto& b = *reinterpret_cast<const block_q6_K*>(sb);
        *d = avx2::half(b.d);
        for (int j = 0; j < kSubs; ++j) {
            const __m256i c = _mm256_sub_epi8(avx2::q6k_codes(b, j), _mm256_set1_epi8(32));
            const __m512i scale = _mm512_inserti64x4(_mm512_set1_epi16(b.scales[2 * j]),
                                                     _mm256_set1_epi16(b.scales[2 * j + 1]), 1);
            _mm512_store_si512(q + 32 * j, _mm512_mullo_epi16(_mm512_cvtepi8_epi16(c), scale));
        }
    }
};

template <class D>
void decode_row(const uint8_t* row, int64_t nsb, int16_t* q, float* d, float* mn) {
    for (int64_t s = 0; s < nsb; ++s)
        D::run(row + s * D::kBytes, q + s * kSuper, d + s, D::kMin ? mn + s * kSubs : nullptr);
}

// One token's prepared activations: codes, per-super-block scales (contiguous, copied out of the
// per-block scales) and per-block sums.
struct TokAct {
    const int16_t* q;
    const float* d;  // nsb
    const float* s;  // nsb * 8
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
constexpr int kRows = 3, kTokens = 4;
using TileFn = void (*)(const KRow*, const TokAct*, int64_t, float* const*);

template <bool kMin, int R>
TileFn tile_for_tokens(int nt) {
    constexpr TileFn kFns[kTokens] = {tile<kMin, R, 1>, tile<kMin, R, 2>, tile<kMin, R, 3>,
                                      tile<kMin, R, 4>};
    return kFns[nt - 1];
}

template <bool kMin>
TileFn tile_fn(int nr, int nt) {
    switch (nr) {
        case 1:
            return tile_for_tokens<kMin, 1>(nt);
        case 2:
            return tile_for_tokens<kMin, 2>(nt);
        default:
            return tile_for_tokens<kMin, 3>(nt);
    }
}

// Tokens per chunk: as many as keep their 16-bit activations within about 1 MiB (in L2 while a
// thread's rows pass), 64 to 256; each row is decoded once per chunk (Qwen2.5-1.5B, 256-token
// prompt: 256 tokens per chunk of its 1536-column matrices instead of 64 cut the decoding from ~9%
// of the prompt's time to ~2%). Rows decoded per pass: a group of tokens' activations is read
// from L2 once for all of them.
constexpr int64_t kMaxTokChunk = 256;
int64_t tokens_per_chunk(int64_t cols) {
    constexpr int64_t kActBudget = int64_t{1} << 20;
    return std::clamp<int64_t>(kActBudget / (cols * int64_t{sizeof(int16_t)}), 64, kMaxTokChunk);
}
constexpr int kDecodedRows = 4 * kRows;

template <class D>
void drive(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y, int64_t ldy,
           int64_t r0, int64_t r1) {
    const int64_t nsb = w.cols / kSuper, nb = nsb * kSubs;
    const size_t astride = static_cast<size_t>(nb) * kActBytes32;
    // Decoded rows: codes, then super-block scales and min terms, each padded to 64 bytes.
    const size_t q_bytes = static_cast<size_t>(nsb) * kSuper * sizeof(int16_t);
    const size_t d_bytes = (static_cast<size_t>(nsb) * 4 + 63) / 64 * 64;
    const size_t mn_bytes = (static_cast<size_t>(nb) * 4 + 63) / 64 * 64;
    const size_t row_bytes = q_bytes + d_bytes + mn_bytes;
    auto* rows_mem =
        static_cast<uint8_t*>(thread_scratch(ScratchSlot::kGemmRows, kDecodedRows * row_bytes));
    auto* dx_mem = static_cast<float*>(
        thread_scratch(ScratchSlot::kGemmActs, kMaxTokChunk * static_cast<size_t>(nsb) * 4));
    KRow rows[kDecodedRows];
    for (int i = 0; i < kDecodedRows; ++i) {
        uint8_t* base = rows_mem + i * row_bytes;
        rows[i] = {reinterpret_cast<int16_t*>(base), reinterpret_cast<float*>(base + q_bytes),
                   reinterpret_cast<float*>(base + q_bytes + d_bytes)};
    }
    TokAct tok[kMaxTokChunk];
    const int64_t chunk = tokens_per_chunk(w.cols);
    for (int64_t tc = 0; tc < n_tok; tc += chunk) {
        const int64_t nt_chunk = std::min(n_tok - tc, chunk);
        for (int64_t t = 0; t < nt_chunk; ++t) {
            const uint8_t* a = acts + static_cast<size_t>(tc + t) * astride;
            const auto* d = reinterpret_cast<const float*>(a + nb * kActBlock * sizeof(int16_t));
            float* dx = dx_mem + t * nsb;
            for (int64_t s = 0; s < nsb; ++s) dx[s] = d[s * kSubs];  // one scale per super-block
            tok[t] = {reinterpret_cast<const int16_t*>(a), dx, d + nb};
        }
        for (int64_t r = r0; r < r1;) {
            const int nr = static_cast<int>(std::min<int64_t>(r1 - r, kDecodedRows));
            for (int i = 0; i < nr; ++i)
                decode_row<D>(w.data + static_cast<size_t>(r + i) * w.row_bytes, nsb, rows[i].q,
                              rows[i].d, rows[i].mn);
            for (int64_t t = 0; t < nt_chunk; t += kTokens) {
                const int nt = static_cast<int>(std::min<int64_t>(nt_chunk - t, kTokens));
                for (int i = 0; i < nr; i += kRows) {
                    const int ni = std::min(kRows, nr - i);
                    float* out[kTokens];
                    for (int j = 0; j < nt; ++j) out[j] = y + (tc + t + j) * ldy + r + i;
                    tile_fn<D::kMin>(ni, nt)(rows + i, tok + t, nsb, out);
                }
            }
            r += nr;
        }
    }
}

}  // namespace

bool gemm_k(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y, int64_t ldy,
            int64_t r0, int64_t r1) {
    switch (w.type) {
        case GGML_Q4_K:
            drive<DecodeQ4K<false>>(w, acts, n_tok, y, ldy, r0, r1);
            return true;
        case GGML_Q4_K | kGroupedFlag:
            drive<DecodeQ4K<true>>(w, acts, n_tok, y, ldy, r0, r1);
            return true;
        case GGML_Q5_K:
            drive<DecodeQ5K>(w, acts, n_tok, y, ldy, r0, r1);
            return true;
        case GGML_Q6_K:
            drive<DecodeQ6K>(w, acts, n_tok, y, ldy, r0, r1);
            return true;
        default:
            return false;
    }
}

}  // namespace ffnskip::cpu::avx512vnni
