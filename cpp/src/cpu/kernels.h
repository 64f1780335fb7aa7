// CPU compute kernels with run-time ISA dispatch (AVX2+FMA+F16C / NEON / scalar). Every
// fast path is tested against the scalar reference in quants.* and against the scalar path here.
// All functions are thread-safe; callers split work by output rows.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cpu/transposed.h"
#include "weight_view.h"

namespace ffnskip::cpu {

// Activations are prepared once per matmul (for quantized weights: 16-bit blocks of 32 so the
// dot product runs on integers with ~1e-5 relative error; 8-bit blocks were measured too coarse
// for models with activation outliers), then shared by all threads. act_row_bytes() is the prepared
// size of one token row of `cols` activations for weights of `weight_type` (0: the kernel reads f32
// x).
size_t act_row_bytes(uint32_t weight_type, int64_t cols);
// Prepare token rows [t0, t1) of x (row stride `cols`) into acts (row stride act_row_bytes).
void prepare_acts(uint32_t weight_type, const float* x, int64_t cols, int64_t t0, int64_t t1,
                  uint8_t* acts);

// y[t * ldy + r] = dot(W row r, x row t) for t in [0, n_tok), r in [r0, r1).
// `x` is f32 (row stride w.cols), `acts` its prepared form (may be null when act_row_bytes is 0).
void matmul(const WeightView& w, const float* x, const uint8_t* acts, int64_t n_tok, float* y,
            int64_t ldy, int64_t r0, int64_t r1);

// The same outputs as n_tok calls of matmul with one token each (token t: x row t, acts row t at
// stride act_row_bytes, y + t * ldy), bitwise: the serving step's batch invariance. Where the
// one-token tile has a several-token variant (AVX2: the quantized types, grouped or not) each
// weight block is decoded once for up to 4 tokens; elsewhere the one-token kernel runs per token.
void matmul_each_token(const WeightView& w, const float* x, const uint8_t* acts, int64_t n_tok,
                       float* y, int64_t ldy, int64_t r0, int64_t r1);

// One token, listed rows only: y[rows[k]] = dot(W row rows[k], x row 0) for k in [0, n), with x
// and acts as for matmul (n_tok = 1). The gate-first FFN's W_up, rows of kept neurons.
void matvec_rows(const WeightView& w, const float* x, const uint8_t* acts, const int32_t* rows,
                 int64_t n, float* y);
// Channel-sparse product on weights laid out by input channel (transposed.h): y[o] = sum over
// the active channels i of x's units [k0, k1) (SparseInput::part) of x_i W[o, i], for every
// output o < n_out (all 0 for an empty range). Reads only those channels' codes and their blocks'
// scales. Threads split a product by units and add their outputs.
void sparse_matvec(const TransposedView& t, const SparseInput& x, float* y, int64_t k0, int64_t k1);

// Fast dequantization of one row (embedding lookup); same values as dequantize_row_ref.
void dequantize_row(uint32_t type, const void* src, float* dst, int64_t n);

// f16 helpers for the KV cache.
float dot_f16_f32(const uint16_t* a, const float* b, int64_t n);
void axpy_f16(float a, const uint16_t* x, float* y, int64_t n);  // y += a * x
void f32_to_f16(const float* x, uint16_t* y, int64_t n);

// Which ISA the dispatcher picked: "avx2", "neon" or "scalar".
const char* simd_level();
// Force a level for tests/benchmarks ("scalar", "avx2", "neon" or "auto"); false when
// the CPU cannot run it (the level is then unchanged). Also settable by FFNSKIP_SIMD at start-up.
bool set_simd_level(const char* level);
// The lane width of the x86 channel-sparse product (kernels_sparse_avx2.cpp): 512 bits where
// the CPU has AVX-512 (F, BW, VL, DQ), else 256; 0 on other hosts. set_sparse_lanes forces 256
// or 512 for tests/benchmarks; false when the CPU cannot (the width is then unchanged).
int sparse_lanes();
bool set_sparse_lanes(int bits);
// The lane width of the x86 prompt matmul of K-quant weights: 512 bits (AVX-512 VNNI,
// kernels_gemm_k_avx512vnni.cpp) where the CPU has AVX-512 F/BW/VL/DQ and VNNI, else 256 (its AVX2
// twin, kernels_gemm_k_avx2.cpp); 0 on other hosts. set_gemm_lanes forces 256 or 512 for
// tests/benchmarks; false when the CPU cannot (the width is then unchanged).
int gemm_lanes();
bool set_gemm_lanes(int bits);
// Whether prompt-sized matmuls of quantized weights (kAmxMinTokens tokens or more) run on AMX
// BF16 tiles (kernels_gemm_amx.cpp): on by default where the CPU has AMX-TILE and AMX-BF16 and
// the OS grants their state, off with FFNSKIP_AMX=0 at start-up. set_gemm_amx switches it for
// tests/benchmarks; false when the CPU cannot (the setting is then unchanged).
bool gemm_amx();
bool set_gemm_amx(bool on);

}  // namespace ffnskip::cpu
