// Causal multi-head attention (grouped-query) over the f16 KV cache, batched over query tokens.
//
// One task is (kv head, block of up to kQueryBlock query tokens, key range): its query rows are
// the block's tokens times the `group` query heads that share the kv head. Keys are walked in
// chunks of kKeyChunk positions; each chunk of f16 K and V is converted to f32 once per task
// (not once per query) and used by every row, with an online (running max + sum) softmax:
//     m' = max(m, max_j s_j)    l' = l e^(m - m') + sum_j e^(s_j - m')
//     o' = o e^(m - m') + sum_j e^(s_j - m') v_j          out = o / l
// Query t (position pos0 + t) sees keys 0 .. pos0 + t. A decode step (one query token) splits the
// key range into pieces whose partial (o, m, l) are merged with log-sum-exp, so its few tasks
// (one per kv head otherwise) spread over the threads.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/threadpool.h"

namespace ffnskip::cpu {

constexpr int kQueryBlock = 16;
constexpr int kKeyChunk = 64;

struct AttnArgs {
    const float* q;  // q of token t, head h at q + t * q_stride + h * head_dim
    int64_t q_stride;
    const uint16_t* k;  // f16 cache: position p, kv head g at k + p * kv_stride + g * head_dim
    const uint16_t* v;
    int64_t kv_stride;
    float* out;  // same layout as q
    int64_t out_stride;
    int n_tok, pos0, n_head, n_head_kv, head_dim;
    float scale;  // applied to q·k before the softmax
};

// Attention for all n_tok query tokens on the pool. `workspace` grows to what is needed (the
// backend keeps one across calls). key_splits: key ranges per (kv head, query block); 0 picks
// from n_tok and the context length (never from the pool size: results are the same for any
// number of threads).
void attention(const AttnArgs& a, ThreadPool& pool, std::vector<float>& workspace,
               int key_splits = 0);

// ---- the per-ISA block kernel (private to attention*.cpp) --------------------------------------
// Rows r < n_t * group of the task: token t0 + r / group, head kvh * group + r % group; row r
// sees keys [k0, min(k1, pos0 + t0 + r / group + 1)). Writes the unnormalized o (row stride
// head_dim), m (natural-log units; -inf for a row that sees no key) and l. k0 is a multiple of
// kKeyChunk. `scratch` holds attn_scratch_floats() floats.
using AttnBlockFn = void (*)(const AttnArgs& a, int kvh, int t0, int n_t, int k0, int k1,
                             float* scratch, float* o, float* m, float* l);
size_t attn_scratch_floats(int rows, int head_dim);
void attn_block_scalar(const AttnArgs& a, int kvh, int t0, int n_t, int k0, int k1, float* scratch,
                       float* o, float* m, float* l);
#if defined(FFNSKIP_X86)
void attn_block_avx2(const AttnArgs& a, int kvh, int t0, int n_t, int k0, int k1, float* scratch,
                     float* o, float* m, float* l);
#endif
#if defined(FFNSKIP_NEON)
void attn_block_neon(const AttnArgs& a, int kvh, int t0, int n_t, int k0, int k1, float* scratch,
                     float* o, float* m, float* l);
#endif

}  // namespace ffnskip::cpu
