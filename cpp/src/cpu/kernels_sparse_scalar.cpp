// Portable channel-sparse matvec on weights laid out by input channel (transposed.h): the
// reference the AVX2 kernel is tested against. It computes the same integer sums as the AVX2
// kernel (codes times the 16-bit values of SparseInput, per scale block) and folds them with
// the block scales in the same order, so both levels agree up to float summation order.
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

// Raw code of output o in a code row (see transposed.h for the stored order).
int raw_code(uint32_t type, const uint8_t* row, size_t gbytes, int64_t o) {
    const uint8_t* g = row + static_cast<size_t>(o / kTGroup) * gbytes;
    const int pos = group_position(static_cast<int>(o % kTGroup));
    if (type == GGML_Q8_0) return static_cast<int8_t>(g[pos]);
    int v = (g[pos & 15] >> (pos & 16 ? 4 : 0)) & 0xF;
    if (type == GGML_Q5_0 || type == GGML_Q5_1 || type == GGML_Q5_K) {
        v |= ((g[16 + pos / 8] >> (pos % 8)) & 1) << 4;
    } else if (type == GGML_Q6_K) {
        v |= ((g[16 + (pos & 7)] >> (2 * (pos >> 3))) & 3) << 4;
    }
    return v;
}

float float_weight(uint32_t type, const uint8_t* row, int64_t o) {
    if (type == GGML_F32) {
        float v;
        std::memcpy(&v, row + 4 * o, 4);
        return v;
    }
    const uint16_t h = u16_at(row, o);
    return type == GGML_F16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
}

// Offset folded into a min term: w = D * (q - offset) = D * q + (-offset * D).
float code_offset(uint32_t type) {
    switch (type) {
        case GGML_Q4_0:
            return 8.0f;
        case GGML_Q5_0:
            return 16.0f;
        case GGML_Q6_K:
            return 32.0f;
        default:
            return 0.0f;
    }
}

float output_value(const TransposedView& t, const SparseInput& x, int64_t o) {
    if (t.blk <= 1) {
        float acc = 0.0f;
        for (int64_t k = 0; k < x.n_active; ++k) {
            const uint8_t* row = t.codes + static_cast<size_t>(x.index[k]) * t.code_row;
            acc += x.value[k] * float_weight(t.type, row, o);
        }
        return acc;
    }
    const size_t gbytes = t.group_bytes();
    const size_t P = static_cast<size_t>(t.n_pad), O = static_cast<size_t>(o);
    const bool kquant = t.super > 0;
    const float off = code_offset(t.type);
    float acc = 0.0f;
    float z = 0.0f, zm = 0.0f;  // K-quants: one super-block's sums, folded when it ends
    int64_t super = -1;
    auto fold_super = [&] {
        if (super < 0) return;
        const uint8_t* sup = t.supers + static_cast<size_t>(super) * t.super_row;
        acc += fp16_to_fp32(u16_at(sup, o)) * z;
        if (t.type != GGML_Q6_K) acc -= fp16_to_fp32(u16_at(sup + 2 * P, o)) * zm;
        z = zm = 0.0f;
    };
    for (size_t kb = 0; kb < x.block.size(); ++kb) {
        const int64_t b = x.block[kb];
        // 64-bit, like the dense reference: the AVX2 kernel's int32 lanes stay far below 2^31.
        int64_t isum = 0;
        for (int32_t p = x.first[kb]; p < x.first[kb + 1]; ++p) {
            const auto qa = static_cast<int16_t>(x.packed[p] & 0xFFFF);
            const auto qb = static_cast<int16_t>(static_cast<uint32_t>(x.packed[p]) >> 16);
            isum += qa * raw_code(t.type, t.codes + static_cast<size_t>(x.row_a[p]) * t.code_row,
                                  gbytes, o);
            isum += qb * raw_code(t.type, t.codes + static_cast<size_t>(x.row_b[p]) * t.code_row,
                                  gbytes, o);
        }
        const float dx = x.d[kb], sx = x.s[kb];
        const uint8_t* sc = t.scales + static_cast<size_t>(b) * t.scale_row;
        if (kquant) {
            const int64_t S = b * t.blk / t.super;
            if (S != super) {
                fold_super();
                super = S;
            }
            if (t.type == GGML_Q6_K) {  // w = d * sc * (q - 32)
                const auto s8 = static_cast<float>(static_cast<int8_t>(sc[O]));
                z += s8 * (dx * static_cast<float>(isum) - off * sx);
            } else {  // w = d * sc * q - dmin * mn
                z += static_cast<float>(sc[O]) * (dx * static_cast<float>(isum));
                zm += static_cast<float>(sc[P + O]) * sx;
            }
            continue;
        }
        // D * (dx * isum - offset * sx) + M * sx
        float inner = dx * static_cast<float>(isum);
        if (off != 0.0f) inner -= off * sx;
        acc += fp16_to_fp32(u16_at(sc, o)) * inner;
        if (t.type == GGML_Q4_1 || t.type == GGML_Q5_1)
            acc += fp16_to_fp32(u16_at(sc + 2 * P, o)) * sx;
    }
    fold_super();
    return acc;
}

}  // namespace

void sparse_matvec_scalar(const TransposedView& t, const SparseInput& x, float* y, int64_t o0,
                          int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) y[o] = output_value(t, x, o);
}

}  // namespace ffnskip::cpu
