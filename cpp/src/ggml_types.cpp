#include "ggml_types.h"

namespace ffnskip {

namespace {
struct Entry {
    uint32_t id;
    TypeInfo info;
};
// Block sizes and byte sizes as defined by ggml's block structs.
constexpr Entry kTypes[] = {
    {GGML_F32, {"F32", 1, 4, true}},
    {GGML_F16, {"F16", 1, 2, true}},
    {GGML_Q4_0, {"Q4_0", 32, 18, true}},
    {GGML_Q4_1, {"Q4_1", 32, 20, true}},
    {GGML_Q5_0, {"Q5_0", 32, 22, true}},
    {GGML_Q5_1, {"Q5_1", 32, 24, true}},
    {GGML_Q8_0, {"Q8_0", 32, 34, true}},
    {GGML_Q8_1, {"Q8_1", 32, 36, false}},
    {GGML_Q2_K, {"Q2_K", 256, 84, false}},
    {GGML_Q3_K, {"Q3_K", 256, 110, false}},
    {GGML_Q4_K, {"Q4_K", 256, 144, true}},
    {GGML_Q5_K, {"Q5_K", 256, 176, true}},
    {GGML_Q6_K, {"Q6_K", 256, 210, true}},
    {GGML_Q8_K, {"Q8_K", 256, 292, false}},
    {GGML_IQ2_XXS, {"IQ2_XXS", 256, 66, false}},
    {GGML_IQ2_XS, {"IQ2_XS", 256, 74, false}},
    {GGML_IQ3_XXS, {"IQ3_XXS", 256, 98, false}},
    {GGML_IQ1_S, {"IQ1_S", 256, 50, false}},
    {GGML_IQ4_NL, {"IQ4_NL", 32, 18, false}},
    {GGML_IQ3_S, {"IQ3_S", 256, 110, false}},
    {GGML_IQ2_S, {"IQ2_S", 256, 82, false}},
    {GGML_IQ4_XS, {"IQ4_XS", 256, 136, false}},
    {GGML_I8, {"I8", 1, 1, false}},
    {GGML_I16, {"I16", 1, 2, false}},
    {GGML_I32, {"I32", 1, 4, false}},
    {GGML_I64, {"I64", 1, 8, false}},
    {GGML_F64, {"F64", 1, 8, false}},
    {GGML_IQ1_M, {"IQ1_M", 256, 56, false}},
    {GGML_BF16, {"BF16", 1, 2, true}},
    {GGML_TQ1_0, {"TQ1_0", 256, 54, false}},
    {GGML_TQ2_0, {"TQ2_0", 256, 66, false}},
    {GGML_MXFP4, {"MXFP4", 32, 17, false}},
};
}  // namespace

const TypeInfo* type_info(uint32_t type) {
    for (const Entry& e : kTypes) {
        if (e.id == type) return &e.info;
    }
    return nullptr;
}

const char* type_name(uint32_t type) {
    const TypeInfo* t = type_info(type);
    return t ? t->name : "unknown type";
}

}  // namespace ffnskip
