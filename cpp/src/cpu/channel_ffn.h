// The channel-sparse FFN of one token on the CPU (kind 2, shared/DESIGN.md "Conditional FFN —
// two kinds"; the keep rule is rules::channel_keep of ffn_rules.h):
//
//     h~ = h * [|h| >= t_in]        W_gate, W_up read by input channel (active channels only)
//     g  = act(W_gate h~)           act: the model's gate activation (silu, or gelu for gemma)
//     k  = [|g| >= t_gate]          W_up reads only the rows of kept neurons (file layout)
//     m  = g * k * (W_up h~)
//     m~ = m * [|m| >= t_mid]       W_down read by input channel (nonzero m~ only)
//     out = W_down m~
//
// A matrix whose input no filter of the layer thins runs the dense one-token kernels on the
// file's layout. The layouts by input channel (transposed.h) are built for the matrices the
// active policy needs and freed when no policy needs them.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "cpu/page_buffer.h"
#include "cpu/threadpool.h"
#include "cpu/transposed.h"
#include "ffn_skip.h"
#include "model.h"

namespace ffnskip::cpu {

// What one token's channel FFN read and dropped (SkipTrace's per-(token, layer) fields).
struct ChannelCounts {
    int64_t bytes = 0;
    int32_t dropped_in = 0, dropped_gate = 0, dropped_mid = 0;
};

// Where a token's |h|, |g| and |m| are counted (ChannelHist bins of one layer), or all null.
struct ChannelHists {
    int64_t* h = nullptr;
    int64_t* g = nullptr;
    int64_t* m = nullptr;
    void count(int64_t* hist, const float* v, int64_t n) const;
    bool on() const { return h != nullptr; }
};

// ya = A x over x's active channels on a layout by input channel (and yb = B x, B with A's
// blocks, in the same pool run), x's units split over the pool's threads, whose outputs are
// added (parts: their scratch). Split by input, not by output: W_down has few outputs (SmolLM2:
// 9 groups of 64, 5 and 4 a thread), and a thread's whole rows are longer streams. With
// fill_terms, x is only planned (SparseInput::plan) and each thread fills the terms of its part
// first, instead of the calling thread filling all of them while the others wait.
void pooled_sparse_matvec(ThreadPool& pool, const TransposedView& a, SparseInput& x, float* ya,
                          const TransposedView* b, float* yb, std::vector<float>& parts,
                          bool fill_terms = false);

class ChannelFfn {
  public:
    // `file` holds the file's views (the layouts are built from them); the pool runs the
    // products. Both outlive this object. `act` is the model's gate activation.
    ChannelFfn(const std::vector<LayerWeights>& file, int n_embd, int n_ff, FfnAct act,
               ThreadPool& pool);

    // Builds the layouts `policy` needs (null: none) and frees the others.
    void prepare(const SkipPolicy* policy);
    // Builds the layouts `policy` needs that are missing, frees nothing. Cheap when none is
    // missing, so the backend calls it for every skip request.
    void ensure(const SkipPolicy& policy);
    // Bytes of the layouts held now.
    size_t layout_bytes() const;

    // out (n_embd) = the FFN above for layer `layer` with thresholds th, one token whose FFN
    // input (ffn_norm(x)) is hn. `dense` are the views the dense kernels read (possibly grouped).
    // prepare() must have seen a policy with these thresholds.
    ChannelCounts run(int layer, SkipPolicy::ChannelThresholds th, const LayerWeights& dense,
                      const float* hn, float* out, const ChannelHists& hists);
    // Counts a dense FFN's |h|, |act(gate)| and |m| (hn, gate before the activation, and m
    // = act(gate) * up, n_ff each) into hists.
    void count_dense(const float* hn, const float* gate, const float* m, const ChannelHists& hists);

  private:
    struct Layouts {  // one layer's matrices by input channel
        // Their bytes when ensure() built them one by one (else in arena_, or not built).
        PageBuffer gate_bytes, up_bytes, down_bytes;
        TransposedView gate, up, down;
        bool gate_up = false, down_built = false;  // which are built
    };
    // y = W x for one token on the dense kernels, output rows split over the pool.
    void dense_matvec(const WeightView& w, const float* x, float* y);
    // y = W x over x's active channels (xa planned, its terms filled by the pool's threads) on
    // a layout by input channel, input blocks split over the pool (two matrices with the same
    // input in one pool run when b is given).
    void sparse_matvec(const TransposedView& a, SparseInput& xa, float* ya,
                       const TransposedView* b = nullptr, float* yb = nullptr);
    // Fills the planned layout `view` (plan_transposed(w)) of w into base with the pool, and binds
    // view to it.
    void fill(const WeightView& w, uint8_t* base, TransposedView& view);
    void build(const WeightView& w, PageBuffer& bytes, TransposedView& view);
    // Builds the layouts of layer l in `want` that are missing; frees the others when `free`.
    void update(size_t l, uint8_t want, bool free);

    const std::vector<LayerWeights>& file_;
    int n_embd_, n_ff_;
    FfnAct act_;
    ThreadPool& pool_;
    std::vector<Layouts> layouts_;
    // The layouts prepare() built, in one mapping: SmolLM2's are ~0.6 MB each, too small for a
    // 2 MiB huge page of their own, and on 4 KiB pages its profile decoded ~10% slower.
    PageBuffer arena_;
    std::vector<uint8_t> want_;  // per layer: bit 0 gate/up, bit 1 down (what prepare() built)
    // Per-token scratch.
    std::vector<float> ffn_gate_, ffn_up_, m_, ones_;
    std::vector<float> parts_;  // the products' outputs of the pool's tasks but the first
    std::vector<int32_t> active_, kept_;
    std::vector<uint8_t> acts_;
    SparseInput in_, up_in_, mid_;
};

}  // namespace ffnskip::cpu
