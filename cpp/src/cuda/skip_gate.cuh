// The FFN skip gate on the device for one token: the block-skip rule of ffn_rules.h (the same
// functions the CPU backend runs) applied to per-layer tables in device memory.
//
//   before layer l's FFN:  skip = block_skip(gated, hot[l], budget)
//   after it ran:          g = cos(h, h');  block_observe(gated, hot[l], g, threshold[l], ...)
//
// Budget, per-layer skipped flags and gate values stay in device memory, so a token never waits
// on the host; the FFN kernels read the layer's skipped flag and return before touching a weight.
//
// Kind 2, channel sparsity, with rules::channel_keep on the device: ffn_begin zeroes the entries
// of hn below t_in, channel_swiglu the neurons below t_gate and the entries of m below t_mid, and
// the dense GEMVs then multiply those zeros (the semantics exactly, but every weight byte is
// still read: the GPU has no layout by input channel yet, so its trace reports dense bytes).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"
#include "ffn_rules.h"

namespace ffnskip::cuda {

// What the host tells the device about the token being decoded; copied H2D before each decode
// step (inside the graph), followed by the per-layer tables.
enum GateMode : int32_t {
    kGateDense = 0,    // no skip request: no gate values, never skip
    kGateObserve = 1,  // skip request, token not gated (warm-up / disabled): gate values only
    kGateActive = 2,   // gated token: the policy may skip hot layers
};

struct TokenCtl {
    int32_t token;
    int32_t pos;
    int32_t mode;  // GateMode
    int32_t n_layer;
};

// Layout of the block copied per token: TokenCtl, then int32 hot[n], float thr[n], int32 grant[n],
// float t_in[n], t_gate[n], t_mid[n] (NaN: that filter off).
inline size_t token_ctl_bytes(int n_layer) {
    return sizeof(TokenCtl) + 6 * sizeof(int32_t) * static_cast<size_t>(n_layer);
}

struct SkipGateView {
    const TokenCtl* ctl = nullptr;
    const int32_t* hot = nullptr;
    const float* thr = nullptr;
    const int32_t* grant = nullptr;
    const float *t_in = nullptr, *t_gate = nullptr, *t_mid = nullptr;
    int32_t* budget = nullptr;   // one int, reset at layer 0 of every token
    int32_t* skipped = nullptr;  // [n_layer]: 1 where the FFN was skipped this token
    float* gate = nullptr;       // [n_layer]: g where the FFN ran under a request, else NaN
    // [n_layer x 3]: entries dropped by t_in, t_gate, t_mid where the channel-sparse FFN ran,
    // else -1.
    int32_t* drops = nullptr;
    // [n_layer x n_embd]: what a skipped FFN adds to the residual (SkipConfig::compensation;
    // all zeros when the policy has none, so the captured graph never changes).
    const float* comp = nullptr;
};

// Points the views into a device block laid out as token_ctl_bytes describes.
inline SkipGateView skip_gate_view(void* ctl_block, int n_layer, int32_t* budget, int32_t* skipped,
                                   float* gate, int32_t* drops) {
    SkipGateView v;
    v.ctl = static_cast<const TokenCtl*>(ctl_block);
    v.hot = reinterpret_cast<const int32_t*>(v.ctl + 1);
    v.thr = reinterpret_cast<const float*>(v.hot + n_layer);
    v.grant = reinterpret_cast<const int32_t*>(v.thr + n_layer);
    v.t_in = reinterpret_cast<const float*>(v.grant + n_layer);
    v.t_gate = v.t_in + n_layer;
    v.t_mid = v.t_gate + n_layer;
    v.budget = budget;
    v.skipped = skipped;
    v.gate = gate;
    v.drops = drops;
    return v;
}

__device__ __forceinline__ bool gate_skip_ffn(const SkipGateView& g, int layer) {
    return rules::block_skip(g.ctl->mode == kGateActive, g.hot[layer] != 0, *g.budget);
}

__device__ __forceinline__ void gate_observe(const SkipGateView& g, int layer, float value) {
    rules::block_observe(g.ctl->mode == kGateActive, g.hot[layer] != 0, value, g.thr[layer],
                         g.grant[layer], *g.budget);
}

// Whether the channel-sparse FFN runs for this token in `layer` (given that the FFN runs): a
// gated token and a layer with a channel filter on.
__device__ __forceinline__ bool gate_channel_on(const SkipGateView& g, int layer) {
    return g.ctl->mode == kGateActive &&
           !(isnan(g.t_in[layer]) && isnan(g.t_gate[layer]) && isnan(g.t_mid[layer]));
}

// Decode, before layer `layer`'s FFN: decides skip (writes skipped[layer]) and, when the FFN
// runs, hn = rmsnorm(h) * w with kind 2's t_in applied.
void ffn_begin(const SkipGateView& g, int layer, float* h, const float* w, float* hn, int dim,
               float eps, cudaStream_t stream);

// Decode, after the down projection added its output to h in place (GemvArgs::gate_part holds
// n_part per-CTA partial sums): g = cos(h, h'), the gate value and the budget update.
void ffn_end(const SkipGateView& g, int layer, const double* gate_part, int n_part,
             cudaStream_t stream);

// Decode with channel filters: m = silu(gate) * k * up, then m~ (t_gate / t_mid of `layer` when
// gate_channel_on, plain silu(gate) * up otherwise), counting drops; returns at once when the
// layer's FFN is skipped.
void channel_swiglu(const SkipGateView& g, int layer, const float* gate, const float* up,
                    float* out, int64_t n, cudaStream_t stream);

}  // namespace ffnskip::cuda
