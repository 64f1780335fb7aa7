// AVX2 integer matmul for quantized weights against 16-bit activations, and the AVX2 activation
// quantization.
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
// Few tokens (decode: 1 token, tiles of 4 rows for independent accumulation chains) decode the
// weight codes inside the tile and prefetch the rows of a later tile, since decode streams every
// weight once from DRAM. From kDecodedMinTokens tokens on, each pair of rows is decoded once per
// chunk of 64 tokens into 16-bit codes, scales and mins (in L1), and a type-independent 2-row x
// 4-token tile runs on those (vpmaddwd + cvt + fma per block and (row, token)). Measured on the
// 2-core EPYC (thread CPU time, n_tok = 512): 57-72 GFLOP/s, against 47-54 for the 8-bit
// activations with per-tile decoding.
//
// Integer ranges: an activation is at most 32767 in magnitude, a code at most 128 (Q8_0) or
// 4096 (Q6_K codes pre-multiplied by their int8 scale), and one int32 lane sums 4 products, so
// lanes stay below 2^31.
#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu/kernels_avx2.h"
#include "cpu/kernels_impl.h"
#include "cpu/repack.h"
#include "ggml_types.h"

namespace ffnskip::cpu::avx2 {

// ---- activation quantization ---------------------------------------------------------------
void prepare_row(const float* x, int64_t cols, uint8_t* out) {
    const int64_t nb = cols / kActBlock;
    auto* qs = reinterpret_cast<int16_t*>(out);
    auto* d = reinterpret_cast<float*>(out + nb * kActBlock * sizeof(int16_t));
    float* s = d + nb;
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    for (int64_t b = 0; b < nb; ++b) {
        const float* xb = x + b * kActBlock;
        __m256 v[4];
        for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(xb + 8 * i);
        __m256 m = _mm256_max_ps(
            _mm256_max_ps(_mm256_and_ps(v[0], abs_mask), _mm256_and_ps(v[1], abs_mask)),
            _mm256_max_ps(_mm256_and_ps(v[2], abs_mask), _mm256_and_ps(v[3], abs_mask)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        // x * 0 is NaN exactly for Inf/NaN inputs; such a block is marked NaN, as in the scalar
        // path (max_ps would silently drop NaN from amax).
        const __m256 zero = _mm256_setzero_ps();
        __m256 z = _mm256_mul_ps(v[0], zero);
        for (int i = 1; i < 4; ++i) z = _mm256_add_ps(z, _mm256_mul_ps(v[i], zero));
        if (_mm256_movemask_ps(_mm256_cmp_ps(z, z, _CMP_UNORD_Q)) != 0) {
            set_nonfinite_block(qs + b * kActBlock, d + b, s + b);
            continue;
        }
        const __m256 id = _mm256_set1_ps(amax > kActMinMax ? kActMax / amax : 0.0f);
        __m256i q[4];
        // cvtps rounds to nearest even (the default MXCSR mode), as nearbyint in the scalar path.
        for (int i = 0; i < 4; ++i) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], id));
        // packs works per lane: (0-7, 8-15) gives 64-bit groups 0-3, 8-11, 4-7, 12-15.
        const __m256i lo = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[0], q[1]), 0xD8);
        const __m256i hi = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[2], q[3]), 0xD8);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs + b * kActBlock), lo);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs + b * kActBlock + 16), hi);
        const __m256i sum8 =
            _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum8), _mm256_extracti128_si256(sum8, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
        d[b] = amax / kActMax;
        s[b] = d[b] * static_cast<float>(_mm_cvtsi128_si32(s4));
    }
}

namespace {

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

// ---- decode (one token) for the types with a scale in every 32-block ----------------------
// Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 carry an f16 scale (and min) in each block of 32. The generic
// tile above gathers them in a pre-pass into scale arrays; at one token that pass (a conversion
// and two stores per block and row) cost as much as the integer work. Here each block's scale
// pair is converted inline and multiplied with the activation's (d, s) pair, and the product is
// broadcast from a register, so one token costs ~12 instructions per block and row. Four rows
// share each activation load; the accumulators stay in registers (fully unrolled rows).
// The prefetcher is told about the tile `kDecodeAheadBytes` ahead, spread over the block loop.
constexpr size_t kDecodeAheadBytes = 2048;
constexpr int kDecodeRows = 4;

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
        for (size_t off = 0; off <= pf_step; off += 64) _mm_prefetch(pf + off, _MM_HINT_T0);
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
    for (; r < r1; ++r) {  // fewer than four rows left: the generic tile
        Tile tl;
        tl.ahead = 0;
        tl.rows[0] = w.data + static_cast<size_t>(r) * w.row_bytes;
        tl.acts[0] = acts;
        tl.out[0][0] = y + r;
        tile<T, 1, 1>(tl, nb);
    }
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
        case 4 * 8 + 1:
            return tile<T, 4, 1>;
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
        for (size_t off = 0; off < kDecodeRows * G::kGroupBytes; off += 64)
            _mm_prefetch(pf + off, _MM_HINT_T0);
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
    if (r < r1) drive_decoded<Grouped<Q>>(w, acts, 1, y, 1, r, r1);  // fewer than 4 rows left
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
            const Block& blk = reinterpret_cast<const Block*>(row)[b - full];
            uint32_t dm16 = blk.d;
            if constexpr (kMin) std::memcpy(&dm16, &blk, 4);
            const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dm16)));
            __m256i lo, hi;
            G::Plain::codes(row, b - full, 0, lo, hi);
#pragma GCC unroll 16
            for (int t = 0; t < NT; ++t) {
                const __m128 xds =
                    kMin ? _mm_unpacklo_ps(_mm_load_ss(ad[t] + b), _mm_load_ss(as[t] + b))
                         : _mm_load_ss(ad[t] + b);
                const __m128 ds = _mm_mul_ps(dm, xds);
                if constexpr (kMin) tmins[r][t] = _mm_add_ps(tmins[r][t], ds);
                const auto* a = reinterpret_cast<const __m256i*>(aq[t] + b * kActBlock);
                const __m256i p =
                    _mm256_add_epi32(_mm256_madd_epi16(lo, _mm256_loadu_si256(a)),
                                     _mm256_madd_epi16(hi, _mm256_loadu_si256(a + 1)));
                acc[r][t] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcastss_ps(ds), acc[r][t]);
            }
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
            const Block& blk = reinterpret_cast<const Block*>(rows[r])[b];
            uint32_t dm16 = blk.d;
            if constexpr (kMin) std::memcpy(&dm16, &blk, 4);
            const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dm16)));
            __m256i lo, hi;
            T::codes(rows[r], b, 0, lo, hi);
#pragma GCC unroll 16
            for (int t = 0; t < NT; ++t) {
                const __m128 xds =
                    kMin ? _mm_unpacklo_ps(_mm_load_ss(ad[t] + b), _mm_load_ss(as[t] + b))
                         : _mm_load_ss(ad[t] + b);
                const __m128 ds = _mm_mul_ps(dm, xds);
                if constexpr (kMin) mins[r][t] = _mm_add_ps(mins[r][t], ds);
                const auto* a = reinterpret_cast<const __m256i*>(aq[t] + b * kActBlock);
                const __m256i p =
                    _mm256_add_epi32(_mm256_madd_epi16(lo, _mm256_loadu_si256(a)),
                                     _mm256_madd_epi16(hi, _mm256_loadu_si256(a + 1)));
                acc[r][t] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcastss_ps(ds), acc[r][t]);
            }
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

constexpr size_t kPrefetchTiles = 2;

// Few tokens (decode): codes are decoded inside the tile, 4 rows x 1 token or 2 rows x 2-3.
template <class T>
void drive_plain(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y, int64_t ldy,
                 int64_t r0, int64_t r1) {
    if (n_tok >= kDecodedMinTokens) return drive_decoded<T>(w, acts, n_tok, y, ldy, r0, r1);
    if (n_tok == 1) return drive_1tok<T>(w, acts, y, r0, r1);
    const int64_t nb = w.cols / kActBlock;
    const size_t astride = static_cast<size_t>(nb) * kActBytes32;
    const int rstep = n_tok == 1 ? 4 : 2;
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
    if constexpr (IsGrouped<T>::value) {  // grouped rows: only these two paths read them
        if (n_tok == 1) return drive_1tok_grouped<typename T::Plain::Inner>(w, acts, y, r0, r1);
        drive_decoded<T>(w, acts, n_tok, y, ldy, r0, r1);
    } else {
        drive_plain<T>(w, acts, n_tok, y, ldy, r0, r1);
    }
}

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
        drive<T>(w, acts + static_cast<size_t>(t) * astride, 1, y + t * ldy, ldy, tiled, r1);
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
    for (; k < n; ++k) drive<T>(w, acts, 1, y, 1, list[k], list[k] + 1);
}

}  // namespace

void matmul_quant(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y, int64_t ldy,
                  int64_t r0, int64_t r1) {
    switch (w.type) {
        case GGML_Q4_0:
            return drive<Simple<Q4_0>>(w, acts, n_tok, y, ldy, r0, r1);
        case GGML_Q4_1:
            return drive<Simple<Q4_1>>(w, acts, n_tok, y, ldy, r0, r1);
        case GGML_Q5_0:
            return drive<Simple<Q5_0>>(w, acts, n_tok, y, ldy, r0, r1);
        case GGML_Q5_1:
            return drive<Simple<Q5_1>>(w, acts, n_tok, y, ldy, r0, r1);
        case GGML_Q8_0:
            return drive<Simple<Q8_0>>(w, acts, n_tok, y, ldy, r0, r1);
        case GGML_Q4_K:
            return drive<Q45K<block_q4_K>>(w, acts, n_tok, y, ldy, r0, r1);
        case GGML_Q5_K:
            return drive<Q45K<block_q5_K>>(w, acts, n_tok, y, ldy, r0, r1);
        case GGML_Q6_K:
            return drive<Q6K>(w, acts, n_tok, y, ldy, r0, r1);
        case GGML_Q4_0 | kGroupedFlag:
            return drive<Grouped<Q4_0>>(w, acts, n_tok, y, ldy, r0, r1);
        case GGML_Q4_1 | kGroupedFlag:
            return drive<Grouped<Q4_1>>(w, acts, n_tok, y, ldy, r0, r1);
        case GGML_Q4_K | kGroupedFlag:
            return drive<Q4KGrouped>(w, acts, n_tok, y, ldy, r0, r1);
        default:
            return;
    }
}

bool matmul_each_token(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y,
                       int64_t ldy, int64_t r0, int64_t r1) {
    switch (w.type) {
        case GGML_Q4_0:
            drive_tokens<Simple<Q4_0>>(w, acts, n_tok, y, ldy, r0, r1);
            return true;
        case GGML_Q4_1:
            drive_tokens<Simple<Q4_1>>(w, acts, n_tok, y, ldy, r0, r1);
            return true;
        case GGML_Q5_0:
            drive_tokens<Simple<Q5_0>>(w, acts, n_tok, y, ldy, r0, r1);
            return true;
        case GGML_Q5_1:
            drive_tokens<Simple<Q5_1>>(w, acts, n_tok, y, ldy, r0, r1);
            return true;
        case GGML_Q8_0:
            drive_tokens<Simple<Q8_0>>(w, acts, n_tok, y, ldy, r0, r1);
            return true;
        case GGML_Q4_K:
            drive_tokens<Q45K<block_q4_K>>(w, acts, n_tok, y, ldy, r0, r1);
            return true;
        case GGML_Q5_K:
            drive_tokens<Q45K<block_q5_K>>(w, acts, n_tok, y, ldy, r0, r1);
            return true;
        case GGML_Q6_K:
            drive_tokens<Q6K>(w, acts, n_tok, y, ldy, r0, r1);
            return true;
        case GGML_Q4_K | kGroupedFlag:
            drive_tokens<Q4KGrouped>(w, acts, n_tok, y, ldy, r0, r1);
            return true;
        case GGML_Q4_0 | kGroupedFlag:
            drive_tokens<Grouped<Q4_0>>(w, acts, n_tok, y, ldy, r0, r1);
            return true;
        case GGML_Q4_1 | kGroupedFlag:
            drive_tokens<Grouped<Q4_1>>(w, acts, n_tok, y, ldy, r0, r1);
            return true;
        default:
            return false;
    }
}

void matvec_rows(const WeightView& w, const uint8_t* acts, const int32_t* rows, int64_t n,
                 float* y) {
    switch (w.type) {
        case GGML_Q4_0:
            return drive_rows<Simple<Q4_0>>(w, acts, rows, n, y);
        case GGML_Q4_1:
            return drive_rows<Simple<Q4_1>>(w, acts, rows, n, y);
        case GGML_Q5_0:
            return drive_rows<Simple<Q5_0>>(w, acts, rows, n, y);
        case GGML_Q5_1:
            return drive_rows<Simple<Q5_1>>(w, acts, rows, n, y);
        case GGML_Q8_0:
            return drive_rows<Simple<Q8_0>>(w, acts, rows, n, y);
        case GGML_Q4_K:
            return drive_rows<Q45K<block_q4_K>>(w, acts, rows, n, y);
        case GGML_Q5_K:
            return drive_rows<Q45K<block_q5_K>>(w, acts, rows, n, y);
        case GGML_Q6_K:
            return drive_rows<Q6K>(w, acts, rows, n, y);
        case GGML_Q4_0 | kGroupedFlag:
            return drive_rows<Grouped<Q4_0>>(w, acts, rows, n, y);
        case GGML_Q4_1 | kGroupedFlag:
            return drive_rows<Grouped<Q4_1>>(w, acts, rows, n, y);
        case GGML_Q4_K | kGroupedFlag:
            return drive_rows<Q4KGrouped>(w, acts, rows, n, y);
        default:
            return;
    }
}

}  // namespace ffnskip::cpu::avx2
