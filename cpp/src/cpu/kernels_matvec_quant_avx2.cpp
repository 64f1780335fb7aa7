// AVX2 integer matmul of quantized weights with one token's 16-bit activations (decode): tiles of
// 4 rows (independent accumulation chains) decode the weight codes inside the tile and prefetch
// the rows of a later tile, since decode streams every weight once from DRAM. The last rows
// (fewer than 4) go through the prompt file's tiles (gemm_quant). The types' decoders are in
// kernels_quant_blocks_avx2.h. Also here: the serving step's several-token variants of these tiles
// (matmul_each_token), each token's outputs bitwise as the one-token tiles give them.
#include "cpu/kernels_quant_blocks_avx2.h"

namespace ffnskip::cpu::avx2 {

namespace {

// ---- decode (one token) for the types with a scale in every 32-block ----------------------
// Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 carry an f16 scale (and min) in each block of 32. The generic
// tile (kernels_gemm_quant_avx2.cpp) gathers them in a pre-pass into scale arrays; at one token
// that pass (a conversion and two stores per block and row) cost as much as the integer work. Here
// each block's scale pair is converted inline and multiplied with the activation's (d, s) pair, and
// the product is broadcast from a register, so one token costs ~12 instructions per block and row.
// Four rows share each activation load; the accumulators stay in registers (fully unrolled rows).
// The prefetcher is told about the tile at least `kDecodeAheadBytes` ahead (whole tiles), spread
// over the block loop (4096 against 2048: Q4_1 +5%, the others within noise; 8192 no better).
constexpr size_t kDecodeAheadBytes = 4096;
constexpr int kDecodeRows = 4;

// Prefetches into L2 the lines that start in [from, to). The grouped and K-quant tiles call it
// with consecutive spans of the stream ahead, so each line is asked for once and a line or two
// at a time between the products. They used to ask for a whole group's or super-block's lines
// (9-10) at once into L1, which left the line fill buffers full while the tile waited for its own
// rows. Measured on the 2-core Xeon (Sapphire Rapids), one thread streaming 1536 x 1536
// matrices (ffnskip_native.kernel_bandwidth, 3 rounds interleaved with the old build): Q4_1
// 8.2-9.0 -> 10.8-11.0 GB/s, Q4_K 8.7-8.9 -> 9.4-9.7, Q6_K 7.9-8.2 -> 9.7-10.1 (1-thread read:
// ~15). Decode at 2 threads: Qwen2.5-1.5B Q4_K_M +11%, 0.5B +20%, SmolLM2 Q4_1 +10-21%. The
// plain tile (Q8_0, Q5_0) keeps its per-block L1 prefetch: this one made Q8_0 14.5 -> 12.4.
__attribute__((always_inline)) inline void prefetch_span(const char* from, const char* to) {
    const uintptr_t a = (reinterpret_cast<uintptr_t>(from) + 63) & ~uintptr_t{63};
    for (const char* p = reinterpret_cast<const char*>(a); p < to; p += 64)
        _mm_prefetch(p, _MM_HINT_T1);
}

// One plain 32-block of 4 rows at one token, the step of the one-token tiles: block b of the
// plain blocks starting `base` bytes into each of `rows`, against activation block ab. The block's
// (d_w, m_w) halves are converted inline and multiplied with the activation's (d_x, s_x); acc gains
// codes . x * d_w d_x, lane 1 of mins m_w s_x.
template <class T>
__attribute__((always_inline)) inline void plain_block_1tok(const uint8_t* const* rows, size_t base,
                                                            int64_t b, const int16_t* aq,
                                                            const float* ad, const float* as,
                                                            int64_t ab, __m256* acc, __m128* mins) {
    using Block = typename T::Block;
    constexpr bool kMin = T::kMin;
    const auto* a = reinterpret_cast<const __m256i*>(aq + ab * kActBlock);
    const __m256i a0 = _mm256_loadu_si256(a), a1 = _mm256_loadu_si256(a + 1);
    const __m128 xds =
        kMin ? _mm_unpacklo_ps(_mm_load_ss(ad + ab), _mm_load_ss(as + ab)) : _mm_load_ss(ad + ab);
#pragma GCC unroll 4
    for (int r = 0; r < kDecodeRows; ++r) {
        // (d_w, m_w) are the block's first two halves (d alone for the types without a min).
        const uint8_t* row = rows[r] + base;
        const Block& blk = reinterpret_cast<const Block*>(row)[b];
        uint32_t dm16 = blk.d;
        if constexpr (kMin) std::memcpy(&dm16, &blk, 4);
        const __m128 ds = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dm16))), xds);
        if constexpr (kMin) mins[r] = _mm_add_ps(mins[r], ds);
        __m256i lo, hi;
        T::codes(row, b, 0, lo, hi);
        const __m256i p = _mm256_add_epi32(_mm256_madd_epi16(lo, a0), _mm256_madd_epi16(hi, a1));
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcastss_ps(ds), acc[r]);
    }
}

template <class T>
void tile_1tok(const uint8_t* const* rows, const uint8_t* acts, int64_t nb, float* out,
               const char* prefetch, size_t pf_step) {
    constexpr bool kMin = T::kMin;
    const int16_t* aq = reinterpret_cast<const int16_t*>(acts);
    const float* ad = reinterpret_cast<const float*>(acts + nb * kActBlock * sizeof(int16_t));
    const float* as = ad + nb;
    __m256 acc[kDecodeRows];
    __m128 mins[kDecodeRows];
#pragma GCC unroll 4
    for (int r = 0; r < kDecodeRows; ++r) {
        acc[r] = _mm256_setzero_ps();
        mins[r] = _mm_setzero_ps();
    }
    for (int64_t b = 0; b < nb; ++b) {
        const char* pf = prefetch + static_cast<size_t>(b) * pf_step;
        for (size_t off = 0; off <= pf_step; off += 64) _mm_prefetch(pf + off, _MM_HINT_T0);
        plain_block_1tok<T>(rows, 0, b, aq, ad, as, b, acc, mins);
    }
#pragma GCC unroll 4
    for (int r = 0; r < kDecodeRows; ++r) {
        float v = hsum(acc[r]);
        if constexpr (kMin) v += _mm_cvtss_f32(_mm_movehdup_ps(mins[r]));
        out[r] = v;
    }
}

// K-quants at one token, 4 rows, laid out like tile_1tok_grouped: per super-block the 8 block
// scales of every row are decoded into registers and multiplied with the activation scales first
// (the mins' term one FMA per row), then blocks run in pairs outer and rows inner, so each
// activation vector is loaded once for 4 rows and a Q4_K pair's 32 code bytes are widened once
// for both of its blocks. Even and odd blocks accumulate separately (shorter FMA chains).
// Measured on the 2-core Xeon (1 thread, thread CPU time, 256x1536 in L2, best of 40, interleaved
// in one process, machine load ~20): Q4_K 13.8 GB/s before, 14.4 after, 15.1 with the re-packed
// scales of Q4KGrouped (Q4_1 grouped: 21.7); Q6_K 11.2 -> 12.4.
template <class T>
void tile_1tok_k(const uint8_t* const* rows, const uint8_t* acts, int64_t nb, float* out,
                 const char* prefetch, size_t pf_step) {
    const int16_t* aq = reinterpret_cast<const int16_t*>(acts);
    const float* ad = reinterpret_cast<const float*>(acts + nb * kActBlock * sizeof(int16_t));
    const float* as = ad + nb;
    __m256 acc0[kDecodeRows], acc1[kDecodeRows];
#pragma GCC unroll 4
    for (int r = 0; r < kDecodeRows; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
    for (int64_t u = 0; u < nb / 8; ++u) {
        const char* pf = prefetch + static_cast<size_t>(u) * pf_step;
        const __m256 xd = _mm256_loadu_ps(ad + 8 * u);
        alignas(32) float ds[kDecodeRows][8];
#pragma GCC unroll 4
        for (int r = 0; r < kDecodeRows; ++r) {
            __m256 dw, mn;
            T::scales8(rows[r], u, dw, mn);
            _mm256_store_ps(ds[r], _mm256_mul_ps(dw, xd));
            if constexpr (T::kMin)
                acc1[r] = _mm256_fmadd_ps(mn, _mm256_loadu_ps(as + 8 * u), acc1[r]);
        }
#pragma GCC unroll 4
        for (int p = 0; p < 4; ++p) {
            prefetch_span(pf + p * pf_step / 4, pf + (p + 1) * pf_step / 4);
            const auto* a = reinterpret_cast<const __m256i*>(aq + (8 * u + 2 * p) * kActBlock);
            const __m256i a0 = _mm256_loadu_si256(a), a1 = _mm256_loadu_si256(a + 1);
            const __m256i a2 = _mm256_loadu_si256(a + 2), a3 = _mm256_loadu_si256(a + 3);
#pragma GCC unroll 4
            for (int r = 0; r < kDecodeRows; ++r) {
                __m256i c[4];
                T::pair(rows[r], u, p, c);
                const __m256i p0 =
                    _mm256_add_epi32(_mm256_madd_epi16(c[0], a0), _mm256_madd_epi16(c[1], a1));
                const __m256i p1 =
                    _mm256_add_epi32(_mm256_madd_epi16(c[2], a2), _mm256_madd_epi16(c[3], a3));
                acc0[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0),
                                          _mm256_broadcast_ss(&ds[r][2 * p]), acc0[r]);
                acc1[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1),
                                          _mm256_broadcast_ss(&ds[r][2 * p + 1]), acc1[r]);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < kDecodeRows; ++r) out[r] = hsum(_mm256_add_ps(acc0[r], acc1[r]));
}
template <class T>
void drive_1tok(const WeightView& w, const uint8_t* acts, float* y, int64_t r0, int64_t r1) {
    const int64_t nb = w.cols / kActBlock;
    const size_t tile_bytes = kDecodeRows * w.row_bytes;
    const size_t ahead = (kDecodeAheadBytes + tile_bytes - 1) / tile_bytes * tile_bytes;
    const size_t pf_step = kDecodeRows * T::kUnitBytes;
    int64_t r = r0;
    for (; r + kDecodeRows <= r1; r += kDecodeRows) {
        const uint8_t* rows[kDecodeRows];
        for (int i = 0; i < kDecodeRows; ++i)
            rows[i] = w.data + static_cast<size_t>(r + i) * w.row_bytes;
        const char* pf = reinterpret_cast<const char*>(rows[0] + ahead);
        if constexpr (T::kGroup == 1)
            tile_1tok<T>(rows, acts, nb, y + r, pf, pf_step);
        else
            tile_1tok_k<T>(rows, acts, nb, y + r, pf, pf_step);
    }
    if (r < r1) gemm_quant(w, acts, 1, y, 1, r, r1);  // fewer than 4 rows left: the generic tile
}

// ---- one token on grouped rows ----------------------------------------------------------------
// The tile_1tok loop with the scales of 8 blocks converted and multiplied with the activation
// scales in one instruction per row (the mins' term one FMA per 8 blocks), then broadcast from L1:
// per block and row only the code widening, two vpmaddwd, cvt and FMA remain. Measured on the
// 2-core EPYC (1 thread, weights streamed from DRAM, best of 36): Q4_1 576x1536 14.0 -> 16.7 GB/s,
// 1536x576 12.7 -> 13.5 (2 of its 18 blocks per row are the plain tail). Q8_0 measured 2x slower
// grouped, so it is not grouped (its plain tile already streams near the read bandwidth).
template <class Q>
void tile_1tok_grouped(const uint8_t* const* rows, const uint8_t* acts, int64_t nb, float* out,
                       const char* prefetch) {
    using G = Grouped<Q>;
    constexpr bool kMin = G::kMin;
    const int16_t* aq = reinterpret_cast<const int16_t*>(acts);
    const float* ad = reinterpret_cast<const float*>(acts + nb * kActBlock * sizeof(int16_t));
    const float* as = ad + nb;
    __m256 acc[kDecodeRows], macc[kDecodeRows];
    __m128 tmins[kDecodeRows];  // lane 1: the short last group's min terms
#pragma GCC unroll 4
    for (int r = 0; r < kDecodeRows; ++r) {
        acc[r] = macc[r] = _mm256_setzero_ps();
        tmins[r] = _mm_setzero_ps();
    }
    const char* pf = prefetch;
    const int64_t full = nb / kGroupBlocks * kGroupBlocks;
    for (int64_t g0 = 0; g0 < full; g0 += kGroupBlocks) {
        const char* gpf = pf;
        pf += kDecodeRows * G::kGroupBytes;
        const __m256 xd = _mm256_loadu_ps(ad + g0);
        alignas(32) float ds[kDecodeRows][kGroupBlocks];
#pragma GCC unroll 4
        for (int r = 0; r < kDecodeRows; ++r) {
            const uint8_t* g = rows[r] + g0 * G::kBlock;
            _mm256_store_ps(ds[r], _mm256_mul_ps(G::halves(g, 0), xd));
            if constexpr (kMin) {
                macc[r] = _mm256_fmadd_ps(G::halves(g, 1), _mm256_loadu_ps(as + g0), macc[r]);
            }
        }
#pragma GCC unroll 8
        for (int j = 0; j < kGroupBlocks; ++j) {
            prefetch_span(gpf + j * kDecodeRows * G::kGroupBytes / kGroupBlocks,
                          gpf + (j + 1) * kDecodeRows * G::kGroupBytes / kGroupBlocks);
            const auto* a = reinterpret_cast<const __m256i*>(aq + (g0 + j) * kActBlock);
            const __m256i a0 = _mm256_loadu_si256(a), a1 = _mm256_loadu_si256(a + 1);
#pragma GCC unroll 4
            for (int r = 0; r < kDecodeRows; ++r) {
                __m256i lo, hi;
                G::codes(rows[r] + g0 * G::kBlock, j, lo, hi);
                const __m256i p =
                    _mm256_add_epi32(_mm256_madd_epi16(lo, a0), _mm256_madd_epi16(hi, a1));
                acc[r] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcast_ss(&ds[r][j]), acc[r]);
            }
        }
    }
    // The plain blocks after the last group, as in tile_1tok.
    for (int64_t b = full; b < nb; ++b) {
        for (size_t off = 0; off < kDecodeRows * G::kBlock; off += 64)
            _mm_prefetch(pf + off, _MM_HINT_T0);
        pf += kDecodeRows * G::kBlock;
        plain_block_1tok<typename G::Plain>(rows, full * G::kBlock, b - full, aq, ad, as, b, acc,
                                            tmins);
    }
#pragma GCC unroll 4
    for (int r = 0; r < kDecodeRows; ++r) {
        float v = hsum(_mm256_add_ps(acc[r], macc[r]));
        if constexpr (kMin) v += _mm_cvtss_f32(_mm_movehdup_ps(tmins[r]));
        out[r] = v;
    }
}

template <class Q>
void drive_1tok_grouped(const WeightView& w, const uint8_t* acts, float* y, int64_t r0,
                        int64_t r1) {
    const int64_t nb = w.cols / kActBlock;
    const size_t tile_bytes = kDecodeRows * w.row_bytes;
    const size_t ahead = (kDecodeAheadBytes + tile_bytes - 1) / tile_bytes * tile_bytes;
    int64_t r = r0;
    for (; r + kDecodeRows <= r1; r += kDecodeRows) {
        const uint8_t* rows[kDecodeRows];
        for (int i = 0; i < kDecodeRows; ++i)
            rows[i] = w.data + static_cast<size_t>(r + i) * w.row_bytes;
        tile_1tok_grouped<Q>(rows, acts, nb, y + r, reinterpret_cast<const char*>(rows[0] + ahead));
    }
    if (r < r1) gemm_quant(w, acts, 1, y, 1, r, r1);  // fewer than 4 rows left: decoded rows
}

template <class T>
void drive(const WeightView& w, const uint8_t* acts, float* y, int64_t r0, int64_t r1) {
    if constexpr (IsGrouped<T>::value)
        drive_1tok_grouped<typename T::Plain::Inner>(w, acts, y, r0, r1);
    else
        drive_1tok<T>(w, acts, y, r0, r1);
}

// ---- several tokens, each bitwise as at one token (the serving step) ----------------------------
// A serving step needs every token row's outputs bitwise equal to the one-token tile's (batch
// invariance, backend_cpu.cpp matmuls_rowwise), which rules out the prompt paths. Calling the
// one-token tile once per token decodes every weight block once per token. This tile runs the
// float operations of tile_1tok_grouped for each (row, token) pair in the same order, on
// separate accumulators, but widens each block's codes once for NT tokens and multiplies each
// row's 8 block scales with the tokens' activation scales from the same conversion. R x NT
// accumulators stay in registers (2 x 4 = 8); the mins' chain, independent of the codes' chain
// until the final sum, runs in its own pass over the groups.
// One plain 32-block of one row at NT tokens: plain_block_1tok's operations for each token, in its
// order (so each token's sums are bitwise a one-token call's). lo/hi: the block's 16-bit codes.
template <bool kMin, int NT, class Block>
__attribute__((always_inline)) inline void plain_block_tokens(
    const Block& blk, __m256i lo, __m256i hi, const int16_t* const* aq, const float* const* ad,
    const float* const* as, int64_t b, __m256 (&acc)[NT], __m128 (&mins)[NT]) {
    uint32_t dm16 = blk.d;
    if constexpr (kMin) std::memcpy(&dm16, &blk, 4);
    const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dm16)));
#pragma GCC unroll 16
    for (int t = 0; t < NT; ++t) {
        const __m128 xds = kMin ? _mm_unpacklo_ps(_mm_load_ss(ad[t] + b), _mm_load_ss(as[t] + b))
                                : _mm_load_ss(ad[t] + b);
        const __m128 ds = _mm_mul_ps(dm, xds);
        if constexpr (kMin) mins[t] = _mm_add_ps(mins[t], ds);
        const auto* a = reinterpret_cast<const __m256i*>(aq[t] + b * kActBlock);
        const __m256i p = _mm256_add_epi32(_mm256_madd_epi16(lo, _mm256_loadu_si256(a)),
                                           _mm256_madd_epi16(hi, _mm256_loadu_si256(a + 1)));
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcastss_ps(ds), acc[t]);
    }
}

template <class Q, int R, int NT>
void tile_1tok_grouped_tokens(const uint8_t* const* rows, const uint8_t* const* acts, int64_t nb,
                              float* const* out, int64_t r_out, const char* prefetch) {
    using G = Grouped<Q>;
    constexpr bool kMin = G::kMin;
    const int16_t* aq[NT];
    const float *ad[NT], *as[NT];
    for (int t = 0; t < NT; ++t) {
        aq[t] = reinterpret_cast<const int16_t*>(acts[t]);
        ad[t] = reinterpret_cast<const float*>(acts[t] + nb * kActBlock * sizeof(int16_t));
        as[t] = ad[t] + nb;
    }
    const int64_t full = nb / kGroupBlocks * kGroupBlocks;
    __m256 macc[R][NT];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
        for (int t = 0; t < NT; ++t) macc[r][t] = _mm256_setzero_ps();
    if constexpr (kMin) {
        for (int64_t g0 = 0; g0 < full; g0 += kGroupBlocks) {
#pragma GCC unroll 16
            for (int r = 0; r < R; ++r) {
                const __m256 m = G::halves(rows[r] + g0 * G::kBlock, 1);
#pragma GCC unroll 16
                for (int t = 0; t < NT; ++t)
                    macc[r][t] = _mm256_fmadd_ps(m, _mm256_loadu_ps(as[t] + g0), macc[r][t]);
            }
        }
    }
    __m256 acc[R][NT];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
        for (int t = 0; t < NT; ++t) acc[r][t] = _mm256_setzero_ps();
    const char* pf = prefetch;
    for (int64_t g0 = 0; g0 < full; g0 += kGroupBlocks) {
        for (size_t off = 0; off < R * G::kGroupBytes; off += 64)
            _mm_prefetch(pf + off, _MM_HINT_T0);
        pf += R * G::kGroupBytes;
        alignas(32) float ds[R][NT][kGroupBlocks];
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
            const __m256 d = G::halves(rows[r] + g0 * G::kBlock, 0);
#pragma GCC unroll 16
            for (int t = 0; t < NT; ++t)
                _mm256_store_ps(ds[r][t], _mm256_mul_ps(d, _mm256_loadu_ps(ad[t] + g0)));
        }
        for (int j = 0; j < kGroupBlocks; ++j) {
#pragma GCC unroll 16
            for (int r = 0; r < R; ++r) {
                __m256i lo, hi;
                G::codes(rows[r] + g0 * G::kBlock, j, lo, hi);
#pragma GCC unroll 16
                for (int t = 0; t < NT; ++t) {
                    const auto* a = reinterpret_cast<const __m256i*>(aq[t] + (g0 + j) * kActBlock);
                    const __m256i p =
                        _mm256_add_epi32(_mm256_madd_epi16(lo, _mm256_loadu_si256(a)),
                                         _mm256_madd_epi16(hi, _mm256_loadu_si256(a + 1)));
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                                _mm256_broadcast_ss(&ds[r][t][j]), acc[r][t]);
                }
            }
        }
    }
    // The plain blocks after the last group: plain_block_1tok's operations per (row, token).
    using Block = typename Q::Block;
    __m128 tmins[R][NT];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
        for (int t = 0; t < NT; ++t) tmins[r][t] = _mm_setzero_ps();
    for (int64_t b = full; b < nb; ++b) {
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
            const uint8_t* row = rows[r] + full * G::kBlock;
            __m256i lo, hi;
            G::Plain::codes(row, b - full, 0, lo, hi);
            plain_block_tokens<kMin, NT>(reinterpret_cast<const Block*>(row)[b - full], lo, hi, aq,
                                         ad, as, b, acc[r], tmins[r]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 16
        for (int t = 0; t < NT; ++t) {
            float v = hsum(_mm256_add_ps(acc[r][t], macc[r][t]));
            if constexpr (kMin) v += _mm_cvtss_f32(_mm_movehdup_ps(tmins[r][t]));
            out[t][r_out + r] = v;
        }
    }
}

// The same for the plain types with a scale in every block (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0):
// tile_1tok's operations per (row, token), each block's codes widened and its scale pair
// converted once for NT tokens. The output matrix of SmolLM2 Q4_1 files is Q8_0 (a third of the
// weight bytes), so the serving step needs this one too.
template <class T, int R, int NT>
void tile_1tok_tokens(const uint8_t* const* rows, const uint8_t* const* acts, int64_t nb,
                      float* const* out, int64_t r_out, const char* prefetch) {
    using Block = typename T::Block;
    constexpr bool kMin = T::kMin;
    const int16_t* aq[NT];
    const float *ad[NT], *as[NT];
    for (int t = 0; t < NT; ++t) {
        aq[t] = reinterpret_cast<const int16_t*>(acts[t]);
        ad[t] = reinterpret_cast<const float*>(acts[t] + nb * kActBlock * sizeof(int16_t));
        as[t] = ad[t] + nb;
    }
    __m256 acc[R][NT];
    __m128 mins[R][NT];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 16
        for (int t = 0; t < NT; ++t) {
            acc[r][t] = _mm256_setzero_ps();
            mins[r][t] = _mm_setzero_ps();
        }
    }
    constexpr size_t pf_step = R * T::kUnitBytes;
    for (int64_t b = 0; b < nb; ++b) {
        const char* pf = prefetch + static_cast<size_t>(b) * pf_step;
        for (size_t off = 0; off <= pf_step; off += 64) _mm_prefetch(pf + off, _MM_HINT_T0);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
            __m256i lo, hi;
            T::codes(rows[r], b, 0, lo, hi);
            plain_block_tokens<kMin, NT>(reinterpret_cast<const Block*>(rows[r])[b], lo, hi, aq, ad,
                                         as, b, acc[r], mins[r]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 16
        for (int t = 0; t < NT; ++t) {
            float v = hsum(acc[r][t]);
            if constexpr (kMin) v += _mm_cvtss_f32(_mm_movehdup_ps(mins[r][t]));
            out[t][r_out + r] = v;
        }
    }
}

// And for the K-quants: tile_1tok_k's operations per (row, token), each super-block's scales
// decoded and each block pair's codes widened once for NT tokens.
template <class T, int R, int NT>
void tile_1tok_k_tokens(const uint8_t* const* rows, const uint8_t* const* acts, int64_t nb,
                        float* const* out, int64_t r_out, const char* prefetch) {
    const int16_t* aq[NT];
    const float *ad[NT], *as[NT];
    for (int t = 0; t < NT; ++t) {
        aq[t] = reinterpret_cast<const int16_t*>(acts[t]);
        ad[t] = reinterpret_cast<const float*>(acts[t] + nb * kActBlock * sizeof(int16_t));
        as[t] = ad[t] + nb;
    }
    __m256 acc0[R][NT], acc1[R][NT];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
        for (int t = 0; t < NT; ++t) acc0[r][t] = acc1[r][t] = _mm256_setzero_ps();
    constexpr size_t pf_step = R * T::kUnitBytes;
    for (int64_t u = 0; u < nb / 8; ++u) {
        const char* pf = prefetch + static_cast<size_t>(u) * pf_step;
        for (size_t off = 0; off <= pf_step; off += 64) _mm_prefetch(pf + off, _MM_HINT_T0);
        alignas(32) float ds[R][NT][8];
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
            __m256 dw, mn;
            T::scales8(rows[r], u, dw, mn);
#pragma GCC unroll 16
            for (int t = 0; t < NT; ++t) {
                _mm256_store_ps(ds[r][t], _mm256_mul_ps(dw, _mm256_loadu_ps(ad[t] + 8 * u)));
                if constexpr (T::kMin)
                    acc1[r][t] = _mm256_fmadd_ps(mn, _mm256_loadu_ps(as[t] + 8 * u), acc1[r][t]);
            }
        }
        for (int p = 0; p < 4; ++p) {
#pragma GCC unroll 16
            for (int r = 0; r < R; ++r) {
                __m256i c[4];
                T::pair(rows[r], u, p, c);
#pragma GCC unroll 16
                for (int t = 0; t < NT; ++t) {
                    const auto* a =
                        reinterpret_cast<const __m256i*>(aq[t] + (8 * u + 2 * p) * kActBlock);
                    const __m256i p0 =
                        _mm256_add_epi32(_mm256_madd_epi16(c[0], _mm256_loadu_si256(a)),
                                         _mm256_madd_epi16(c[1], _mm256_loadu_si256(a + 1)));
                    const __m256i p1 =
                        _mm256_add_epi32(_mm256_madd_epi16(c[2], _mm256_loadu_si256(a + 2)),
                                         _mm256_madd_epi16(c[3], _mm256_loadu_si256(a + 3)));
                    acc0[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0),
                                                 _mm256_broadcast_ss(&ds[r][t][2 * p]), acc0[r][t]);
                    acc1[r][t] =
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1),
                                        _mm256_broadcast_ss(&ds[r][t][2 * p + 1]), acc1[r][t]);
                }
            }
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
        for (int t = 0; t < NT; ++t)
            out[t][r_out + r] = hsum(_mm256_add_ps(acc0[r][t], acc1[r][t]));
}

using TokensTileFn = void (*)(const uint8_t* const*, const uint8_t* const*, int64_t, float* const*,
                              int64_t, const char*);

// Tokens run in fours; rows in pairs (8 accumulators in registers), or one at a time where
// each (row, token) has two chains (the 128-bit mins of the plain types with a min, the even
// and odd blocks of the K-quants).
constexpr int kTokensMax = 4;

template <class T>
constexpr int tokens_tile_rows() {
    if constexpr (IsGrouped<T>::value)
        return 2;
    else
        return T::kGroup == 1 && !T::kMin ? 2 : 1;
}

template <class T, int R>
TokensTileFn tokens_tile_fn(int nt) {
    if constexpr (IsGrouped<T>::value) {
        using Q = typename T::Plain::Inner;
        constexpr TokensTileFn kFns[kTokensMax] = {
            tile_1tok_grouped_tokens<Q, R, 1>, tile_1tok_grouped_tokens<Q, R, 2>,
            tile_1tok_grouped_tokens<Q, R, 3>, tile_1tok_grouped_tokens<Q, R, 4>};
        return kFns[nt - 1];
    } else if constexpr (T::kGroup == 1) {
        constexpr TokensTileFn kFns[kTokensMax] = {
            tile_1tok_tokens<T, R, 1>, tile_1tok_tokens<T, R, 2>, tile_1tok_tokens<T, R, 3>,
            tile_1tok_tokens<T, R, 4>};
        return kFns[nt - 1];
    } else {
        constexpr TokensTileFn kFns[kTokensMax] = {
            tile_1tok_k_tokens<T, R, 1>, tile_1tok_k_tokens<T, R, 2>, tile_1tok_k_tokens<T, R, 3>,
            tile_1tok_k_tokens<T, R, 4>};
        return kFns[nt - 1];
    }
}

// n_tok tokens over rows [r0, r1), each token's outputs as the one-token driver (drive) gives
// them: the rows it runs in 4-row tiles through the tiles above (per row the same operations
// whatever the tile's height), the rows after the last full tile through its own tail path,
// token by token.
template <class T>
void drive_tokens(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y, int64_t ldy,
                  int64_t r0, int64_t r1) {
    constexpr int R = tokens_tile_rows<T>();
    const int64_t nb = w.cols / kActBlock;
    const size_t astride = static_cast<size_t>(nb) * kActBytes32;
    const size_t tile_bytes = R * w.row_bytes;
    const size_t ahead = (kDecodeAheadBytes + tile_bytes - 1) / tile_bytes * tile_bytes;
    const int64_t tiled = r0 + (r1 - r0) / kDecodeRows * kDecodeRows;
    for (int64_t r = r0; r < tiled; r += R) {
        const uint8_t* rows[R];
        for (int i = 0; i < R; ++i) rows[i] = w.data + static_cast<size_t>(r + i) * w.row_bytes;
        const char* pf = reinterpret_cast<const char*>(rows[0] + ahead);
        for (int64_t t = 0; t < n_tok; t += kTokensMax) {
            const int nt = static_cast<int>(std::min<int64_t>(n_tok - t, kTokensMax));
            const uint8_t* ta[kTokensMax];
            float* out[kTokensMax];
            for (int j = 0; j < nt; ++j) {
                ta[j] = acts + static_cast<size_t>(t + j) * astride;
                out[j] = y + (t + j) * ldy;
            }
            tokens_tile_fn<T, R>(nt)(rows, ta, nb, out, r, pf);
        }
    }
    for (int64_t t = 0; t < n_tok && tiled < r1; ++t)
        drive<T>(w, acts + static_cast<size_t>(t) * astride, y + t * ldy, tiled, r1);
}

// ---- one token on a list of rows (the gate-first FFN's W_up: rows of kept neurons only) -------
// The one-token tiles on 4 listed rows at a time; the prefetch covers 4 rows' length from the
// next listed row, which holds most of the next tile when the kept rows are dense.
template <class T>
void drive_rows(const WeightView& w, const uint8_t* acts, const int32_t* list, int64_t n,
                float* y) {
    const int64_t nb = w.cols / kActBlock;
    auto row = [&](int64_t k) { return w.data + static_cast<size_t>(list[k]) * w.row_bytes; };
    int64_t k = 0;
    for (; k + kDecodeRows <= n; k += kDecodeRows) {
        const uint8_t* rows[kDecodeRows];
        for (int i = 0; i < kDecodeRows; ++i) rows[i] = row(k + i);
        const char* pf =
            reinterpret_cast<const char*>(row(k + kDecodeRows < n ? k + kDecodeRows : k));
        float out[kDecodeRows];
        if constexpr (IsGrouped<T>::value) {
            tile_1tok_grouped<typename T::Plain::Inner>(rows, acts, nb, out, pf);
        } else if constexpr (T::kGroup == 1) {
            tile_1tok<T>(rows, acts, nb, out, pf, kDecodeRows * T::kUnitBytes);
        } else {
            tile_1tok_k<T>(rows, acts, nb, out, pf, kDecodeRows * T::kUnitBytes);
        }
        for (int i = 0; i < kDecodeRows; ++i) y[list[k + i]] = out[i];
    }
    for (; k < n; ++k) drive<T>(w, acts, y, list[k], list[k] + 1);
}

}  // namespace

void matvec_quant(const WeightView& w, const uint8_t* acts, float* y, int64_t r0, int64_t r1) {
    with_decoder(w.type,
                 [&](auto tag) { drive<typename decltype(tag)::type>(w, acts, y, r0, r1); });
}

bool matmul_each_token(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y,
                       int64_t ldy, int64_t r0, int64_t r1) {
    bool done = false;
    with_decoder(w.type, [&](auto tag) {
        drive_tokens<typename decltype(tag)::type>(w, acts, n_tok, y, ldy, r0, r1);
        done = true;
    });
    return done;
}

void matvec_rows(const WeightView& w, const uint8_t* acts, const int32_t* rows, int64_t n,
                 float* y) {
    with_decoder(w.type,
                 [&](auto tag) { drive_rows<typename decltype(tag)::type>(w, acts, rows, n, y); });
}

}  // namespace ffnskip::cpu::avx2
