// Private to the CPU kernels: the prepared-activation layout shared by every ISA, and the table
// of per-ISA entry points that kernels.cpp dispatches through.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

#include "cpu/transposed.h"
#include "weight_view.h"

namespace ffnskip::cpu {

// Activations for every quantized weight type: 16-bit blocks of 32 values. One token row of
// nb = cols / 32 blocks is laid out as
//   int16 qs[nb * 32] | float d[nb] | float s[nb]      x[i] ~= d[b] * qs[i], s[b] = d[b] * sum(qs)
// with d[b] = max|x| / 32767 over the block's scale group: one block for the 32-value weight
// types, the 8 blocks of a 256-value super-block for the K-quants (act_group_blocks). 8-bit blocks
// were ~300x coarser and measurably moved real models' logits (hidden-state outliers make most of
// a block's values tiny next to its max); 16 bits keep the rounding error near 2e-5 of the signal
// per 32 values and near 5e-5 per 256 (an outlier coarsens the 256 values around it, still ~100x
// finer than the 8-bit super-blocks llama.cpp uses). One scale per super-block lets the K-quant
// prompt tile (kernels_gemm_k_avx512vnni.cpp) fold the weights' 6-bit sub-block scales into their
// codes and sum a whole super-block in integers. The offset/min terms (sum over blocks of min_w *
// s) are a contiguous float dot product.
constexpr int kActBlock = 32;
constexpr size_t kActBytes32 = kActBlock * sizeof(int16_t) + 2 * sizeof(float);
// Blocks of 32 sharing one activation scale, for weights of this type (kernels.cpp).
int act_group_blocks(uint32_t weight_type);

// A block holding Inf or NaN (only a broken model produces one): codes 0 and d = s = NaN, so
// every dot product touching it is NaN — visible downstream, and no float->int cast of NaN.
inline void set_nonfinite_block(int16_t* qs, float* d, float* s) {
    for (int i = 0; i < kActBlock; ++i) qs[i] = 0;
    *d = std::numeric_limits<float>::quiet_NaN();
    *s = std::numeric_limits<float>::quiet_NaN();
}
// Blocks whose max |x| is below this are stored as zeros: 32767 / amax would overflow to inf
// for subnormal amax (and the values are negligible next to any real activation).
constexpr float kActMinMax = 1e-30f;
constexpr float kActMax = 32767.0f;

// F32/F16/BF16 weights: from this many tokens on, matmul runs a register-tiled f32 GEMM over
// transposed weight panels (FMA-bound) instead of per-row dot products. Quantized weights always
// use the integer kernels (vpmaddwd: 16 multiply-adds per instruction, like two FMAs, without
// dequantizing the weights to f32).
constexpr int64_t kGemmMinTokens = 16;
// Quantized weights: from this many tokens on, matmul runs on AMX tiles where cpu::gemm_amx() is
// on (kernels_gemm_amx.cpp pads tokens to blocks of 32).
constexpr int64_t kAmxMinTokens = 32;

enum class ActKind { kF32, kBlock32 };
ActKind act_kind(uint32_t weight_type);

struct KernelTable {
    // Quantize one token row of `cols` activations (a multiple of 32) into the layout above, one
    // scale per `group` blocks.
    void (*prepare_row)(const float* x, int64_t cols, int group, uint8_t* out);
    void (*matmul)(const WeightView& w, const float* x, const uint8_t* acts, int64_t n_tok,
                   float* y, int64_t ldy, int64_t r0, int64_t r1);
    void (*dequantize_row)(uint32_t type, const void* src, float* dst, int64_t n);
    float (*dot_f16_f32)(const uint16_t* a, const float* b, int64_t n);
    void (*axpy_f16)(float a, const uint16_t* x, float* y, int64_t n);
    void (*f32_to_f16)(const float* x, uint16_t* y, int64_t n);
    // One token, listed rows of a quantized (plain or grouped) matrix (kernels.h matvec_rows).
    void (*matvec_rows)(const WeightView& w, const uint8_t* acts, const int32_t* rows, int64_t n,
                        float* y);
    void (*sparse_matvec)(const TransposedView& t, const SparseInput& x, float* y, int64_t k0,
                          int64_t k1);
    // Several tokens, each bitwise as one-token matmul gives it (kernels.h matmul_each_token);
    // returns false for the types it has no such tile for (null, the default: none).
    bool (*matmul_each_token)(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y,
                              int64_t ldy, int64_t r0, int64_t r1) = nullptr;
};

// The scalar channel-sparse kernels (kernels_scalar.cpp, kernels_sparse_scalar.cpp): also the
// entries of a level without its own version (every entry of a table must be set).
void matvec_rows_scalar(const WeightView& w, const uint8_t* acts, const int32_t* rows, int64_t n,
                        float* y);
void sparse_matvec_scalar(const TransposedView& t, const SparseInput& x, float* y, int64_t k0,
                          int64_t k1);

extern const KernelTable kScalarKernels;  // kernels_scalar.cpp
#if defined(FFNSKIP_X86)
extern const KernelTable kAvx2Kernels;  // kernels_avx2.cpp (AVX2 + FMA + F16C)
bool cpu_has_avx512();                  // kernels.cpp: F, BW, VL and DQ, with ZMM state saved
bool cpu_has_avx512_vnni();             // kernels.cpp: the above and AVX512_VNNI
// kernels.cpp: AVX-512 (with BF16), AMX-TILE and AMX-BF16, and the OS granted this process the
// tile state (Linux asks for it once, with arch_prctl).
bool cpu_has_amx_bf16();
#endif
#if defined(FFNSKIP_NEON)
extern const KernelTable kNeonKernels;  // kernels_neon.cpp (AArch64)
#endif

}  // namespace ffnskip::cpu
