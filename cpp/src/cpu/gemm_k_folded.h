// The K-quant prompt matmul with folded sub-block scales, shared by its AVX2 and AVX-512 VNNI
// tiles (kernels_gemm_k_avx2.cpp, kernels_gemm_k_avx512vnni.cpp). Activations carry one scale
// per 256-value super-block (kernels_impl.h), so a super-block's dot product sums in integers
// once the weights' 6-bit (Q6_K: 8-bit) sub-block scales are folded into their codes:
//   dot(W row, x) = sum_s d_w[s] * d_x[s] * sum_i (sc * code)[i] * q_x[i] + sum_b min_w[b] * s_x[b]
// Each row is decoded once per chunk of tokens into those folded 16-bit codes (|sc * code| <=
// 4096), its super-block scales and its per-32 min terms; a tile of rows x tokens then sums
// integer products per super-block. Here: the decoders (given the ISA's widening store), the row
// and token records, and the driver that chunks tokens and decodes rows.
//
// Everything is in an anonymous namespace: each kernel file compiles its own copy with its own
// ISA flags (an inline function with external linkage would be one weak symbol, and the linker
// could keep the AVX-512 build of it for every caller; tools/check_isa_objects.sh).
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>

#include "cpu/kernels_avx2.h"
#include "cpu/kernels_impl.h"
#include "cpu/repack.h"
#include "cpu/thread_scratch.h"
#include "ggml_types.h"
#include "quants.h"
#include "weight_view.h"

namespace ffnskip::cpu {
namespace {
namespace gemm_k {

constexpr int kSuper = 256;
constexpr int kSubs = kSuper / kActBlock;  // blocks of 32 per super-block

// One weight row as the tiles read it.
struct KRow {
    int16_t* q;  // nsb * 256 codes times their sub-block scale, 64-byte aligned
    float* d;    // nsb super-block scales
    float* mn;   // nsb * 8 additive min terms (types with a min only)
};

// One token's prepared activations: codes, per-super-block scales (contiguous, copied out of the
// per-block scales) and per-block sums.
struct TokAct {
    const int16_t* q;
    const float* d;  // nsb
    const float* s;  // nsb * 8
};

// out[t][r] = dot(row r, token t) for nr rows and nt tokens.
using TileFn = void (*)(const KRow*, const TokAct*, int64_t, float* const*);

// Q4_K / Q5_K: the super-block scale d and the 8 min terms -(dmin * m_j), rounded as the scalar
// path rounds them.
inline void scale_and_mins(uint16_t d16, uint16_t dmin16, const uint8_t* m, float* d, float* mn) {
    *d = avx2::half(d16);
    const float dmin = avx2::half(dmin16);
    for (int j = 0; j < kSubs; ++j) mn[j] = -(dmin * static_cast<float>(m[j]));
}

// The per-type decoders: super-block `sb` (one GGUF block) -> 256 folded codes, its scale and
// (kMin) the 8 min terms. Store::unsigned32(dst, codes, scale) writes 32 byte codes 0..63 as
// 16-bit values times scale; Store::signed16x2(dst, codes, s0, s1) 32 signed byte codes, the
// first 16 times s0 and the last 16 times s1.
template <bool kGrouped, class Store>
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
            Store::unsigned32(q + 64 * p, _mm256_and_si256(v, low), sc[2 * p]);
            Store::unsigned32(q + 64 * p + 32, _mm256_and_si256(_mm256_srli_epi16(v, 4), low),
                              sc[2 * p + 1]);
        }
    }
};

template <class Store>
struct DecodeQ5K {
    static constexpr bool kMin = true;
    static constexpr size_t kBytes = sizeof(block_q5_K);
    static void run(const uint8_t* sb, int16_t* q, float* d, float* mn) {
        const auto& b = *reinterpret_cast<const block_q5_K*>(sb);
        uint8_t sc[8], m[8];
        avx2::scale_min_k4(b.scales, sc, m);
        scale_and_mins(b.d, b.dmin, m, d, mn);
        for (int j = 0; j < kSubs; ++j)
            Store::unsigned32(q + 32 * j, avx2::q5k_codes(b.qs, b.qh, j), sc[j]);
    }
};

// Q6_K: codes - 32 (signed) times an int8 scale per 16 values; no min.
template <class Store>
struct DecodeQ6K {
    static constexpr bool kMin = false;
    static constexpr size_t kBytes = sizeof(block_q6_K);
    static void run(const uint8_t* sb, int16_t* q, float* d, float*) {
        const auto& b = *reinterpret_cast<const block_q6_K*>(sb);
        *d = avx2::half(b.d);
        for (int j = 0; j < kSubs; ++j) {
            const __m256i c = _mm256_sub_epi8(avx2::q6k_codes(b, j), _mm256_set1_epi8(32));
            Store::signed16x2(q + 32 * j, c, b.scales[2 * j], b.scales[2 * j + 1]);
        }
    }
};

template <class D>
void decode_row(const uint8_t* row, int64_t nsb, int16_t* q, float* d, float* mn) {
    for (int64_t s = 0; s < nsb; ++s)
        D::run(row + s * D::kBytes, q + s * kSuper, d + s, D::kMin ? mn + s * kSubs : nullptr);
}

// Tokens per chunk: as many as keep their 16-bit activations within about 1 MiB (in L2 while a
// thread's rows pass), 64 to 256; each row is decoded once per chunk (Qwen2.5-1.5B, 256-token
// prompt: 256 tokens per chunk of its 1536-column matrices instead of 64 cut the decoding from ~9%
// of the prompt's time to ~2%).
constexpr int64_t kMaxTokChunk = 256;
inline int64_t tokens_per_chunk(int64_t cols) {
    constexpr int64_t kActBudget = int64_t{1} << 20;
    return std::clamp<int64_t>(kActBudget / (cols * int64_t{sizeof(int16_t)}), 64, kMaxTokChunk);
}

// A kernel file's tiles: struct Tiles { static constexpr int kRows, kTokens, kDecoded; template
// <bool kMin, int R, int NT> static void tile(const KRow*, const TokAct*, int64_t, float* const*);
// }, tile<kMin, R, NT> computing R <= kRows rows x NT <= kTokens tokens (kMin: with min terms).
// tile_for picks it from tables built here once for every kernel file.
template <class Tiles, bool kMin, int R, size_t... T>
TileFn tile_for_tokens(int nt, std::index_sequence<T...>) {
    constexpr TileFn kFns[] = {&Tiles::template tile<kMin, R, static_cast<int>(T) + 1>...};
    return kFns[nt - 1];
}

template <class Tiles, bool kMin, int R>
TileFn tile_for_rows(int nt) {
    return tile_for_tokens<Tiles, kMin, R>(nt, std::make_index_sequence<Tiles::kTokens>{});
}

template <class Tiles, bool kMin, size_t... R>
TileFn tile_for(int nr, int nt, std::index_sequence<R...>) {
    constexpr TileFn (*kByRows[])(int) = {&tile_for_rows<Tiles, kMin, static_cast<int>(R) + 1>...};
    return kByRows[nr - 1](nt);
}

// Rows [r0, r1) of w times n_tok tokens through tiles of at most Tiles::kRows x Tiles::kTokens.
// Tiles::kDecoded rows are decoded per pass, so a group of tokens' activations is read from L2
// once for all of them.
template <class D, class Tiles>
void drive(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y, int64_t ldy,
           int64_t r0, int64_t r1) {
    constexpr int kRows = Tiles::kRows, kTokens = Tiles::kTokens, kDecoded = Tiles::kDecoded;
    const int64_t nsb = w.cols / kSuper, nb = nsb * kSubs;
    const size_t astride = static_cast<size_t>(nb) * kActBytes32;
    // Decoded rows: codes, then super-block scales and min terms, each padded to 64 bytes.
    const size_t q_bytes = static_cast<size_t>(nsb) * kSuper * sizeof(int16_t);
    const size_t d_bytes = (static_cast<size_t>(nsb) * 4 + 63) / 64 * 64;
    const size_t mn_bytes = (static_cast<size_t>(nb) * 4 + 63) / 64 * 64;
    const size_t row_bytes = q_bytes + d_bytes + mn_bytes;
    auto* rows_mem =
        static_cast<uint8_t*>(thread_scratch(ScratchSlot::kGemmRows, kDecoded * row_bytes));
    auto* dx_mem = static_cast<float*>(
        thread_scratch(ScratchSlot::kGemmActs, kMaxTokChunk * static_cast<size_t>(nsb) * 4));
    KRow rows[kDecoded];
    for (int i = 0; i < kDecoded; ++i) {
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
            const int nr = static_cast<int>(std::min<int64_t>(r1 - r, kDecoded));
            for (int i = 0; i < nr; ++i)
                decode_row<D>(w.data + static_cast<size_t>(r + i) * w.row_bytes, nsb, rows[i].q,
                              rows[i].d, rows[i].mn);
            for (int64_t t = 0; t < nt_chunk; t += kTokens) {
                const int nt = static_cast<int>(std::min<int64_t>(nt_chunk - t, kTokens));
                for (int i = 0; i < nr; i += kRows) {
                    const int ni = std::min(kRows, nr - i);
                    float* out[kTokens];
                    for (int j = 0; j < nt; ++j) out[j] = y + (tc + t + j) * ldy + r + i;
                    tile_for<Tiles, D::kMin>(ni, nt, std::make_index_sequence<kRows>{})(
                        rows + i, tok + t, nsb, out);
                }
            }
            r += nr;
        }
    }
}

// The drive for w's type (plain or grouped Q4_K, Q5_K, Q6_K); false, doing nothing, for others.
template <class Store, class Tiles>
bool gemm_k_folded(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y, int64_t ldy,
                   int64_t r0, int64_t r1) {
    auto run = [&](auto decoder) {
        drive<decltype(decoder), Tiles>(w, acts, n_tok, y, ldy, r0, r1);
        return true;
    };
    switch (w.type) {
        case GGML_Q4_K:
            return run(DecodeQ4K<false, Store>{});
        case GGML_Q4_K | kGroupedFlag:
            return run(DecodeQ4K<true, Store>{});
        case GGML_Q5_K:
            return run(DecodeQ5K<Store>{});
        case GGML_Q6_K:
            return run(DecodeQ6K<Store>{});
        default:
            return false;
    }
}

}  // namespace gemm_k
}  // namespace
}  // namespace ffnskip::cpu
