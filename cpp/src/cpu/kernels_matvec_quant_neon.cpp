// NEON integer matmul of quantized weights with one token's 16-bit activations (decode): tiles of
// 4 rows that decode the codes inside the tile, with each block's scales converted inline (8 per
// conversion for the K-quants and for grouped Q4_0/Q4_1 rows, repack.h). The last rows (fewer
// than 4) go through the prompt file's decoded rows (gemm_quant). The types' decoders are in
// kernels_quant_blocks_neon.h.
#include "cpu/kernels_quant_blocks_neon.h"

namespace ffnskip::cpu::neon {

namespace {

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

template <class T>
void drive(const WeightView& w, const uint8_t* acts, float* y, int64_t r0, int64_t r1) {
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
    if (r < r1) gemm_quant(w, acts, 1, y, 1, r, r1);  // fewer than 4 rows left: decoded rows
}

}  // namespace

void matvec_quant(const WeightView& w, const uint8_t* acts, float* y, int64_t r0, int64_t r1) {
    with_decoder(w.type,
                 [&](auto tag) { drive<typename decltype(tag)::type>(w, acts, y, r0, r1); });
}

}  // namespace ffnskip::cpu::neon
