// Block layouts of the ggml weight types and their scalar reference dequantization: the ground
// truth every fast kernel (CPU SIMD, CUDA) is tested against. Layouts are byte-exact with ggml.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ggml_types.h"

namespace ffnskip {

constexpr int QK4_0 = 32, QK4_1 = 32, QK5_0 = 32, QK5_1 = 32, QK8_0 = 32, QK_K = 256;
constexpr int K_SCALE_SIZE = 12;

#pragma pack(push, 1)
struct block_q4_0 {
    uint16_t d;
    uint8_t qs[QK4_0 / 2];
};
struct block_q4_1 {
    uint16_t d, m;
    uint8_t qs[QK4_1 / 2];
};
struct block_q5_0 {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[QK5_0 / 2];
};
struct block_q5_1 {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
};
struct block_q8_0 {
    uint16_t d;
    int8_t qs[QK8_0];
};
struct block_q4_K {
    uint16_t d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
};
struct block_q5_K {
    uint16_t d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
};
struct block_q6_K {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    uint16_t d;
};
#pragma pack(pop)
static_assert(sizeof(block_q4_0) == 18 && sizeof(block_q4_1) == 20 && sizeof(block_q5_0) == 22 &&
                  sizeof(block_q5_1) == 24 && sizeof(block_q8_0) == 34 &&
                  sizeof(block_q4_K) == 144 && sizeof(block_q5_K) == 176 &&
                  sizeof(block_q6_K) == 210,
              "ggml block sizes");

// Bytes of one row of n elements (n must be a multiple of the block size; 0 if not or unknown).
size_t row_bytes(uint32_t type, int64_t n);

// Scalar reference: dst[0..n) = dequantize(src). n is a multiple of the type's block size.
// Supported: every TypeInfo::weight_ok type. Throws InvalidArgument for others.
void dequantize_row_ref(uint32_t type, const void* src, float* dst, int64_t n);

}  // namespace ffnskip
