// NEON kernels: float-weight matmul at few tokens, fast dequantization, activation quantization,
// f16 helpers, and the dispatch table. The quantized matmul lives in kernels_matvec_quant_neon.cpp
// (one token) and kernels_gemm_quant_neon.cpp (prompts), the prompt-sized float GEMM in
// kernels_gemm_f32_neon.cpp.
#include "cpu/kernels_neon.h"

#include <algorithm>

#include "cpu/kernels_impl.h"
#include "fp16.h"
#include "ggml_types.h"

namespace ffnskip::cpu {
namespace neon {
namespace {

// ---- float weights (F32 / F16 / BF16) against f32 x ----------------------------------------
template <int kType>
inline float32x4_t load4(const uint8_t* row, int64_t k) {
    if constexpr (kType == GGML_F16) {
        return vcvt_f32_f16(vld1_f16(reinterpret_cast<const float16_t*>(row) + k));
    } else if constexpr (kType == GGML_BF16) {
        const uint16x4_t h = vld1_u16(reinterpret_cast<const uint16_t*>(row) + k);
        return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
    } else {
        return vld1q_f32(reinterpret_cast<const float*>(row) + k);
    }
}

template <int kType>
inline float load1(const uint8_t* row, int64_t k) {
    const auto* h = reinterpret_cast<const uint16_t*>(row);
    if constexpr (kType == GGML_F16) return fp16_to_fp32(h[k]);
    if constexpr (kType == GGML_BF16) return bf16_to_fp32(h[k]);
    return reinterpret_cast<const float*>(row)[k];
}

// R rows x NT tokens; two accumulators per pair (8 columns per step) so that even the 1 x 1 tile
// has two independent FMA chains.
template <int kType, int R, int NT>
void tile_float(const uint8_t* const* rows, const float* const* xs, int64_t cols, float* y,
                int64_t ldy, int64_t r, int64_t t0) {
    float32x4_t acc[R][NT][2];
    for (int i = 0; i < R; ++i)
        for (int j = 0; j < NT; ++j) acc[i][j][0] = acc[i][j][1] = vdupq_n_f32(0.0f);
    int64_t k = 0;
    for (; k + 8 <= cols; k += 8) {
        for (int i = 0; i < R; ++i) {
            const float32x4_t w0 = load4<kType>(rows[i], k), w1 = load4<kType>(rows[i], k + 4);
            for (int j = 0; j < NT; ++j) {
                acc[i][j][0] = vfmaq_f32(acc[i][j][0], w0, vld1q_f32(xs[j] + k));
                acc[i][j][1] = vfmaq_f32(acc[i][j][1], w1, vld1q_f32(xs[j] + k + 4));
            }
        }
    }
    for (int i = 0; i < R; ++i) {
        for (int j = 0; j < NT; ++j) {
            float s = vaddvq_f32(vaddq_f32(acc[i][j][0], acc[i][j][1]));
            for (int64_t kk = k; kk < cols; ++kk) s += load1<kType>(rows[i], kk) * xs[j][kk];
            y[(t0 + j) * ldy + r + i] = s;
        }
    }
}

template <int kType>
void matmul_float(const WeightView& w, const float* x, int64_t n_tok, float* y, int64_t ldy,
                  int64_t r0, int64_t r1) {
    using Fn = void (*)(const uint8_t* const*, const float* const*, int64_t, float*, int64_t,
                        int64_t, int64_t);
    constexpr Fn kTiles[5][5] = {
        {},
        {nullptr, tile_float<kType, 1, 1>, tile_float<kType, 1, 2>, tile_float<kType, 1, 3>,
         tile_float<kType, 1, 4>},
        {nullptr, tile_float<kType, 2, 1>, tile_float<kType, 2, 2>, tile_float<kType, 2, 3>,
         tile_float<kType, 2, 4>},
        {},
        {nullptr, tile_float<kType, 4, 1>, nullptr, nullptr, nullptr},
    };
    const int rstep = n_tok == 1 ? 4 : 2;
    for (int64_t r = r0; r < r1;) {
        const int nr = r1 - r >= rstep ? rstep : 1;
        const uint8_t* rows[4];
        for (int i = 0; i < nr; ++i) rows[i] = w.data + static_cast<size_t>(r + i) * w.row_bytes;
        for (int64_t t = 0; t < n_tok;) {
            const int nt = static_cast<int>(std::min<int64_t>(n_tok - t, nr == 4 ? 1 : 4));
            const float* xs[4];
            for (int j = 0; j < nt; ++j) xs[j] = x + (t + j) * w.cols;
            kTiles[nr][nt](rows, xs, w.cols, y, ldy, r, t);
            t += nt;
        }
        r += nr;
    }
}

void matmul(const WeightView& w, const float* x, const uint8_t* acts, int64_t n_tok, float* y,
            int64_t ldy, int64_t r0, int64_t r1) {
    const bool float_weights = act_kind(w.type) == ActKind::kF32;
    if (float_weights && n_tok >= kGemmMinTokens) return gemm_f32(w, x, n_tok, y, ldy, r0, r1);
    switch (w.type) {
        case GGML_F32:
            return matmul_float<GGML_F32>(w, x, n_tok, y, ldy, r0, r1);
        case GGML_F16:
            return matmul_float<GGML_F16>(w, x, n_tok, y, ldy, r0, r1);
        case GGML_BF16:
            return matmul_float<GGML_BF16>(w, x, n_tok, y, ldy, r0, r1);
        default:
            if (n_tok == 1) return matvec_quant(w, acts, y, r0, r1);
            return gemm_quant(w, acts, n_tok, y, ldy, r0, r1);
    }
}

// ---- dequantization ------------------------------------------------------------------------
// 32 int8 codes -> dst[i] = scale * code (+ add, when kAdd): a multiply, then an add, as the
// reference rounds (the core is built with -ffp-contract=off, so they are not fused).
template <bool kAdd>
inline void store_codes(int8x16x2_t codes, float32x4_t scale, float32x4_t add, float* dst) {
    int16x8_t q[4];
    widen(codes, q);
    for (int i = 0; i < 4; ++i) {
        const float32x4_t lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(q[i])));
        const float32x4_t hi = vcvtq_f32_s32(vmovl_high_s16(q[i]));
        float32x4_t a = vmulq_f32(scale, lo), b = vmulq_f32(scale, hi);
        if (kAdd) a = vaddq_f32(a, add), b = vaddq_f32(b, add);
        vst1q_f32(dst + 8 * i, a);
        vst1q_f32(dst + 8 * i + 4, b);
    }
}

template <class T>
void deq32(const void* src, float* dst, int64_t nb) {
    const auto* b = static_cast<const typename T::Block*>(src);
    for (int64_t i = 0; i < nb; ++i, dst += 32) {
        const float32x4_t dm = halves2(&b[i].d);  // lane 1 is m for the types with a min
        store_codes<T::kMin>(T::codes(b[i]), vdupq_laneq_f32(dm, 0), vdupq_laneq_f32(dm, 1), dst);
    }
}

template <class Block>
void deq_q45k(const void* src, float* dst, int64_t nsb) {
    constexpr bool kQ5 = sizeof(Block) == sizeof(block_q5_K);
    const auto* b = static_cast<const Block*>(src);
    for (int64_t i = 0; i < nsb; ++i) {
        float32x4_t sc[2], mn[2];
        scale_min_k4(b[i].scales, sc, mn);
        const float32x4_t dd = halves2(&b[i].d);  // d, dmin
        alignas(16) float dl[8], ml[8];
        for (int h = 0; h < 2; ++h) {
            vst1q_f32(dl + 4 * h, vmulq_laneq_f32(sc[h], dd, 0));
            vst1q_f32(ml + 4 * h, vnegq_f32(vmulq_laneq_f32(mn[h], dd, 1)));
        }
        for (int j = 0; j < 8; ++j, dst += 32) {
            int8x16x2_t codes;
            if constexpr (kQ5) {
                codes = q5k_codes(b[i].qs, reinterpret_cast<const block_q5_K&>(b[i]).qh, j);
            } else {
                codes = q4k_codes(b[i].qs, j);
            }
            store_codes<true>(codes, vdupq_n_f32(dl[j]), vdupq_n_f32(ml[j]), dst);
        }
    }
}

void deq_q6k(const void* src, float* dst, int64_t nsb) {
    const auto* b = static_cast<const block_q6_K*>(src);
    for (int64_t i = 0; i < nsb; ++i) {
        const float d = half(b[i].d);
        for (int g = 0; g < 8; ++g, dst += 32) {
            int16x8_t q[4];
            widen(q6k_codes(b[i], g), q);
            for (int h = 0; h < 4; ++h) {  // scale 2g for elements 0-15, 2g + 1 for 16-31
                const float32x4_t dl =
                    vdupq_n_f32(d * static_cast<float>(b[i].scales[2 * g + h / 2]));
                vst1q_f32(dst + 8 * h, vmulq_f32(dl, vcvtq_f32_s32(vmovl_s16(vget_low_s16(q[h])))));
                vst1q_f32(dst + 8 * h + 4, vmulq_f32(dl, vcvtq_f32_s32(vmovl_high_s16(q[h]))));
            }
        }
    }
}

void deq_half(const uint16_t* src, float* dst, int64_t n, bool bf16) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const uint16x4_t h = vld1_u16(src + i);
        vst1q_f32(dst + i, bf16 ? vreinterpretq_f32_u32(vshll_n_u16(h, 16))
                                : vcvt_f32_f16(vreinterpret_f16_u16(h)));
    }
    for (; i < n; ++i) dst[i] = bf16 ? bf16_to_fp32(src[i]) : fp16_to_fp32(src[i]);
}

}  // namespace

void dequantize_row(uint32_t type, const void* src, float* dst, int64_t n) {
    switch (type) {
        case GGML_F16:
            return deq_half(static_cast<const uint16_t*>(src), dst, n, false);
        case GGML_BF16:
            return deq_half(static_cast<const uint16_t*>(src), dst, n, true);
        case GGML_Q4_0:
            return deq32<Q4_0>(src, dst, n / 32);
        case GGML_Q4_1:
            return deq32<Q4_1>(src, dst, n / 32);
        case GGML_Q5_0:
            return deq32<Q5_0>(src, dst, n / 32);
        case GGML_Q5_1:
            return deq32<Q5_1>(src, dst, n / 32);
        case GGML_Q8_0:
            return deq32<Q8_0>(src, dst, n / 32);
        case GGML_Q4_K:
            return deq_q45k<block_q4_K>(src, dst, n / 256);
        case GGML_Q5_K:
            return deq_q45k<block_q5_K>(src, dst, n / 256);
        case GGML_Q6_K:
            return deq_q6k(src, dst, n / 256);
        default:
            return dequantize_row_ref(type, src, dst, n);  // F32: a copy
    }
}

// ---- activation quantization ---------------------------------------------------------------
void prepare_row(const float* x, int64_t cols, int group, uint8_t* out) {
    const int64_t nb = cols / kActBlock;
    auto* qs = reinterpret_cast<int16_t*>(out);
    auto* d = reinterpret_cast<float*>(out + nb * kActBlock * sizeof(int16_t));
    float* s = d + nb;
    for (int64_t g0 = 0; g0 < nb; g0 += group) {
        const int64_t g1 = std::min<int64_t>(nb, g0 + group);
        // x * 0 is NaN exactly for Inf/NaN inputs; such a group is marked NaN, as in the scalar
        // path.
        float32x4_t m = vdupq_n_f32(0.0f), z = vdupq_n_f32(0.0f);
        for (const float* p = x + g0 * kActBlock; p < x + g1 * kActBlock; p += 4) {
            const float32x4_t v = vld1q_f32(p);
            m = vmaxq_f32(m, vabsq_f32(v));
            z = vaddq_f32(z, vmulq_n_f32(v, 0.0f));
        }
        if (vminvq_u32(vceqq_f32(z, z)) == 0) {
            for (int64_t b = g0; b < g1; ++b) set_nonfinite_block(qs + b * kActBlock, d + b, s + b);
            continue;
        }
        const float amax = vmaxvq_f32(m);
        const float id = amax > kActMinMax ? kActMax / amax : 0.0f;
        for (int64_t b = g0; b < g1; ++b) {
            const float* xb = x + b * kActBlock;
            int32x4_t sum = vdupq_n_s32(0);
            for (int i = 0; i < 8; i += 2) {
                // FCVTNS rounds to nearest even, as nearbyint in the scalar path; |x * id| <=
                // 32767.
                const int32x4_t q0 = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(xb + 4 * i), id));
                const int32x4_t q1 = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(xb + 4 * i + 4), id));
                vst1q_s16(qs + b * kActBlock + 4 * i, vcombine_s16(vmovn_s32(q0), vmovn_s32(q1)));
                sum = vaddq_s32(sum, vaddq_s32(q0, q1));
            }
            d[b] = amax / kActMax;
            s[b] = d[b] * static_cast<float>(vaddvq_s32(sum));
        }
    }
}

namespace {

// ---- f16 helpers -------------------------------------------------------------------------------
inline float32x4_t load_f16x4(const uint16_t* p) {
    return vcvt_f32_f16(vld1_f16(reinterpret_cast<const float16_t*>(p)));
}

float dot_f16_f32(const uint16_t* a, const float* b, int64_t n) {
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        acc0 = vfmaq_f32(acc0, load_f16x4(a + i), vld1q_f32(b + i));
        acc1 = vfmaq_f32(acc1, load_f16x4(a + i + 4), vld1q_f32(b + i + 4));
    }
    for (; i + 4 <= n; i += 4) acc0 = vfmaq_f32(acc0, load_f16x4(a + i), vld1q_f32(b + i));
    float s = vaddvq_f32(vaddq_f32(acc0, acc1));
    for (; i < n; ++i) s += fp16_to_fp32(a[i]) * b[i];
    return s;
}

void axpy_f16(float a, const uint16_t* x, float* y, int64_t n) {
    const float32x4_t av = vdupq_n_f32(a);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_f32(vld1q_f32(y + i), av, load_f16x4(x + i)));
    for (; i < n; ++i) y[i] += a * fp16_to_fp32(x[i]);
}

// FCVTN rounds to nearest even (the default FPCR mode), as fp32_to_fp16.
void f32_to_f16(const float* x, uint16_t* y, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1_u16(y + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i))));
    for (; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
}

}  // namespace
}  // namespace neon

// The channel-sparse kernels have no NEON version yet: the scalar ones.
const KernelTable kNeonKernels = {neon::prepare_row,  neon::matmul,        neon::dequantize_row,
                                  neon::dot_f16_f32,  neon::axpy_f16,      neon::f32_to_f16,
                                  matvec_rows_scalar, sparse_matvec_scalar};

}  // namespace ffnskip::cpu
