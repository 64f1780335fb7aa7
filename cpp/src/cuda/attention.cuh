// Causal attention over the f16 KV cache, split along the keys (flash-decoding):
//   o_h = sum_j softmax_j(q_h . k_j / sqrt(head_dim)) v_j   over positions j <= pos
// with GQA (query head h reads kv head h / (n_head / n_head_kv)).
// Pass 1: block (head, split, token) folds split_len keys with an online softmax into a partial
// (unnormalised o, running max m, sum l). Pass 2 merges the partials of the live splits.
// One decode token alone would occupy only n_head blocks; splitting the keys fills the GPU.
// The grid covers the whole context: splits past the token's position exit at once, so the
// launch is fixed and can live in the decode graph while the position lives in device memory.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"

namespace ffnskip::cuda {

constexpr int kAttnMaxHeadDim = 256;

struct AttnArgs {
    const float* q = nullptr;         // [n_tok, n_head * head_dim] (rotated)
    float* out = nullptr;             // [n_tok, n_head * head_dim]
    const __half* k_cache = nullptr;  // [n_ctx, n_head_kv * head_dim]
    const __half* v_cache = nullptr;
    int n_tok = 0, n_head = 0, n_head_kv = 0, head_dim = 0;
    const int32_t* pos_dev = nullptr;  // first token's position from device memory, or
    int pos0 = 0;                      // from the host; token t attends to positions <= first + t
    int split_len = 0;                 // keys per split
    int n_split = 0;                   // splits launched per (token, head): covers the context
    float* part_o = nullptr;           // [n_tok, n_head, n_split, head_dim]
    float* part_ml = nullptr;          // [n_tok, n_head, n_split, 2]
};

// Floats of scratch (part_o + part_ml) the given launch shape needs.
inline size_t attn_scratch_floats(int n_tok, int n_head, int n_split, int head_dim) {
    return static_cast<size_t>(n_tok) * n_head * n_split * (head_dim + 2);
}

void attention(const AttnArgs& a, cudaStream_t stream);

}  // namespace ffnskip::cuda
