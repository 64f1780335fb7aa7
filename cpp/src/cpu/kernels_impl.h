// Private to the CPU kernels: the prepared-activation layouts shared by every ISA, and the table
// of per-ISA entry points that kernels.cpp dispatches through.
#pragma once

#include <cstddef>
#include <cstdint>

#include "weight_view.h"

namespace ffnskip::cpu {

// Activations for the 32-element block types (Q4_0..Q8_0), one token row of nb blocks laid out as
//   int8 qs[nb * 32] | float d[nb] | float s[nb]      x[i] ~= d[b] * qs[i], s[b] = d[b] * sum(qs)
// so that the offset/min terms (sum over blocks of m_w * s) are a contiguous float dot product.
constexpr size_t kActBytes32 = 32 + 2 * sizeof(float);

// Activations for the K-quants: one 256-block per super-block, with the sums of each 16 values
// (the K-quant mins and the Q6_K offset of 32 are applied through them).
struct ActBlockK {
    int8_t qs[256];
    int16_t bsums[16];
    float d;
};
static_assert(sizeof(ActBlockK) == 292, "ActBlockK layout");

// F32/F16/BF16 weights: from this many tokens on, matmul runs a register-tiled f32 GEMM over
// transposed weight panels (FMA-bound) instead of per-row dot products. Quantized weights always
// use the integer kernels: vpmaddubsw does 32 multiply-adds per instruction against 8 for an f32
// FMA, and measured ~1.7x faster than dequantize-then-GEMM at n_tok = 512.
constexpr int64_t kGemmMinTokens = 16;

enum class ActKind { kF32, kBlock32, kBlockK };
ActKind act_kind(uint32_t weight_type);

struct KernelTable {
    void (*matmul)(const WeightView& w, const float* x, const uint8_t* acts, int64_t n_tok,
                   float* y, int64_t ldy, int64_t r0, int64_t r1);
    void (*dequantize_row)(uint32_t type, const void* src, float* dst, int64_t n);
    float (*dot_f16_f32)(const uint16_t* a, const float* b, int64_t n);
    void (*axpy_f16)(float a, const uint16_t* x, float* y, int64_t n);
    void (*f32_to_f16)(const float* x, uint16_t* y, int64_t n);
};

extern const KernelTable kScalarKernels;  // kernels_scalar.cpp
#if defined(FFNSKIP_X86)
extern const KernelTable kAvx2Kernels;  // kernels_avx2.cpp (AVX2 + FMA + F16C)
#endif

}  // namespace ffnskip::cpu
