// Portable kernels: the fallback on CPUs without AVX2, and the baseline the SIMD kernels are
// tested against. The quantized dot products use the same integer decomposition as the SIMD
// code (weight codes times 16-bit activations, offsets through block sums), so both levels agree
// up to the order of float additions.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/kernels_impl.h"
#include "fp16.h"
#include "ggml_types.h"
#include "quants.h"

namespace ffnskip::cpu {

namespace {

// ---- activations -------------------------------------------------------------------------------
// Symmetric 16-bit quantization per block of 32 with one scale per group of `group` blocks
// (kernels_impl.h act_group_blocks): d = max|x| / 32767 over the group, q = round-to-nearest-even(x
// / d) (computed as x * (32767 / max|x|), which the SIMD paths reproduce bit for bit).
void prepare_row_scalar(const float* x, int64_t cols, int group, uint8_t* out) {
    const int64_t nb = cols / kActBlock;
    auto* qs = reinterpret_cast<int16_t*>(out);
    auto* d = reinterpret_cast<float*>(out + nb * kActBlock * sizeof(int16_t));
    float* s = d + nb;
    for (int64_t g0 = 0; g0 < nb; g0 += group) {
        const int64_t g1 = std::min<int64_t>(nb, g0 + group);
        float amax = 0.0f;
        bool finite = true;
        for (int64_t i = g0 * kActBlock; i < g1 * kActBlock; ++i) {
            amax = std::fmax(amax, std::fabs(x[i]));
            finite = finite && std::isfinite(x[i]);
        }
        if (!finite) {  // Inf/NaN activations (a broken model): propagate NaN, never cast it
            for (int64_t b = g0; b < g1; ++b) set_nonfinite_block(qs + b * kActBlock, d + b, s + b);
            continue;
        }
        const float id = amax > kActMinMax ? kActMax / amax : 0.0f;
        for (int64_t b = g0; b < g1; ++b) {
            int32_t sum = 0;
            for (int i = 0; i < kActBlock; ++i) {
                const auto q = static_cast<int16_t>(std::nearbyint(x[b * kActBlock + i] * id));
                qs[b * kActBlock + i] = q;
                sum += q;
            }
            d[b] = amax / kActMax;
            s[b] = d[b] * static_cast<float>(sum);
        }
    }
}

// ---- quantized weights -----------------------------------------------------------------------
// Every quantized type is read as blocks of 32: integer codes q[i] (signed for Q4_0/Q5_0/Q8_0/Q6_K,
// unsigned for the types with a min), a scale d and an additive term c, w[i] = d * q[i] + c, so
// dot(w, a) = d * da * sum(q * qa) + c * s (s: the activation block sum). Q6_K's two per-16 scales
// are folded into its codes (|q * scale| <= 4096), Q4_K/Q5_K's per-32 scale and min into d and c.
// The AVX2 kernels compute exactly these integer sums.
struct Block32 {
    int q[32];
    float d, c;
};

inline int nib(const uint8_t* qs, int j) {
    return j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
}
inline uint32_t load_u32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

void scale_min_k4(const uint8_t* s, int j, int& sc, int& mn) {
    if (j < 4) {
        sc = s[j] & 63;
        mn = s[j + 4] & 63;
    } else {
        sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// Sub-block j (32 values) of a Q4_K / Q5_K super-block: w = d * sc_j * q - dmin * m_j.
template <class Blk>
void decode_q45k(const Blk& blk, const uint8_t* qh, int j, Block32& o) {
    int sc, mn;
    scale_min_k4(blk.scales, j, sc, mn);
    o.d = fp16_to_fp32(blk.d) * static_cast<float>(sc);
    o.c = -(fp16_to_fp32(blk.dmin) * static_cast<float>(mn));
    const uint8_t* q = blk.qs + 32 * (j / 2);
    for (int l = 0; l < 32; ++l) {
        int v = (q[l] >> (4 * (j & 1))) & 0xF;
        if (qh != nullptr) v |= ((qh[l] >> j) & 1) << 4;
        o.q[l] = v;
    }
}

void decode32(uint32_t type, const uint8_t* row, int64_t b, Block32& o) {
    switch (type) {
        case GGML_Q4_0: {
            const auto& blk = reinterpret_cast<const block_q4_0*>(row)[b];
            o.d = fp16_to_fp32(blk.d);
            o.c = 0.0f;
            for (int j = 0; j < 32; ++j) o.q[j] = nib(blk.qs, j) - 8;
            return;
        }
        case GGML_Q4_1: {
            const auto& blk = reinterpret_cast<const block_q4_1*>(row)[b];
            o.d = fp16_to_fp32(blk.d);
            o.c = fp16_to_fp32(blk.m);
            for (int j = 0; j < 32; ++j) o.q[j] = nib(blk.qs, j);
            return;
        }
        case GGML_Q5_0: {
            const auto& blk = reinterpret_cast<const block_q5_0*>(row)[b];
            const uint32_t qh = load_u32(blk.qh);
            o.d = fp16_to_fp32(blk.d);
            o.c = 0.0f;
            for (int j = 0; j < 32; ++j) o.q[j] = (nib(blk.qs, j) | ((qh >> j) & 1) << 4) - 16;
            return;
        }
        case GGML_Q5_1: {
            const auto& blk = reinterpret_cast<const block_q5_1*>(row)[b];
            const uint32_t qh = load_u32(blk.qh);
            o.d = fp16_to_fp32(blk.d);
            o.c = fp16_to_fp32(blk.m);
            for (int j = 0; j < 32; ++j) o.q[j] = nib(blk.qs, j) | ((qh >> j) & 1) << 4;
            return;
        }
        case GGML_Q8_0: {
            const auto& blk = reinterpret_cast<const block_q8_0*>(row)[b];
            o.d = fp16_to_fp32(blk.d);
            o.c = 0.0f;
            for (int j = 0; j < 32; ++j) o.q[j] = blk.qs[j];
            return;
        }
        case GGML_Q4_K: {
            const auto& blk = reinterpret_cast<const block_q4_K*>(row)[b / 8];
            return decode_q45k(blk, nullptr, static_cast<int>(b % 8), o);
        }
        case GGML_Q5_K: {
            const auto& blk = reinterpret_cast<const block_q5_K*>(row)[b / 8];
            return decode_q45k(blk, blk.qh, static_cast<int>(b % 8), o);
        }
        default: {  // GGML_Q6_K: group g of 32 values, w = d * scale * (q - 32) per 16
            const auto& blk = reinterpret_cast<const block_q6_K*>(row)[b / 8];
            const int g = static_cast<int>(b % 8), h = g / 4, k = g % 4;
            const uint8_t* ql = blk.ql + 64 * h + 32 * (k & 1);
            const uint8_t* qh = blk.qh + 32 * h;
            o.d = fp16_to_fp32(blk.d);
            o.c = 0.0f;
            for (int l = 0; l < 32; ++l) {
                const int q = ((ql[l] >> (4 * (k / 2))) & 0xF) | ((qh[l] >> (2 * k)) & 3) << 4;
                o.q[l] = (q - 32) * blk.scales[2 * g + l / 16];
            }
            return;
        }
    }
}

float dot_row_quant(uint32_t type, const uint8_t* row, const uint8_t* act, int64_t cols) {
    const int64_t nb = cols / kActBlock;
    const auto* aq = reinterpret_cast<const int16_t*>(act);
    const auto* ad = reinterpret_cast<const float*>(act + nb * kActBlock * sizeof(int16_t));
    const float* as = ad + nb;
    float acc = 0.0f;
    Block32 blk;
    for (int64_t b = 0; b < nb; ++b) {
        decode32(type, row, b, blk);
        // 64-bit: Q6_K's pre-scaled codes reach 4096 * 32767 per product.
        int64_t isum = 0;
        for (int j = 0; j < 32; ++j) isum += blk.q[j] * aq[b * kActBlock + j];
        acc += static_cast<float>(isum) * (blk.d * ad[b]) + blk.c * as[b];
    }
    return acc;
}

// ---- float weights -----------------------------------------------------------------------------
inline float load_weight(uint32_t type, const uint8_t* row, int64_t k) {
    switch (type) {
        case GGML_F16:
            return fp16_to_fp32(reinterpret_cast<const uint16_t*>(row)[k]);
        case GGML_BF16:
            return bf16_to_fp32(reinterpret_cast<const uint16_t*>(row)[k]);
        default:
            return reinterpret_cast<const float*>(row)[k];
    }
}

float dot_row_float(uint32_t type, const uint8_t* row, const float* x, int64_t cols) {
    float acc = 0.0f;
    for (int64_t k = 0; k < cols; ++k) acc += load_weight(type, row, k) * x[k];
    return acc;
}

void matmul_scalar(const WeightView& w, const float* x, const uint8_t* acts, int64_t n_tok,
                   float* y, int64_t ldy, int64_t r0, int64_t r1) {
    const bool quant = act_kind(w.type) == ActKind::kBlock32;
    const size_t astride = quant ? static_cast<size_t>(w.cols / kActBlock) * kActBytes32 : 0;
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t* row = w.data + static_cast<size_t>(r) * w.row_bytes;
        for (int64_t t = 0; t < n_tok; ++t) {
            y[t * ldy + r] = quant ? dot_row_quant(w.type, row, acts + t * astride, w.cols)
                                   : dot_row_float(w.type, row, x + t * w.cols, w.cols);
        }
    }
}

// ---- f16 helpers -------------------------------------------------------------------------------
float dot_f16_f32_scalar(const uint16_t* a, const float* b, int64_t n) {
    float acc = 0.0f;
    for (int64_t i = 0; i < n; ++i) acc += fp16_to_fp32(a[i]) * b[i];
    return acc;
}

void axpy_f16_scalar(float a, const uint16_t* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += a * fp16_to_fp32(x[i]);
}

void f32_to_f16_scalar(const float* x, uint16_t* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
}

}  // namespace

// Plain rows only (kernels.cpp ungroups grouped rows for the levels without grouped kernels).
void matvec_rows_scalar(const WeightView& w, const uint8_t* acts, const int32_t* rows, int64_t n,
                        float* y) {
    for (int64_t k = 0; k < n; ++k) {
        y[rows[k]] = dot_row_quant(w.type, w.data + static_cast<size_t>(rows[k]) * w.row_bytes,
                                   acts, w.cols);
    }
}

const KernelTable kScalarKernels = {prepare_row_scalar, matmul_scalar,       dequantize_row_ref,
                                    dot_f16_f32_scalar, axpy_f16_scalar,     f32_to_f16_scalar,
                                    matvec_rows_scalar, sparse_matvec_scalar};

}  // namespace ffnskip::cpu
