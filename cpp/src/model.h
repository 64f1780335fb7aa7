// A loaded model: hyper-parameters from GGUF metadata and typed views of every weight, all
// validated against each other at load so backends can trust every shape.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "ffnskip/ffnskip.h"
#include "gguf.h"
#include "tokenizer/tokenizer.h"
#include "weight_view.h"

namespace ffnskip {

enum class Arch { Llama, Qwen2, Qwen3, Gemma3, Phi3 };
// The FFN's gate activation: FFN(x) = W_down (act(W_gate x) * (W_up x)). SiLU (SwiGLU) for llama
// and qwen; GELU with the tanh approximation (GeGLU) for gemma.
enum class FfnAct { Silu, GeluTanh };
// NORM rotates adjacent pairs (x[2i], x[2i+1]); NEOX rotates halves (x[i], x[i + n_rot/2]).
enum class RopeStyle { Norm, Neox };
// How RoPE angles are stretched for contexts beyond the trained one (llama.cpp's GGUF keys).
// Linear divides every angle by `factor` ({arch}.rope.scaling.type = "linear"). The others become
// per-pair divisors (Hparams::rope_freq_factors) and a magnitude (Hparams::rope_mscale): Llama 3.x
// files carry no type key but a divisor tensor, rope_freqs.weight; phi3 (no type key, or
// "longrope") carries rope_factors_long/short.weight; yarn blends each pair between its trained
// and its interpolated frequency.
enum class RopeScaling { None, Linear, Yarn, LongRope };

struct Hparams {
    std::string arch_name;  // "llama" | "qwen2" | "qwen3" | "gemma3" | "phi3"
    Arch arch = Arch::Llama;
    RopeStyle rope = RopeStyle::Norm;
    int n_layer = 0;
    int n_embd = 0;  // d_model
    int n_ff = 0;    // FFN hidden size
    int n_head = 0;
    int n_head_kv = 0;
    int head_dim = 0;  // n_embd / n_head
    int n_rot = 0;     // rotated dims per head (<= head_dim, even)
    int n_vocab = 0;
    int n_ctx_train = 0;
    float rope_base = 10000.0f;
    RopeScaling rope_scaling = RopeScaling::None;
    float rope_scale = 1.0f;  // angle multiplier: 1 / rope.scaling.factor for Linear, else 1
    // Per rotated pair i (n_rot/2 values, or empty): angle i is divided by it. The product of
    // rope_freqs.weight (llama3), yarn's blend and phi3's short factors; for_context() swaps in
    // the long ones. Computed by the model loader.
    std::vector<float> rope_freq_factors;
    // phi3 longrope: the divisors to use instead when n_ctx > rope_orig_ctx (llama.cpp's rule:
    // the long factors once the context exceeds the original one), else empty.
    std::vector<float> rope_freq_factors_long;
    int rope_orig_ctx = 0;  // rope.scaling.original_context_length (default n_ctx_train)
    // cos and sin are multiplied by it (yarn's magnitude, rope.scaling.attn_factor). With every
    // head dimension rotated that scales q.k by rope_mscale^2, so the loader folds it into
    // attn_scale; with partial rotary (Phi-4-mini: 3/4 of each head) only the rotated dimensions
    // carry it, so it goes into the cos/sin table instead (rope_table_magnitude).
    float rope_mscale = 1.0f;
    float rope_table_magnitude = 1.0f;
    bool qk_norm = false;  // qwen3, gemma3: RMSNorm of each q and k head before RoPE
    float rms_eps = 1e-5f;
    FfnAct ffn_act = FfnAct::Silu;
    // gemma3: the attention and the FFN output are RMS-normalized before their residual add.
    bool post_norms = false;
    float embd_scale = 1.0f;  // the embedding row is multiplied by it (gemma3: sqrt(n_embd))
    float attn_scale = 0.0f;  // applied to q.k before the softmax (1/sqrt(head_dim) by default)
    // Interleaved sliding-window attention (gemma3). With swa_period > 0, layer l is local when
    // l % swa_period < swa_period - 1 (the last layer of each period is global): a local query
    // at position p sees keys p - swa_window + 1 .. p, rotated with rope_base_local and no rope
    // scaling. Global layers see every earlier key and use rope_base and the scaling above.
    // mistral and phi3 slide on every layer: their period is n_layer + 1 (no global layer) and
    // their local rope is the global one (the loader sets rope_base_local = rope_base, and
    // for_context() refuses rope scaling on such a model).
    int swa_period = 0;
    int swa_window = 0;
    float rope_base_local = 10000.0f;
    bool sliding(int layer) const { return swa_period > 0 && layer % swa_period < swa_period - 1; }
    bool slides_every_layer() const { return swa_period > n_layer; }

    // These hyper-parameters for an engine of n_ctx positions (what a backend computes with):
    // phi3's long rope factors when n_ctx > rope_orig_ctx; no window on an every-layer sliding
    // model whose window covers n_ctx (it could not drop a key). FormatError for an every-layer
    // window with rope scaling, which the backends' local rope table does not apply.
    Hparams for_context(int n_ctx) const;
};

struct LayerWeights {
    std::vector<float> attn_norm;       // [n_embd]
    WeightView wq;                      // [n_head*head_dim rows, n_embd cols]
    WeightView wk, wv;                  // [n_head_kv*head_dim, n_embd]
    WeightView wo;                      // [n_embd, n_head*head_dim]
    std::vector<float> bq, bk, bv;      // qwen2 only: [n_head*head_dim], [n_head_kv*head_dim] x2
    std::vector<float> q_norm, k_norm;  // qwen3, gemma3: [head_dim], shared by all heads
    std::vector<float> post_attn_norm;  // gemma3 only: [n_embd], on Wo's output
    std::vector<float> ffn_norm;        // [n_embd]
    std::vector<float> post_ffn_norm;   // gemma3 only: [n_embd], on W_down's output
    WeightView w_gate, w_up;            // [n_ff, n_embd]
    WeightView w_down;                  // [n_embd, n_ff]
    size_t ffn_bytes() const { return w_gate.bytes() + w_up.bytes() + w_down.bytes(); }
    size_t attn_bytes() const { return wq.bytes() + wk.bytes() + wv.bytes() + wo.bytes(); }
};

class Model {
  public:
    // Opens, parses and validates. IoError / FormatError naming the problem.
    static std::shared_ptr<Model> load(const std::string& path);
    // Validates an already parsed file (the file must outlive nothing: the Model owns it).
    static std::shared_ptr<Model> from_file(std::unique_ptr<gguf::File> file);

    const Hparams& hparams() const { return hp_; }
    const gguf::File& file() const { return *file_; }
    const Tokenizer& tokenizer() const { return *tokenizer_; }

    WeightView tok_embd;             // [n_vocab, n_embd]
    std::vector<float> output_norm;  // [n_embd]
    WeightView output;               // [n_vocab, n_embd] (== tok_embd when tied)
    bool tied_output = false;
    std::vector<LayerWeights> layers;

    // Moves the weight bytes that are still read through the file mapping into anonymous
    // memory (gguf::File::detach): every matrix view except those in `unread`, the data
    // pointers of weights the backend never reads again because it holds its own copy. Norms
    // and biases were copied into vectors at load already. Afterwards truncating the file under
    // the process cannot make a weight read fault (SIGBUS). Weights larger than the free memory
    // stay mapped (a copy would end in the OOM killer). Hold build_mutex() while calling it.
    void detach_weights(const std::vector<const uint8_t*>& unread);
    // Engines sharing this model (the C API's contexts) are built one at a time: a backend
    // reads weights through the mapping while it is built, and detach_weights() swaps mapped
    // pages that a concurrent build could be reading.
    std::mutex& build_mutex() const { return build_mu_; }

    // A skip profile stored as ffnskip.* metadata, if the file carries one.
    const std::optional<SkipConfig>& skip_profile() const { return skip_profile_; }
    // Weight bytes one decoded token reads: every layer matrix + output + one embedding row.
    size_t bytes_per_token() const;
    size_t ffn_bytes() const;  // all layers' FFN matrices

  private:
    Model() = default;
    std::unique_ptr<gguf::File> file_;
    Hparams hp_;
    std::unique_ptr<Tokenizer> tokenizer_;
    std::optional<SkipConfig> skip_profile_;
    mutable std::mutex build_mu_;
    bool stays_mapped_ = false;  // detach_weights() found no room once: never detach later
};

}  // namespace ffnskip
