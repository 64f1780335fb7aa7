// The ggml tensor types a GGUF file may name, with their block geometry. Only the types listed
// in DESIGN.md are loadable as weights; the others are known so that errors can name them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ffnskip {

enum GgmlType : uint32_t {
    GGML_F32 = 0,
    GGML_F16 = 1,
    GGML_Q4_0 = 2,
    GGML_Q4_1 = 3,
    GGML_Q5_0 = 6,
    GGML_Q5_1 = 7,
    GGML_Q8_0 = 8,
    GGML_Q8_1 = 9,
    GGML_Q2_K = 10,
    GGML_Q3_K = 11,
    GGML_Q4_K = 12,
    GGML_Q5_K = 13,
    GGML_Q6_K = 14,
    GGML_Q8_K = 15,
    GGML_IQ2_XXS = 16,
    GGML_IQ2_XS = 17,
    GGML_IQ3_XXS = 18,
    GGML_IQ1_S = 19,
    GGML_IQ4_NL = 20,
    GGML_IQ3_S = 21,
    GGML_IQ2_S = 22,
    GGML_IQ4_XS = 23,
    GGML_I8 = 24,
    GGML_I16 = 25,
    GGML_I32 = 26,
    GGML_I64 = 27,
    GGML_F64 = 28,
    GGML_IQ1_M = 29,
    GGML_BF16 = 30,
    GGML_TQ1_0 = 34,
    GGML_TQ2_0 = 35,
    GGML_MXFP4 = 39,
};

struct TypeInfo {
    const char* name;
    int64_t block_size;  // elements per block (1 for plain types)
    size_t block_bytes;  // bytes per block
    bool weight_ok;      // this engine computes with it
};

// nullptr for a type id this engine does not know at all.
const TypeInfo* type_info(uint32_t type);
// Name for messages; "type <id>" for unknown ids.
const char* type_name(uint32_t type);

}  // namespace ffnskip
