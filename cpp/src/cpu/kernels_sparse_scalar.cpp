// Portable channel-sparse matvec on weights laid out by input channel (transposed.h): the
// reference the AVX2 kernel is tested against. It computes the same integer sums as the AVX2
// kernel (codes times the 8-bit values of SparseInput, per scale block) and folds them with
// the block scales in the same order, so both levels agree up to float summation order.
#include <algorithm>
#include <cstring>

#include "cpu/kernels_impl.h"
#include "cpu/transposed.h"
#include "fp16.h"
#include "ggml_types.h"

namespace ffnskip::cpu {

namespace {

inline uint16_t u16_at(const uint8_t* p, int64_t k) {
    uint16_t v;
    std::memcpy(&v, p + 2 * k, 2);
    return v;
}

// Raw (unsigned) code of output p (0..63) of a code group (see transposed.h for the order).
int raw_code(uint32_t type, const uint8_t* g, int p) {
    const int h = p / 32, q = p % 32;
    const int lane = 4 * (q % 8) + q / 8;
    if (type == GGML_Q8_0) return g[32 * h + lane];
    int v = (g[lane] >> (4 * h)) & 0xF;
    if (type == GGML_Q5_0 || type == GGML_Q5_1 || type == GGML_Q5_K) {
        v |= ((g[32 + lane % 8] >> (lane / 8 + 4 * h)) & 1) << 4;
    } else if (type == GGML_Q6_K) {
        v |= ((g[32 + lane % 16] >> (2 * (lane / 16) + 4 * h)) & 3) << 4;
    }
    return v;
}

float float_weight(uint32_t type, const uint8_t* g, int p) {
    if (type == GGML_F32) {
        float v;
        std::memcpy(&v, g + 4 * p, 4);
        return v;
    }
    const uint16_t h = u16_at(g, p);
    return type == GGML_F16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
}

// The code offset: w = D * (q - offset), subtracted from a block's integer sum as offset * qsum.
int code_offset(uint32_t type) {
    switch (type) {
        case GGML_Q4_0:
            return 8;
        case GGML_Q5_0:
            return 16;
        case GGML_Q6_K:
            return 32;
        case GGML_Q8_0:
            return 128;
        default:
            return 0;
    }
}

// Output o of the product over units [k0, k1) of x.
float output_value(const TransposedView& t, const SparseInput& x, int64_t k0, int64_t k1,
                   int64_t o) {
    const size_t goff = static_cast<size_t>(o / kTGroup) * t.group, O = static_cast<size_t>(o);
    const int p = static_cast<int>(o % kTGroup);
    if (t.blk <= 1) {
        float acc = 0.0f;
        for (int64_t k = k0; k < k1; ++k)
            acc += x.value[k] * float_weight(t.type, t.row_at(x.index[k]) + goff, p);
        return acc;
    }
    const size_t P = static_cast<size_t>(t.n_pad);
    const int bps = t.blocks_per_super();
    const int off = code_offset(t.type);
    float acc = 0.0f;
    float z = 0.0f, zm = 0.0f;  // K-quants: one super-block's sums, folded when it ends
    int64_t super = -1;
    auto fold_super = [&] {
        if (super < 0) return;
        const uint8_t* sup = t.super_at(super);
        acc += fp16_to_fp32(u16_at(sup, o)) * z;
        if (t.type != GGML_Q6_K) acc -= fp16_to_fp32(u16_at(sup + 2 * P, o)) * zm;
        z = zm = 0.0f;
    };
    for (int64_t kb = k0; kb < k1; ++kb) {
        const int64_t b = x.block[kb];
        const uint8_t* tbl = t.block_at(b);
        const uint8_t* rows = tbl + t.scale_row() + goff;
        // The AVX2 kernel's int16 lanes never overflow (transposed.h); its int32 sums are exact.
        int64_t isum = 0;
        for (int32_t c = x.first[kb]; c < x.first[kb + 1]; ++c) {
            const uint8_t* grp = rows + static_cast<size_t>(x.slot[c]) * t.code_row();
            isum += x.q(static_cast<size_t>(c)) * raw_code(t.type, grp, p);
        }
        isum -= static_cast<int64_t>(off) * x.qsum[kb];
        const float dx = x.d[kb], sx = dx * static_cast<float>(x.qsum[kb]);
        const float prod = dx * static_cast<float>(isum);
        if (bps > 0) {
            const int64_t S = b / bps;
            if (S != super) {
                fold_super();
                super = S;
            }
            if (t.type == GGML_Q6_K) {  // w = d * sc * (q - 32)
                z += static_cast<float>(static_cast<int8_t>(tbl[O])) * prod;
            } else {  // w = d * sc * q - dmin * mn
                z += static_cast<float>(tbl[O]) * prod;
                zm += static_cast<float>(tbl[P + O]) * sx;
            }
            continue;
        }
        // D * dx * (isum - offset * qsum) + M * sx
        acc += fp16_to_fp32(u16_at(tbl, o)) * prod;
        if (t.type == GGML_Q4_1 || t.type == GGML_Q5_1)
            acc += fp16_to_fp32(u16_at(tbl + 2 * P, o)) * sx;
    }
    fold_super();
    return acc;
}

}  // namespace

void sparse_matvec_scalar(const TransposedView& t, const SparseInput& x, float* y, int64_t k0,
                          int64_t k1) {
    for (int64_t o = 0; o < t.n_out; ++o) y[o] = output_value(t, x, k0, k1, o);
}

}  // namespace ffnskip::cpu
