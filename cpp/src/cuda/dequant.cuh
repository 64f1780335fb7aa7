// Whole-row dequantization on the device: the embedding lookup (rows picked by token id, to
// f32) and the f16 staging of weight rows for the batched (prompt) GEMM. Both use the block
// decoders of blocks.cuh, so they agree with the GEMV bit for bit on the weights.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"

namespace ffnskip::cuda {

// out[i, :] = dequantize(w row tokens[i]) for i < n. `tokens` lives in device memory (the
// decode graph reads the token id there). Ids outside [0, w.rows) give a zero row; the host
// validates ids before they get here.
void embed_rows(const DevMatrix& w, const int32_t* tokens, int n, float* out, cudaStream_t stream);

// out[(r - r0), :] = dequantize(w row r) as f16, for r in [r0, r1); out rows are w.cols long.
void dequant_rows_f16(const DevMatrix& w, int64_t r0, int64_t r1, __half* out, cudaStream_t stream);

}  // namespace ffnskip::cuda
