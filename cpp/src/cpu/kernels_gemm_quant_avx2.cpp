// AVX2 integer matmul of quantized weights with several tokens' 16-bit activations (the prompt;
// also the last rows, fewer than 4, of a one-token call). From kDecodedMinTokens tokens on, each
// pair of rows is decoded once per chunk of 64 tokens into 16-bit codes, scales and mins (in L1),
// and a type-independent 2-row x 4-token tile runs on those (vpmaddwd + cvt + fma per block and
// (row, token)). Measured on the 2-core EPYC (thread CPU time, n_tok = 512): 57-72 GFLOP/s,
// against 47-54 for the 8-bit activations with per-tile decoding. Fewer tokens run the generic
// tile, which decodes the codes inside the tile. The types' decoders are in
// kernels_quant_blocks_avx2.h. K-quants at kDecodedMinTokens tokens or more go to the folded-scale
// tiles instead (gemm_k_folded.h: AVX-512 VNNI or AVX2, by gemm_lanes()).
#include <algorithm>
#include <atomic>
#include <vector>

#include "cpu/kernels_quant_blocks_avx2.h"

namespace ffnskip::cpu::avx2 {

namespace {

// Rows and token rows of one tile; tokens index prepared activation rows.
struct Tile {
    const uint8_t* rows[4];
    const uint8_t* acts[4];
    float* out[4][4];  // out[r][t]
    size_t ahead;      // decode: prefetch distance in bytes (the rows of a later tile)
};

// Blocks are processed in chunks. A first pass over a chunk collects each row's block scales and
// mins and multiplies the scales with the token's activation scales (8 blocks per instruction),
// so the integer pass does only cvt + fma per block and (row, token); the mins' contribution
// sum_b mn[b] * s[b] is a contiguous float dot product.
constexpr int64_t kChunk = 64;  // a multiple of every kGroup

template <class T, int R, int NT>
void tile(const Tile& tl, int64_t nb) {
    constexpr int G = T::kGroup;
    const int16_t* aq[NT];
    const float *ad[NT], *as[NT];
    for (int t = 0; t < NT; ++t) {
        aq[t] = reinterpret_cast<const int16_t*>(tl.acts[t]);
        ad[t] = reinterpret_cast<const float*>(tl.acts[t] + nb * kActBlock * sizeof(int16_t));
        as[t] = ad[t] + nb;
    }
    float total[R][NT] = {};
    __m256 acc[R][NT];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < NT; ++t) acc[r][t] = _mm256_setzero_ps();
    for (int64_t c0 = 0; c0 < nb; c0 += kChunk) {
        const int64_t c1 = std::min(nb, c0 + kChunk), n = c1 - c0, n8 = n & ~int64_t{7};
        alignas(32) float dws[R][kChunk];
        alignas(32) float mins[T::kMin ? R : 1][kChunk];
        alignas(32) float scale[R][NT][kChunk];  // dws[r][b] * ad[t][b]
        for (int64_t u = c0 / G; u < c1 / G; ++u) {
            for (int r = 0; r < R; ++r) {
                // Decode streams the weights from DRAM once: the hardware prefetcher alone
                // leaves it latency-bound at about half the bandwidth of a plain read.
                // One prefetch per cache line of the unit (a K-quant super-block spans 3-4).
                if constexpr (NT == 1) {
                    const char* p = reinterpret_cast<const char*>(tl.rows[r] + tl.ahead);
                    for (size_t off = 0; off < T::kUnitBytes; off += 64)
                        _mm_prefetch(p + u * T::kUnitBytes + off, _MM_HINT_T0);
                }
                T::scales(tl.rows[r], u, &dws[r][u * G - c0],
                          T::kMin ? &mins[r][u * G - c0] : nullptr);
            }
        }
        for (int r = 0; r < R; ++r) {
            for (int t = 0; t < NT; ++t) {
                int64_t b = 0;
                for (; b < n8; b += 8)
                    _mm256_store_ps(
                        &scale[r][t][b],
                        _mm256_mul_ps(_mm256_load_ps(&dws[r][b]), _mm256_loadu_ps(ad[t] + c0 + b)));
                for (; b < n; ++b) scale[r][t][b] = dws[r][b] * ad[t][c0 + b];
            }
        }
        for (int64_t u = c0 / G; u < c1 / G; ++u) {
            for (int j = 0; j < G; ++j) {
                const int64_t b = u * G + j;
                for (int r = 0; r < R; ++r) {
                    __m256i lo, hi;
                    T::codes(tl.rows[r], u, j, lo, hi);
                    for (int t = 0; t < NT; ++t) {
                        const auto* a = reinterpret_cast<const __m256i*>(aq[t] + b * kActBlock);
                        const __m256i p =
                            _mm256_add_epi32(_mm256_madd_epi16(lo, _mm256_loadu_si256(a)),
                                             _mm256_madd_epi16(hi, _mm256_loadu_si256(a + 1)));
                        acc[r][t] =
                            _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                            _mm256_broadcast_ss(&scale[r][t][b - c0]), acc[r][t]);
                    }
                }
            }
        }
        for (int r = 0; r < R; ++r) {
            for (int t = 0; t < NT; ++t) {
                if constexpr (T::kMin) {
                    int64_t b = 0;
                    __m256 m = _mm256_setzero_ps();
                    for (; b < n8; b += 8)
                        m = _mm256_fmadd_ps(_mm256_load_ps(&mins[r][b]),
                                            _mm256_loadu_ps(as[t] + c0 + b), m);
                    float ms = hsum(m);
                    for (; b < n; ++b) ms += mins[r][b] * as[t][c0 + b];
                    total[r][t] += ms;
                }
            }
        }
    }
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < NT; ++t) *tl.out[r][t] = total[r][t] + hsum(acc[r][t]);
}

// ---- prompt tiles on decoded rows -------------------------------------------------------------
// For many tokens a row's blocks are decoded once into 16-bit codes, scales and mins (in L1) and
// then reused by every group of tokens, so the tile below is the same for all weight types and
// its inner loop is just vpmaddwd + cvt + fma.
struct DecodedRow {
    const int16_t* q;  // nb * 32 codes, in activation order
    const float* dw;   // nb block scales
    const float* mn;   // nb additive mins (types with a min only)
};

template <class T>
void decode_plain_row(const uint8_t* row, int64_t nb, int16_t* q, float* dw, float* mn) {
    constexpr int G = T::kGroup;
    for (int64_t u = 0; u < nb / G; ++u) {
        T::scales(row, u, dw + u * G, T::kMin ? mn + u * G : nullptr);
        for (int j = 0; j < G; ++j) {
            __m256i lo, hi;
            T::codes(row, u, j, lo, hi);
            auto* dst = reinterpret_cast<__m256i*>(q + (u * G + j) * kActBlock);
            _mm256_store_si256(dst, lo);
            _mm256_store_si256(dst + 1, hi);
        }
    }
}

// Grouped rows (repack.h): 8 scales (and mins) per conversion, then the plain tail.
template <class T>
void decode_grouped_row(const uint8_t* row, int64_t nb, int16_t* q, float* dw, float* mn) {
    const int64_t full = nb / kGroupBlocks * kGroupBlocks;
    for (int64_t g0 = 0; g0 < full; g0 += kGroupBlocks) {
        const uint8_t* g = row + g0 * T::kBlock;
        _mm256_storeu_ps(dw + g0, T::halves(g, 0));
        if constexpr (T::kMin) _mm256_storeu_ps(mn + g0, T::halves(g, 1));
        for (int j = 0; j < kGroupBlocks; ++j) {
            __m256i lo, hi;
            T::codes(g, j, lo, hi);
            auto* dst = reinterpret_cast<__m256i*>(q + (g0 + j) * kActBlock);
            _mm256_store_si256(dst, lo);
            _mm256_store_si256(dst + 1, hi);
        }
    }
    decode_plain_row<typename T::Plain>(row + full * T::kBlock, nb - full, q + full * kActBlock,
                                        dw + full, mn + full);
}

// One row's codes, block scales and mins, zero-padded to a multiple of 8 blocks.
template <class T>
void decode_row(const uint8_t* row, int64_t nb, int16_t* q, float* dw, float* mn) {
    for (int64_t b = nb; b < ((nb + 7) & ~int64_t{7}); ++b) dw[b] = mn[b] = 0.0f;
    if constexpr (IsGrouped<T>::value)
        decode_grouped_row<T>(row, nb, q, dw, mn);
    else
        decode_plain_row<T>(row, nb, q, dw, mn);
}

template <bool kMin, int R, int NT>
void tile_decoded(const DecodedRow* rows, const uint8_t* const* acts, int64_t nb,
                  float* const* out) {
    const int16_t* aq[NT];
    const float *ad[NT], *as[NT];
    for (int t = 0; t < NT; ++t) {
        aq[t] = reinterpret_cast<const int16_t*>(acts[t]);
        ad[t] = reinterpret_cast<const float*>(acts[t] + nb * kActBlock * sizeof(int16_t));
        as[t] = ad[t] + nb;
    }
    // The last 8 blocks may be fewer: masked loads read the activation scales and sums there
    // (the decoded scales and mins are zero-padded to 8).
    const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(nb & 7)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    // The mins' contribution sum_b mn[b] * s[b] starts the accumulators: its lanes (8 blocks)
    // and the integer pass's lanes (8 values) are all summed at the end.
    __m256 acc[R][NT];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < NT; ++t) acc[r][t] = _mm256_setzero_ps();
    for (int64_t c0 = 0; c0 < nb; c0 += kChunk) {
        const int64_t n = std::min(nb - c0, kChunk);
        alignas(32) float scale[R][NT][kChunk];  // dw[r][b] * ad[t][b]
        for (int64_t b = 0; b < n; b += 8) {
            const bool full = b + 8 <= n;
            for (int t = 0; t < NT; ++t) {
                const float* pd = ad[t] + c0 + b;
                const __m256 d = full ? _mm256_loadu_ps(pd) : _mm256_maskload_ps(pd, tail);
                __m256 sv = _mm256_setzero_ps();
                if constexpr (kMin) {
                    const float* ps = as[t] + c0 + b;
                    sv = full ? _mm256_loadu_ps(ps) : _mm256_maskload_ps(ps, tail);
                }
                for (int r = 0; r < R; ++r) {
                    _mm256_store_ps(&scale[r][t][b],
                                    _mm256_mul_ps(_mm256_load_ps(rows[r].dw + c0 + b), d));
                    if constexpr (kMin)
                        acc[r][t] =
                            _mm256_fmadd_ps(_mm256_load_ps(rows[r].mn + c0 + b), sv, acc[r][t]);
                }
            }
        }
        for (int64_t b = 0; b < n; ++b) {
            for (int r = 0; r < R; ++r) {
                const auto* w = reinterpret_cast<const __m256i*>(rows[r].q + (c0 + b) * kActBlock);
                const __m256i lo = _mm256_load_si256(w), hi = _mm256_load_si256(w + 1);
                for (int t = 0; t < NT; ++t) {
                    const auto* a = reinterpret_cast<const __m256i*>(aq[t] + (c0 + b) * kActBlock);
                    const __m256i p =
                        _mm256_add_epi32(_mm256_madd_epi16(lo, _mm256_loadu_si256(a)),
                                         _mm256_madd_epi16(hi, _mm256_loadu_si256(a + 1)));
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                                _mm256_broadcast_ss(&scale[r][t][b]), acc[r][t]);
                }
            }
        }
    }
    // Fully unrolled: a rolled loop indexes acc in memory, and the compiler then stores the
    // accumulators on every update of the inner loop.
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
        for (int t = 0; t < NT; ++t) out[t][r] = hsum(acc[r][t]);
}

// ---- drivers -------------------------------------------------------------------------------
using TileFn = void (*)(const Tile&, int64_t);

template <class T>
TileFn tile_fn(int r, int nt) {
    switch (r * 8 + nt) {
        case 2 * 8 + 3:
            return tile<T, 2, 3>;
        case 2 * 8 + 2:
            return tile<T, 2, 2>;
        case 1 * 8 + 3:
            return tile<T, 1, 3>;
        case 1 * 8 + 2:
            return tile<T, 1, 2>;
        default:
            return tile<T, 1, 1>;
    }
}

using DecodedTileFn = void (*)(const DecodedRow*, const uint8_t* const*, int64_t, float* const*);

template <bool kMin>
DecodedTileFn decoded_tile_fn(int r, int nt) {
    constexpr DecodedTileFn kFns[2][4] = {
        {tile_decoded<kMin, 1, 1>, tile_decoded<kMin, 1, 2>, tile_decoded<kMin, 1, 3>,
         tile_decoded<kMin, 1, 4>},
        {tile_decoded<kMin, 2, 1>, tile_decoded<kMin, 2, 2>, tile_decoded<kMin, 2, 3>,
         tile_decoded<kMin, 2, 4>},
    };
    return kFns[r - 1][nt - 1];
}

// From this many tokens on, rows are decoded once per chunk of tokens (decode_row) instead of
// once per tile.
constexpr int64_t kDecodedMinTokens = 4;
// Tokens are walked in chunks whose activations stay in L2 while a thread's rows stream past.
constexpr int64_t kTokChunk = 64;
constexpr int kPromptRows = 2, kPromptTokens = 4;
// Rows decoded per pass: a group of 4 tokens' activations is loaded from L2 once and then reused
// from L1 by the tiles of all these rows (SmolLM2 512-token prompt: +1-3% over 2 rows; neutral on
// Qwen2.5-1.5B).
constexpr int kDecodedRows = 8;

template <class T>
void drive_decoded(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y, int64_t ldy,
                   int64_t r0, int64_t r1) {
    const int64_t nb = w.cols / kActBlock;
    const size_t astride = static_cast<size_t>(nb) * kActBytes32;
    // Per-thread scratch, reused across calls (the engine calls from its pool threads): per row
    // nb * 32 codes, then nb scales and nb mins (each padded to 8 floats), 32-byte aligned.
    const size_t nf = static_cast<size_t>((nb + 7) & ~int64_t{7});
    const size_t row_bytes = static_cast<size_t>(nb) * kActBlock * sizeof(int16_t) + 2 * nf * 4;
    thread_local std::vector<uint8_t> scratch;
    scratch.resize(kDecodedRows * row_bytes + 32);
    uint8_t* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(scratch.data()) + 31) &
                                               ~uintptr_t{31});
    int16_t* q[kDecodedRows];
    float *dw[kDecodedRows], *mn[kDecodedRows];
    DecodedRow rows[kDecodedRows];
    for (int i = 0; i < kDecodedRows; ++i) {
        q[i] = reinterpret_cast<int16_t*>(base + i * row_bytes);
        dw[i] = reinterpret_cast<float*>(q[i] + nb * kActBlock);
        mn[i] = dw[i] + nf;
        rows[i] = {q[i], dw[i], mn[i]};
    }
    for (int64_t tc = 0; tc < n_tok; tc += kTokChunk) {
        const int64_t tc1 = std::min(n_tok, tc + kTokChunk);
        for (int64_t r = r0; r < r1;) {
            const int nr = static_cast<int>(std::min<int64_t>(r1 - r, kDecodedRows));
            for (int i = 0; i < nr; ++i) {
                decode_row<T>(w.data + static_cast<size_t>(r + i) * w.row_bytes, nb, q[i], dw[i],
                              mn[i]);
            }
            for (int64_t t = tc; t < tc1;) {
                const int nt = static_cast<int>(std::min<int64_t>(tc1 - t, kPromptTokens));
                const uint8_t* ta[kPromptTokens];
                for (int j = 0; j < nt; ++j) ta[j] = acts + static_cast<size_t>(t + j) * astride;
                for (int i = 0; i < nr; i += kPromptRows) {
                    const int ni = std::min(kPromptRows, nr - i);
                    float* out[kPromptTokens];
                    for (int j = 0; j < nt; ++j) out[j] = y + (t + j) * ldy + r + i;
                    decoded_tile_fn<T::kMin>(ni, nt)(rows + i, ta, nb, out);
                }
                t += nt;
            }
            r += nr;
        }
    }
}

constexpr size_t kPrefetchTiles = 2;

// Fewer than kDecodedMinTokens tokens: codes are decoded inside the tile, 2 rows x 2-3 tokens,
// or 1 row x 1 token for the last rows (fewer than 4) of a one-token call.
template <class T>
void drive_plain(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y, int64_t ldy,
                 int64_t r0, int64_t r1) {
    if (n_tok >= kDecodedMinTokens) return drive_decoded<T>(w, acts, n_tok, y, ldy, r0, r1);
    const int64_t nb = w.cols / kActBlock;
    const size_t astride = static_cast<size_t>(nb) * kActBytes32;
    const int rstep = n_tok == 1 ? 1 : 2;
    for (int64_t r = r0; r < r1;) {
        const int nr = r1 - r >= rstep ? rstep : 1;
        Tile tl;
        tl.ahead = kPrefetchTiles * rstep * w.row_bytes;
        for (int i = 0; i < nr; ++i) tl.rows[i] = w.data + static_cast<size_t>(r + i) * w.row_bytes;
        for (int j = 0; j < n_tok; ++j) tl.acts[j] = acts + static_cast<size_t>(j) * astride;
        for (int i = 0; i < nr; ++i)
            for (int j = 0; j < n_tok; ++j) tl.out[i][j] = y + j * ldy + (r + i);
        tile_fn<T>(nr, static_cast<int>(n_tok))(tl, nb);
        r += nr;
    }
}

template <class T>
void drive(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y, int64_t ldy,
           int64_t r0, int64_t r1) {
    if constexpr (IsGrouped<T>::value)  // grouped rows: decoded here (one token: tile_1tok_grouped)
        drive_decoded<T>(w, acts, n_tok, y, ldy, r0, r1);
    else
        drive_plain<T>(w, acts, n_tok, y, ldy, r0, r1);
}

// The K-quant prompt tile's lane width (kernels.h gemm_lanes): 512 from the start where the CPU
// can.
std::atomic<int> g_gemm_lanes{cpu_has_avx512_vnni() ? 512 : 256};

}  // namespace

void gemm_quant(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y, int64_t ldy,
                int64_t r0, int64_t r1) {
    if (n_tok >= kDecodedMinTokens) {
        const bool vnni = g_gemm_lanes.load(std::memory_order_relaxed) == 512;
        if (vnni ? avx512vnni::gemm_k(w, acts, n_tok, y, ldy, r0, r1)
                 : gemm_k_folded(w, acts, n_tok, y, ldy, r0, r1))
            return;
    }
    with_decoder(w.type, [&](auto tag) {
        drive<typename decltype(tag)::type>(w, acts, n_tok, y, ldy, r0, r1);
    });
}

}  // namespace ffnskip::cpu::avx2

namespace ffnskip::cpu {

int gemm_lanes() {
    return avx2::g_gemm_lanes.load();
}

bool set_gemm_lanes(int bits) {
    if (bits != 256 && !(bits == 512 && cpu_has_avx512_vnni())) return false;
    avx2::g_gemm_lanes.store(bits);
    return true;
}

}  // namespace ffnskip::cpu
