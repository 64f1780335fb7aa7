// Portable kernels: the fallback on CPUs without AVX2, and the baseline the SIMD kernels are
// tested against. The quantized dot products use the same integer decomposition as the SIMD
// code (unsigned or signed weight codes times 8-bit activations, offsets through block sums), so
// both levels agree up to the order of float additions.
#include <cstring>

#include "cpu/kernels_impl.h"
#include "fp16.h"
#include "ggml_types.h"
#include "quants.h"

namespace ffnskip::cpu {

namespace {

// ---- 32-element block types --------------------------------------------------------------------
// Per block: code q[i] (signed for Q4_0/Q5_0/Q8_0, unsigned for Q4_1/Q5_1), scale d and min c:
// w[i] = d * q[i] + c, so dot(w, a) = d * da * sum(q * qa) + c * s (s: the activation block sum).
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
        default: {  // GGML_Q8_0
            const auto& blk = reinterpret_cast<const block_q8_0*>(row)[b];
            o.d = fp16_to_fp32(blk.d);
            o.c = 0.0f;
            for (int j = 0; j < 32; ++j) o.q[j] = blk.qs[j];
            return;
        }
    }
}

float dot_row_32(uint32_t type, const uint8_t* row, const uint8_t* act, int64_t cols) {
    const int64_t nb = cols / 32;
    const auto* aq = reinterpret_cast<const int8_t*>(act);
    const auto* ad = reinterpret_cast<const float*>(act + nb * 32);
    const float* as = ad + nb;
    float acc = 0.0f;
    Block32 blk;
    for (int64_t b = 0; b < nb; ++b) {
        decode32(type, row, b, blk);
        int isum = 0;
        for (int j = 0; j < 32; ++j) isum += blk.q[j] * aq[b * 32 + j];
        acc += blk.d * ad[b] * static_cast<float>(isum) + blk.c * as[b];
    }
    return acc;
}

// ---- K-quants ----------------------------------------------------------------------------------
void scale_min_k4(const uint8_t* s, int* sc, int* mn) {
    for (int j = 0; j < 4; ++j) {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 0xF) | ((s[j] >> 6) << 4);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
    }
}

// Q4_K / Q5_K: w = d * sc_j * q - dmin * m_j on sub-block j of 32.
template <bool kQ5>
float dot_row_q45k(const uint8_t* row, const ActBlockK* a, int64_t nsb) {
    float acc = 0.0f;
    for (int64_t i = 0; i < nsb; ++i) {
        const uint8_t *scales, *qs, *qh = nullptr;
        uint16_t d16, dmin16;
        if (kQ5) {
            const auto& blk = reinterpret_cast<const block_q5_K*>(row)[i];
            scales = blk.scales, qs = blk.qs, qh = blk.qh, d16 = blk.d, dmin16 = blk.dmin;
        } else {
            const auto& blk = reinterpret_cast<const block_q4_K*>(row)[i];
            scales = blk.scales, qs = blk.qs, d16 = blk.d, dmin16 = blk.dmin;
        }
        int sc[8], mn[8];
        scale_min_k4(scales, sc, mn);
        int isum = 0, imin = 0;
        for (int j = 0; j < 8; ++j) {
            const uint8_t* q = qs + 32 * (j / 2);
            int s = 0;
            for (int l = 0; l < 32; ++l) {
                int v = (q[l] >> (4 * (j & 1))) & 0xF;
                if (kQ5) v |= ((qh[l] >> j) & 1) << 4;
                s += v * a[i].qs[32 * j + l];
            }
            isum += sc[j] * s;
            imin += mn[j] * (a[i].bsums[2 * j] + a[i].bsums[2 * j + 1]);
        }
        acc += fp16_to_fp32(d16) * a[i].d * static_cast<float>(isum) -
               fp16_to_fp32(dmin16) * a[i].d * static_cast<float>(imin);
    }
    return acc;
}

// Q6_K: w = d * sc_g * (q - 32) on groups of 16; the -32 goes through the activation sums.
float dot_row_q6k(const uint8_t* row, const ActBlockK* a, int64_t nsb) {
    float acc = 0.0f;
    for (int64_t i = 0; i < nsb; ++i) {
        const auto& blk = reinterpret_cast<const block_q6_K*>(row)[i];
        int isum = 0;
        for (int g = 0; g < 8; ++g) {
            const int h = g / 4, k = g % 4;
            const uint8_t* ql = blk.ql + 64 * h + 32 * (k & 1);
            const uint8_t* qh = blk.qh + 32 * h;
            for (int half = 0; half < 2; ++half) {
                int s = 0;
                for (int l = 16 * half; l < 16 * half + 16; ++l) {
                    const int q = ((ql[l] >> (4 * (k / 2))) & 0xF) | ((qh[l] >> (2 * k)) & 3) << 4;
                    s += q * a[i].qs[32 * g + l];
                }
                const int grp = 2 * g + half;
                isum += blk.scales[grp] * (s - 32 * a[i].bsums[grp]);
            }
        }
        acc += fp16_to_fp32(blk.d) * a[i].d * static_cast<float>(isum);
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
    const ActKind kind = act_kind(w.type);
    const size_t astride =
        kind == ActKind::kBlock32  ? static_cast<size_t>(w.cols / 32) * kActBytes32
        : kind == ActKind::kBlockK ? static_cast<size_t>(w.cols / 256) * sizeof(ActBlockK)
                                   : 0;
    for (int64_t r = r0; r < r1; ++r) {
        const uint8_t* row = w.data + static_cast<size_t>(r) * w.row_bytes;
        for (int64_t t = 0; t < n_tok; ++t) {
            const uint8_t* act = acts + static_cast<size_t>(t) * astride;
            const auto* ak = reinterpret_cast<const ActBlockK*>(act);
            float v;
            switch (w.type) {
                case GGML_Q4_K:
                    v = dot_row_q45k<false>(row, ak, w.cols / 256);
                    break;
                case GGML_Q5_K:
                    v = dot_row_q45k<true>(row, ak, w.cols / 256);
                    break;
                case GGML_Q6_K:
                    v = dot_row_q6k(row, ak, w.cols / 256);
                    break;
                default:
                    v = kind == ActKind::kBlock32
                            ? dot_row_32(w.type, row, act, w.cols)
                            : dot_row_float(w.type, row, x + t * w.cols, w.cols);
            }
            y[t * ldy + r] = v;
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

const KernelTable kScalarKernels = {matmul_scalar, dequantize_row_ref, dot_f16_f32_scalar,
                                    axpy_f16_scalar, f32_to_f16_scalar};

}  // namespace ffnskip::cpu
