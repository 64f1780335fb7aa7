#include "quants.h"

#include <string>

#include "ffnskip/ffnskip.h"
#include "fp16.h"

namespace ffnskip {

// The operation order below (e.g. `d * q + m`, `(d * sc) * q - dmin * m`) is the one ggml and the
// gguf package use, so that the reference matches them bit for bit, not only within rounding.

size_t row_bytes(uint32_t type, int64_t n) {
    const TypeInfo* t = type_info(type);
    if (t == nullptr || n < 0 || n % t->block_size != 0) return 0;
    return static_cast<size_t>(n / t->block_size) * t->block_bytes;
}

namespace {

// Low nibbles are elements 0..15 of a 32-block, high nibbles elements 16..31.
inline int nibble(const uint8_t* qs, int j) {
    return j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
}
inline int high_bit(const uint8_t* qh, int j) {
    const uint32_t bits = qh[0] | qh[1] << 8 | qh[2] << 16 | static_cast<uint32_t>(qh[3]) << 24;
    return (bits >> j) & 1;
}

void deq_q4_0(const block_q4_0* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += QK4_0) {
        const float d = fp16_to_fp32(b[i].d);
        for (int j = 0; j < QK4_0; ++j) y[j] = d * static_cast<float>(nibble(b[i].qs, j) - 8);
    }
}

void deq_q4_1(const block_q4_1* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += QK4_1) {
        const float d = fp16_to_fp32(b[i].d), m = fp16_to_fp32(b[i].m);
        for (int j = 0; j < QK4_1; ++j) y[j] = d * static_cast<float>(nibble(b[i].qs, j)) + m;
    }
}

void deq_q5_0(const block_q5_0* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += QK5_0) {
        const float d = fp16_to_fp32(b[i].d);
        for (int j = 0; j < QK5_0; ++j) {
            const int q = nibble(b[i].qs, j) | high_bit(b[i].qh, j) << 4;
            y[j] = d * static_cast<float>(q - 16);
        }
    }
}

void deq_q5_1(const block_q5_1* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += QK5_1) {
        const float d = fp16_to_fp32(b[i].d), m = fp16_to_fp32(b[i].m);
        for (int j = 0; j < QK5_1; ++j) {
            const int q = nibble(b[i].qs, j) | high_bit(b[i].qh, j) << 4;
            y[j] = d * static_cast<float>(q) + m;
        }
    }
}

void deq_q8_0(const block_q8_0* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i, y += QK8_0) {
        const float d = fp16_to_fp32(b[i].d);
        for (int j = 0; j < QK8_0; ++j) y[j] = static_cast<float>(b[i].qs[j]) * d;
    }
}

// 8 six-bit scales and 8 six-bit mins packed into 12 bytes (ggml's get_scale_min_k4).
void unpack_scale_min_k4(const uint8_t* s, uint8_t* sc, uint8_t* mn) {
    for (int j = 0; j < 4; ++j) {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 0xF) | ((s[j] >> 6) << 4);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
    }
}

// Q4_K/Q5_K: sub-block j (32 elements) reads nibble (j & 1) of qs[32 * (j / 2) + l] and, for
// Q5_K, bit j of qh[l].
void deq_q4_k(const block_q4_K* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i) {
        uint8_t sc[8], mn[8];
        unpack_scale_min_k4(b[i].scales, sc, mn);
        const float d = fp16_to_fp32(b[i].d), dmin = fp16_to_fp32(b[i].dmin);
        for (int j = 0; j < 8; ++j, y += 32) {
            const float dl = d * static_cast<float>(sc[j]), ml = dmin * static_cast<float>(mn[j]);
            const uint8_t* q = b[i].qs + 32 * (j / 2);
            const int shift = 4 * (j & 1);
            for (int l = 0; l < 32; ++l) y[l] = dl * static_cast<float>((q[l] >> shift) & 0xF) - ml;
        }
    }
}

void deq_q5_k(const block_q5_K* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i) {
        uint8_t sc[8], mn[8];
        unpack_scale_min_k4(b[i].scales, sc, mn);
        const float d = fp16_to_fp32(b[i].d), dmin = fp16_to_fp32(b[i].dmin);
        for (int j = 0; j < 8; ++j, y += 32) {
            const float dl = d * static_cast<float>(sc[j]), ml = dmin * static_cast<float>(mn[j]);
            const uint8_t* q = b[i].qs + 32 * (j / 2);
            const int shift = 4 * (j & 1);
            for (int l = 0; l < 32; ++l) {
                const int v = ((q[l] >> shift) & 0xF) | ((b[i].qh[l] >> j) & 1) << 4;
                y[l] = dl * static_cast<float>(v) - ml;
            }
        }
    }
}

// Q6_K: two halves of 128; in half h, group i (32 elements) takes nibble (i / 2) of
// ql[64 h + 32 (i & 1) + l] and bits 2i..2i+1 of qh[32 h + l]; one int8 scale per 16 elements.
void deq_q6_k(const block_q6_K* b, float* y, int64_t nb) {
    for (int64_t i = 0; i < nb; ++i) {
        const float d = fp16_to_fp32(b[i].d);
        for (int g = 0; g < 8; ++g, y += 32) {
            const int h = g / 4, k = g % 4;
            const uint8_t* ql = b[i].ql + 64 * h + 32 * (k & 1);
            const uint8_t* qh = b[i].qh + 32 * h;
            for (int l = 0; l < 32; ++l) {
                const int q =
                    (((ql[l] >> (4 * (k / 2))) & 0xF) | ((qh[l] >> (2 * k)) & 3) << 4) - 32;
                const float dl = d * static_cast<float>(b[i].scales[2 * g + l / 16]);
                y[l] = dl * static_cast<float>(q);
            }
        }
    }
}

}  // namespace

void dequantize_row_ref(uint32_t type, const void* src, float* dst, int64_t n) {
    const TypeInfo* t = type_info(type);
    if (t == nullptr || !t->weight_ok) {
        throw InvalidArgument(std::string("dequantize: unsupported weight type ") +
                              type_name(type));
    }
    if (n < 0 || n % t->block_size != 0) {
        throw InvalidArgument("dequantize: " + std::to_string(n) +
                              " elements is not a multiple of the " + t->name + " block size " +
                              std::to_string(t->block_size));
    }
    const int64_t nb = n / t->block_size;
    switch (type) {
        case GGML_F32: {
            const auto* s = static_cast<const float*>(src);
            for (int64_t i = 0; i < n; ++i) dst[i] = s[i];
            return;
        }
        case GGML_F16: {
            const auto* s = static_cast<const uint16_t*>(src);
            for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(s[i]);
            return;
        }
        case GGML_BF16: {
            const auto* s = static_cast<const uint16_t*>(src);
            for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(s[i]);
            return;
        }
        case GGML_Q4_0:
            return deq_q4_0(static_cast<const block_q4_0*>(src), dst, nb);
        case GGML_Q4_1:
            return deq_q4_1(static_cast<const block_q4_1*>(src), dst, nb);
        case GGML_Q5_0:
            return deq_q5_0(static_cast<const block_q5_0*>(src), dst, nb);
        case GGML_Q5_1:
            return deq_q5_1(static_cast<const block_q5_1*>(src), dst, nb);
        case GGML_Q8_0:
            return deq_q8_0(static_cast<const block_q8_0*>(src), dst, nb);
        case GGML_Q4_K:
            return deq_q4_k(static_cast<const block_q4_K*>(src), dst, nb);
        case GGML_Q5_K:
            return deq_q5_k(static_cast<const block_q5_K*>(src), dst, nb);
        case GGML_Q6_K:
            return deq_q6_k(static_cast<const block_q6_K*>(src), dst, nb);
        default:
            break;
    }
    throw InvalidArgument(std::string("dequantize: unsupported weight type ") + type_name(type));
}

}  // namespace ffnskip
