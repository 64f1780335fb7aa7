// NEON integer matmul of quantized weights with several tokens' 16-bit activations (the prompt;
// also the last rows, fewer than 4, of a one-token call): each row is decoded once per chunk of
// tokens into 16-bit codes, scales and mins, and a type-independent tile of 2 rows x 4 tokens runs
// on those. The types' decoders are in kernels_quant_blocks_neon.h.
#include <algorithm>
#include <vector>

#include "cpu/kernels_quant_blocks_neon.h"

namespace ffnskip::cpu::neon {

namespace {

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

}  // namespace

void gemm_quant(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y, int64_t ldy,
                int64_t r0, int64_t r1) {
    with_decoder(w.type, [&](auto tag) {
        drive_decoded<typename decltype(tag)::type>(w, acts, n_tok, y, ldy, r0, r1);
    });
}

}  // namespace ffnskip::cpu::neon
