// Prompt-sized matmul on NEON for F32/F16/BF16 weights: y[t][r] = sum_k x[t][k] * W[r][k] as an
// f32 GEMM (the AArch64 counterpart of kernels_gemm_f32_avx2.cpp).
//
// A panel of 16 weight rows x 256 columns is dequantized once and stored transposed (k-major, 16
// floats per k, 16 KiB: stays in L1). The micro-kernel holds a 4-token x 16-row output tile in 16
// registers; per 4 columns it loads 4 x values per token and 16 panel vectors, and issues 64 FMAs
// by lane (FMLA v.4s, v.4s, v.s[i]), so there are no broadcasts and 4 FMAs per load.
#include <algorithm>
#include <vector>

#include "cpu/kernels_impl.h"
#include "cpu/kernels_neon.h"
#include "cpu/math_neon.h"
#include "ggml_types.h"

namespace ffnskip::cpu::neon {

namespace {

constexpr int kRows = 16;    // panel height (four q registers)
constexpr int kTok = 4;      // tokens per micro-tile: 16 accumulators + 4 panel + 4 x registers
constexpr int64_t kK = 256;  // panel width: a multiple of every block size

// acc[t] += panel row k (16 rows) * x[t][k], x[t][k] being lane L of xv[t].
template <int L, int NT>
inline void step(const float* p, const float32x4_t* xv, float32x4_t (*acc)[4]) {
    const float32x4x4_t w = vld1q_f32_x4(p);
    for (int t = 0; t < NT; ++t)
        for (int i = 0; i < 4; ++i) acc[t][i] = vfmaq_laneq_f32(acc[t][i], w.val[i], xv[t], L);
}

// acc (NT x 16, in c) += x[t][k0 .. k0 + kc) . panel
template <int NT>
void micro(const float* panel, const float* const* xs, int64_t kc, float* c) {
    float32x4_t acc[NT][4];
    for (int t = 0; t < NT; ++t)
        for (int i = 0; i < 4; ++i) acc[t][i] = vld1q_f32(c + 16 * t + 4 * i);
    int64_t k = 0;
    for (; k + 4 <= kc; k += 4) {
        float32x4_t xv[NT];
        for (int t = 0; t < NT; ++t) xv[t] = vld1q_f32(xs[t] + k);
        step<0, NT>(panel + 16 * k, xv, acc);
        step<1, NT>(panel + 16 * (k + 1), xv, acc);
        step<2, NT>(panel + 16 * (k + 2), xv, acc);
        step<3, NT>(panel + 16 * (k + 3), xv, acc);
    }
    for (; k < kc; ++k) {
        const float32x4x4_t w = vld1q_f32_x4(panel + 16 * k);
        for (int t = 0; t < NT; ++t)
            for (int i = 0; i < 4; ++i) acc[t][i] = vfmaq_n_f32(acc[t][i], w.val[i], xs[t][k]);
    }
    for (int t = 0; t < NT; ++t)
        for (int i = 0; i < 4; ++i) vst1q_f32(c + 16 * t + 4 * i, acc[t][i]);
}

using MicroFn = void (*)(const float*, const float* const*, int64_t, float*);
constexpr MicroFn kMicro[kTok + 1] = {nullptr, micro<1>, micro<2>, micro<3>, micro<4>};

// Rows [r, r + nr) x columns [k0, k0 + kc) -> panel[k][i] (rows past nr are zero).
void pack_panel(const WeightView& w, int64_t r, int nr, int64_t k0, int64_t kc, int64_t bs,
                size_t bbytes, float* rowbuf, float* panel) {
    for (int i = 0; i < kRows; ++i) {
        float* dst = rowbuf + i * kK;
        if (i < nr) {
            const uint8_t* src = w.data + static_cast<size_t>(r + i) * w.row_bytes +
                                 static_cast<size_t>(k0 / bs) * bbytes;
            dequantize_row(w.type, src, dst, kc);
        } else {
            std::fill(dst, dst + kc, 0.0f);
        }
    }
    // 4x4 transposes: rowbuf[i][k] -> panel[k][i].
    for (int64_t k = 0; k + 4 <= kc; k += 4) {
        for (int i0 = 0; i0 < kRows; i0 += 4) {
            float32x4_t v[4];
            for (int j = 0; j < 4; ++j) v[j] = vld1q_f32(rowbuf + (i0 + j) * kK + k);
            transpose4(v);
            for (int j = 0; j < 4; ++j) vst1q_f32(panel + (k + j) * kRows + i0, v[j]);
        }
    }
    for (int64_t k = kc & ~int64_t{3}; k < kc; ++k) {
        for (int i = 0; i < kRows; ++i) panel[k * kRows + i] = rowbuf[i * kK + k];
    }
}

}  // namespace

void gemm_f32(const WeightView& w, const float* x, int64_t n_tok, float* y, int64_t ldy, int64_t r0,
              int64_t r1) {
    const TypeInfo* ti = type_info(w.type);
    const int64_t bs = ti->block_size;
    // Per-thread scratch, reused across calls: the engine calls this from its pool threads.
    thread_local std::vector<float> rowbuf_s, panel_s, c_s;
    rowbuf_s.resize(kRows * kK);
    panel_s.resize(kRows * kK);
    c_s.resize(static_cast<size_t>(n_tok) * kRows);
    float *rowbuf = rowbuf_s.data(), *panel = panel_s.data(), *c = c_s.data();
    for (int64_t r = r0; r < r1; r += kRows) {
        const int nr = static_cast<int>(std::min<int64_t>(kRows, r1 - r));
        std::fill(c, c + n_tok * kRows, 0.0f);
        for (int64_t k0 = 0; k0 < w.cols; k0 += kK) {
            const int64_t kc = std::min(kK, w.cols - k0);
            pack_panel(w, r, nr, k0, kc, bs, ti->block_bytes, rowbuf, panel);
            for (int64_t t = 0; t < n_tok; t += kTok) {
                const int nt = static_cast<int>(std::min<int64_t>(kTok, n_tok - t));
                const float* xs[kTok];
                for (int j = 0; j < nt; ++j) xs[j] = x + (t + j) * w.cols + k0;
                kMicro[nt](panel, xs, kc, c + t * kRows);
            }
        }
        for (int64_t t = 0; t < n_tok; ++t)
            std::copy(c + t * kRows, c + t * kRows + nr, y + t * ldy + r);
    }
}

}  // namespace ffnskip::cpu::neon
