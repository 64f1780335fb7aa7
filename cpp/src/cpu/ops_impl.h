// Private to ops*.cpp and attention*.cpp: the AVX2 and NEON versions of the per-token ops and the
// run-time choice between them and the scalar code (the level the matmul kernels use).
#pragma once

#include <cstdint>
#include <cstring>

#include "cpu/kernels.h"
#include "model.h"

namespace ffnskip::cpu {

inline bool use_avx2() {
#if defined(FFNSKIP_X86)
    return std::strcmp(simd_level(), "scalar") != 0;
#else
    return false;
#endif
}

#if defined(FFNSKIP_X86)
namespace avx2 {
void rmsnorm(const float* x, const float* w, float* out, int n, float eps);
void rope_apply(float* x, int n_heads, int head_dim, int n_rot, RopeStyle style, const float* cos_t,
                const float* sin_t);
void swiglu(float* g, const float* u, int64_t n);
void geglu(float* g, const float* u, int64_t n);
}  // namespace avx2
#endif

inline bool use_neon() {
#if defined(FFNSKIP_NEON)
    return std::strcmp(simd_level(), "scalar") != 0;
#else
    return false;
#endif
}

#if defined(FFNSKIP_NEON)
namespace neon {
void rmsnorm(const float* x, const float* w, float* out, int n, float eps);
void rope_apply(float* x, int n_heads, int head_dim, int n_rot, RopeStyle style, const float* cos_t,
                const float* sin_t);
void swiglu(float* g, const float* u, int64_t n);
}  // namespace neon
#endif

}  // namespace ffnskip::cpu
