// NEON integer matmul for quantized weights against 16-bit activations, and the NEON activation
// quantization (the AArch64 counterpart of kernels_matmul_avx2.cpp, same decomposition).
//
// Every weight type is walked in blocks of 32 values: the block's codes are widened to four
// int16x8 vectors and multiplied with the activation's by SMLAL/SMLAL2 (eight instructions, 32
// multiply-adds, into four int32 lanes); the lanes are converted to float and scaled by (weight
// scale x activation scale) once per block. The min/offset terms (Q4_1, Q5_1, Q4_K, Q5_K) are a
// float dot product of per-block mins with the activation block sums.
//
// One token (decode) runs tiles of 4 rows that decode the codes inside the tile, with each block's
// scales converted inline (8 per conversion for the K-quants and for grouped Q4_0/Q4_1 rows,
// repack.h). More tokens (the prompt), and the last rows of a one-token call, decode each row
// once per chunk of tokens into 16-bit codes, scales and mins, and a type-independent tile of 2
// rows x 4 tokens runs on those.
//
// Speed has not been measured on ARM hardware (only correctness, under emulation): the tile shapes
// follow the AVX2 kernels, and no software prefetch is issued.
#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu/kernels_impl.h"
#include "cpu/kernels_neon.h"
#include "cpu/repack.h"
#include "ggml_types.h"

namespace ffnskip::cpu::neon {

// ---- activation quantization ---------------------------------------------------------------
void prepare_row(const float* x, int64_t cols, uint8_t* out) {
    const int64_t nb = cols / kActBlock;
    auto* qs = reinterpret_cast<int16_t*>(out);
    auto* d = reinterpret_cast<float*>(out + nb * kActBlock * sizeof(int16_t));
    float* s = d + nb;
    for (int64_t b = 0; b < nb; ++b) {
        const float32x4x4_t v0 = vld1q_f32_x4(x + b * kActBlock);
        const float32x4x4_t v1 = vld1q_f32_x4(x + b * kActBlock + 16);
        float32x4_t v[8];
        for (int i = 0; i < 4; ++i) v[i] = v0.val[i], v[4 + i] = v1.val[i];
        // x * 0 is NaN exactly for Inf/NaN inputs; such a block is marked NaN, as in the scalar
        // path.
        float32x4_t m = vabsq_f32(v[0]), z = vmulq_n_f32(v[0], 0.0f);
        for (int i = 1; i < 8; ++i) {
            m = vmaxq_f32(m, vabsq_f32(v[i]));
            z = vaddq_f32(z, vmulq_n_f32(v[i], 0.0f));
        }
        if (vminvq_u32(vceqq_f32(z, z)) == 0) {
            set_nonfinite_block(qs + b * kActBlock, d + b, s + b);
            continue;
        }
        const float amax = vmaxvq_f32(m);
        const float id = amax > kActMinMax ? kActMax / amax : 0.0f;
        int32x4_t sum = vdupq_n_s32(0);
        for (int i = 0; i < 8; i += 2) {
            // FCVTNS rounds to nearest even, as nearbyint in the scalar path; |x * id| <= 32767.
            const int32x4_t q0 = vcvtnq_s32_f32(vmulq_n_f32(v[i], id));
            const int32x4_t q1 = vcvtnq_s32_f32(vmulq_n_f32(v[i + 1], id));
            vst1q_s16(qs + b * kActBlock + 4 * i, vcombine_s16(vmovn_s32(q0), vmovn_s32(q1)));
            sum = vaddq_s32(sum, vaddq_s32(q0, q1));
        }
        d[b] = amax / kActMax;
        s[b] = d[b] * static_cast<float>(vaddvq_s32(sum));
    }
}

namespace {

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

// ---- decode (one token) ----------------------------------------------------------------------
constexpr int kDecodeRows = 4;

// One plain 32-block of 4 rows at one token: block b of the plain blocks starting `base` bytes
// into each of `rows`, against activation block ab. acc gains codes . x * d_w d_x, mins m_w s_x.
template <class T>
__attribute__((always_inline)) inline void plain_block_1tok(const uint8_t* const* rows, size_t base,
                                                            int64_t b, const ActRow& a, int64_t ab,
                                                            float32x4_t* acc, float* mins) {
    using Block = typename T::Block;
    int16x8_t av[4];
    load_act(a.q + ab * kActBlock, av);
#pragma GCC unroll 4
    for (int r = 0; r < kDecodeRows; ++r) {
        const uint8_t* row = rows[r] + base;
        const Block& blk = reinterpret_cast<const Block*>(row)[b];
        float scale;
        if constexpr (T::kMin) {  // d and m are adjacent halves: one conversion for both
            const float32x2_t dm = vmul_f32(vget_low_f32(halves2(&blk.d)),
                                            vset_lane_f32(a.s[ab], vdup_n_f32(a.d[ab]), 1));
            scale = vget_lane_f32(dm, 0);
            mins[r] += vget_lane_f32(dm, 1);
        } else {
            scale = half(blk.d) * a.d[ab];
        }
        int16x8_t q[4];
        T::codes(row, b, 0, q);
        acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(dot32(q, av)), scale);
    }
}

template <class T>
void tile_1tok(const uint8_t* const* rows, const ActRow& a, int64_t nb, float* out) {
    float32x4_t acc[kDecodeRows];
    float mins[kDecodeRows] = {};
    for (int r = 0; r < kDecodeRows; ++r) acc[r] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nb; ++b) plain_block_1tok<T>(rows, 0, b, a, b, acc, mins);
    for (int r = 0; r < kDecodeRows; ++r) out[r] = vaddvq_f32(acc[r]) + mins[r];
}

// K-quants at one token: per 256-value super-block and row, the 8 block scales (and mins) are
// decoded into a vector pair and multiplied with the activation scales there; the mins' term is
// two FMAs per super-block.
template <class T>
void tile_1tok_k(const uint8_t* const* rows, const ActRow& a, int64_t nb, float* out) {
    float32x4_t acc[kDecodeRows], macc[kDecodeRows];
    for (int r = 0; r < kDecodeRows; ++r) acc[r] = macc[r] = vdupq_n_f32(0.0f);
    for (int64_t u = 0; u < nb / 8; ++u) {
        const float32x4_t xd[2] = {vld1q_f32(a.d + 8 * u), vld1q_f32(a.d + 8 * u + 4)};
#pragma GCC unroll 4
        for (int r = 0; r < kDecodeRows; ++r) {
            alignas(16) float dw[8], mn[8];
            T::scales(rows[r], u, dw, mn);
            for (int h = 0; h < 2; ++h) {
                vst1q_f32(dw + 4 * h, vmulq_f32(vld1q_f32(dw + 4 * h), xd[h]));
                if constexpr (T::kMin)
                    macc[r] =
                        vfmaq_f32(macc[r], vld1q_f32(mn + 4 * h), vld1q_f32(a.s + 8 * u + 4 * h));
            }
#pragma GCC unroll 8
            for (int j = 0; j < 8; ++j) {
                int16x8_t q[4], av[4];
                T::codes(rows[r], u, j, q);
                load_act(a.q + (8 * u + j) * kActBlock, av);
                acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(dot32(q, av)), dw[j]);
            }
        }
    }
    for (int r = 0; r < kDecodeRows; ++r) out[r] = vaddvq_f32(vaddq_f32(acc[r], macc[r]));
}

// Grouped Q4_0 / Q4_1 rows at one token: the scales of 8 blocks are converted and multiplied with
// the activation scales in two instructions per row (the mins' term two FMAs per 8 blocks), so per
// block and row only the code unpacking, the 8 multiply-adds, a conversion and an FMA remain.
template <class Q>
void tile_1tok_grouped(const uint8_t* const* rows, const ActRow& a, int64_t nb, float* out) {
    using G = Grouped<Q>;
    float32x4_t acc[kDecodeRows], macc[kDecodeRows];
    float mins[kDecodeRows] = {};
    for (int r = 0; r < kDecodeRows; ++r) acc[r] = macc[r] = vdupq_n_f32(0.0f);
    const int64_t full = nb / kGroupBlocks * kGroupBlocks;
    for (int64_t g0 = 0; g0 < full; g0 += kGroupBlocks) {
        const float32x4_t xd[2] = {vld1q_f32(a.d + g0), vld1q_f32(a.d + g0 + 4)};
        alignas(16) float ds[kDecodeRows][kGroupBlocks];
#pragma GCC unroll 4
        for (int r = 0; r < kDecodeRows; ++r) {
            const uint8_t* g = rows[r] + g0 * G::kBlock;
            float32x4_t h[2];
            G::halves(g, 0, h);
            vst1q_f32(ds[r], vmulq_f32(h[0], xd[0]));
            vst1q_f32(ds[r] + 4, vmulq_f32(h[1], xd[1]));
            if constexpr (G::kMin) {
                G::halves(g, 1, h);
                macc[r] = vfmaq_f32(macc[r], h[0], vld1q_f32(a.s + g0));
                macc[r] = vfmaq_f32(macc[r], h[1], vld1q_f32(a.s + g0 + 4));
            }
        }
#pragma GCC unroll 8
        for (int j = 0; j < kGroupBlocks; ++j) {
            int16x8_t av[4];
            load_act(a.q + (g0 + j) * kActBlock, av);
#pragma GCC unroll 4
            for (int r = 0; r < kDecodeRows; ++r) {
                int16x8_t q[4];
                G::codes(rows[r] + g0 * G::kBlock, j, q);
                acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(dot32(q, av)), ds[r][j]);
            }
        }
    }
    for (int64_t b = full; b < nb; ++b)  // the plain blocks after the last group
        plain_block_1tok<typename G::Plain>(rows, full * G::kBlock, b - full, a, b, acc, mins);
    for (int r = 0; r < kDecodeRows; ++r) out[r] = vaddvq_f32(vaddq_f32(acc[r], macc[r])) + mins[r];
}

// ---- prompt tiles on decoded rows -------------------------------------------------------------
struct DecodedRow {
    const int16_t* q;  // nb * 32 codes, in activation order
    const float* dw;   // nb block scales
    const float* mn;   // nb additive mins (types with a min only)
};

// (A named x4 value: clang's arm_neon.h defines the store as a macro, so no braced list inline.)
inline void store_codes(int16_t* dst, const int16x8_t c[4]) {
    const int16x8x4_t v = {{c[0], c[1], c[2], c[3]}};
    vst1q_s16_x4(dst, v);
}

template <class T>
void decode_plain_row(const uint8_t* row, int64_t nb, int16_t* q, float* dw, float* mn) {
    constexpr int G = T::kGroup;
    for (int64_t u = 0; u < nb / G; ++u) {
        T::scales(row, u, dw + u * G, T::kMin ? mn + u * G : nullptr);
        for (int j = 0; j < G; ++j) {
            int16x8_t c[4];
            T::codes(row, u, j, c);
            store_codes(q + (u * G + j) * kActBlock, c);
        }
    }
}

// One row's codes, block scales and mins; grouped rows: 8 scales (and mins) per conversion, then
// the plain tail.
template <class T>
void decode_row(const uint8_t* row, int64_t nb, int16_t* q, float* dw, float* mn) {
    if constexpr (IsGrouped<T>::value) {
        const int64_t full = nb / kGroupBlocks * kGroupBlocks;
        for (int64_t g0 = 0; g0 < full; g0 += kGroupBlocks) {
            const uint8_t* g = row + g0 * T::kBlock;
            float32x4_t h[2];
            T::halves(g, 0, h);
            vst1q_f32(dw + g0, h[0]);
            vst1q_f32(dw + g0 + 4, h[1]);
            if constexpr (T::kMin) {
                T::halves(g, 1, h);
                vst1q_f32(mn + g0, h[0]);
                vst1q_f32(mn + g0 + 4, h[1]);
            }
            for (int j = 0; j < kGroupBlocks; ++j) {
                int16x8_t c[4];
                T::codes(g, j, c);
                store_codes(q + (g0 + j) * kActBlock, c);
            }
        }
        decode_plain_row<typename T::Plain>(row + full * T::kBlock, nb - full, q + full * kActBlock,
                                            dw + full, mn + full);
    } else {
        decode_plain_row<T>(row, nb, q, dw, mn);
    }
}

constexpr int64_t kChunk = 64;  // blocks whose per-(row, token) scales are computed together

template <bool kMin, int R, int NT>
void tile_decoded(const DecodedRow* rows, const uint8_t* const* acts, int64_t nb,
                  float* const* out) {
    ActRow a[NT];
    for (int t = 0; t < NT; ++t) a[t] = ActRow(acts[t], nb);
    float32x4_t acc[R][NT];
    float mins[R][NT] = {};
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < NT; ++t) acc[r][t] = vdupq_n_f32(0.0f);
    for (int64_t c0 = 0; c0 < nb; c0 += kChunk) {
        const int64_t n = std::min(nb - c0, kChunk), n4 = n & ~int64_t{3};
        alignas(16) float scale[R][NT][kChunk];  // dw[r][b] * d[t][b]
        for (int r = 0; r < R; ++r) {
            for (int t = 0; t < NT; ++t) {
                const float* dw = rows[r].dw + c0;
                const float* ad = a[t].d + c0;
                float32x4_t m = vdupq_n_f32(0.0f);
                int64_t b = 0;
                for (; b < n4; b += 4) {
                    vst1q_f32(&scale[r][t][b], vmulq_f32(vld1q_f32(dw + b), vld1q_f32(ad + b)));
                    if constexpr (kMin)
                        m = vfmaq_f32(m, vld1q_f32(rows[r].mn + c0 + b),
                                      vld1q_f32(a[t].s + c0 + b));
                }
                float ms = vaddvq_f32(m);
                for (; b < n; ++b) {
                    scale[r][t][b] = dw[b] * ad[b];
                    if constexpr (kMin) ms += rows[r].mn[c0 + b] * a[t].s[c0 + b];
                }
                mins[r][t] += ms;
            }
        }
        // Fully unrolled: clang otherwise keeps the rolled (row, token) loops and the accumulators
        // in memory (38 instead of 20 instructions per block and token, bench/neon_insn_counts.py).
        for (int64_t b = 0; b < n; ++b) {
            int16x8_t q[R][4];
#pragma GCC unroll 2
            for (int r = 0; r < R; ++r) {
                const int16x8x4_t v = vld1q_s16_x4(rows[r].q + (c0 + b) * kActBlock);
                for (int i = 0; i < 4; ++i) q[r][i] = v.val[i];
            }
#pragma GCC unroll 4
            for (int t = 0; t < NT; ++t) {
                int16x8_t av[4];
                load_act(a[t].q + (c0 + b) * kActBlock, av);
#pragma GCC unroll 2
                for (int r = 0; r < R; ++r)
                    acc[r][t] =
                        vfmaq_n_f32(acc[r][t], vcvtq_f32_s32(dot32(q[r], av)), scale[r][t][b]);
            }
        }
    }
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < NT; ++t) out[t][r] = vaddvq_f32(acc[r][t]) + mins[r][t];
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

// Tokens are walked in chunks whose activations stay in cache while a thread's rows stream past;
// rows are decoded kDecodedRows at a time and reused by every tile of 2 rows x 4 tokens.
constexpr int64_t kTokChunk = 64;
constexpr int kPromptRows = 2, kPromptTokens = 4, kDecodedRows = 8;

template <class T>
void drive_decoded(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y, int64_t ldy,
                   int64_t r0, int64_t r1) {
    const int64_t nb = w.cols / kActBlock;
    const size_t astride = static_cast<size_t>(nb) * kActBytes32;
    // Per-thread scratch, reused across calls: per row nb * 32 codes, nb scales and nb mins.
    const size_t row_floats = static_cast<size_t>(nb) * (kActBlock / 2 + 2);
    thread_local std::vector<float> scratch;
    scratch.resize(kDecodedRows * row_floats);
    int16_t* q[kDecodedRows];
    float *dw[kDecodedRows], *mn[kDecodedRows];
    DecodedRow rows[kDecodedRows];
    for (int i = 0; i < kDecodedRows; ++i) {
        float* base = scratch.data() + i * row_floats;
        q[i] = reinterpret_cast<int16_t*>(base);
        dw[i] = base + nb * (kActBlock / 2);
        mn[i] = dw[i] + nb;
        rows[i] = {q[i], dw[i], mn[i]};
    }
    for (int64_t tc = 0; tc < n_tok; tc += kTokChunk) {
        const int64_t tc1 = std::min(n_tok, tc + kTokChunk);
        for (int64_t r = r0; r < r1;) {
            const int nr = static_cast<int>(std::min<int64_t>(r1 - r, kDecodedRows));
            for (int i = 0; i < nr; ++i)
                decode_row<T>(w.data + static_cast<size_t>(r + i) * w.row_bytes, nb, q[i], dw[i],
                              mn[i]);
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

// ---- drivers -------------------------------------------------------------------------------
template <class T>
void drive(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y, int64_t ldy,
           int64_t r0, int64_t r1) {
    if (n_tok > 1) return drive_decoded<T>(w, acts, n_tok, y, ldy, r0, r1);
    const int64_t nb = w.cols / kActBlock;
    const ActRow a(acts, nb);
    int64_t r = r0;
    for (; r + kDecodeRows <= r1; r += kDecodeRows) {
        const uint8_t* rows[kDecodeRows];
        for (int i = 0; i < kDecodeRows; ++i)
            rows[i] = w.data + static_cast<size_t>(r + i) * w.row_bytes;
        if constexpr (IsGrouped<T>::value)
            tile_1tok_grouped<typename T::Plain::Inner>(rows, a, nb, y + r);
        else if constexpr (T::kGroup == 1)
            tile_1tok<T>(rows, a, nb, y + r);
        else
            tile_1tok_k<T>(rows, a, nb, y + r);
    }
    if (r < r1) drive_decoded<T>(w, acts, 1, y, 1, r, r1);  // fewer than 4 rows left
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
        default:
            return;
    }
}

}  // namespace ffnskip::cpu::neon
