#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>

#include "host_memory.h"
#include "quants.h"

namespace ffnskip {

namespace {

[[noreturn]] void fail(const std::string& msg) {
    throw FormatError(msg);
}

// Limits far above any real model; they keep later size arithmetic from overflowing.
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxDim = 1 << 20;
constexpr int64_t kMaxHeads = 4096;
constexpr double kPi = 3.14159265358979323846;

int hparam(const gguf::File& f, const std::string& key, int64_t lo, int64_t hi) {
    const int64_t v = f.require_int(key);
    if (v < lo || v > hi) {
        fail("metadata " + key + " = " + std::to_string(v) + " is out of range [" +
             std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
    return static_cast<int>(v);
}

const gguf::TensorInfo& need(const gguf::File& f, const std::string& name) {
    const gguf::TensorInfo* t = f.tensor(name);
    if (!t) fail("missing tensor '" + name + "'");
    return *t;
}

std::string shape_str(const gguf::TensorInfo& t) {
    std::string s = "[";
    for (int i = 0; i < t.n_dims; ++i) s += (i ? ", " : "") + std::to_string(t.ne[i]);
    return s + "]";
}

// A 2-D weight with `cols` inputs (ne[0]) and `rows` outputs (ne[1]).
WeightView matrix(const gguf::File& f, const std::string& name, int64_t rows, int64_t cols) {
    const gguf::TensorInfo& t = need(f, name);
    const TypeInfo* ti = type_info(t.type);
    if (!ti || !ti->weight_ok) {
        fail("tensor '" + name + "' has weight type " + type_name(t.type) +
             ", which this engine does not support (supported: F32, F16, BF16, Q8_0, Q4_0, "
             "Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)");
    }
    if (t.n_dims != 2 || t.ne[0] != cols || t.ne[1] != rows) {
        fail("tensor '" + name + "' has shape " + shape_str(t) + ", expected [" +
             std::to_string(cols) + ", " + std::to_string(rows) + "]");
    }
    WeightView w;
    w.type = t.type;
    w.data = t.data;
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = row_bytes(t.type, cols);
    if (w.row_bytes == 0 || w.row_bytes * static_cast<uint64_t>(rows) != t.nbytes) {
        fail("tensor '" + name + "': size does not match its shape and type");
    }
    return w;
}

// A 1-D f32 copy of a vector tensor (norm weights, biases), whatever its stored type.
std::vector<float> vec(const gguf::File& f, const std::string& name, int64_t n) {
    const gguf::TensorInfo& t = need(f, name);
    const TypeInfo* ti = type_info(t.type);
    if (!ti || !ti->weight_ok) {
        fail("tensor '" + name + "' has unsupported type " + type_name(t.type));
    }
    if (t.n_dims != 1 || t.ne[0] != n) {
        fail("tensor '" + name + "' has shape " + shape_str(t) + ", expected [" +
             std::to_string(n) + "]");
    }
    if (row_bytes(t.type, n) != t.nbytes) fail("tensor '" + name + "': size does not match");
    std::vector<float> out(static_cast<size_t>(n));
    dequantize_row_ref(t.type, t.data, out.data(), n);
    for (float v : out) {
        if (!std::isfinite(v)) fail("tensor '" + name + "' contains a non-finite value");
    }
    return out;
}

// A finite float key in (lo, hi], or `def` when absent.
double float_in(const gguf::File& f, const std::string& key, double def, double lo, double hi) {
    const double v = f.get_float(key, def);
    if (!(v > lo) || !(v <= hi)) {
        fail("metadata " + key + " = " + std::to_string(v) + " is out of range (" +
             std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
    return v;
}

// YaRN (arXiv 2309.00071) as llama.cpp's rope applies it: per rotated pair i, the angle's
// multiplier blends 1 (the trained frequency) and 1/factor (interpolated) by a ramp in i that is 1
// up to the pair turning beta_fast times over the original context and 0 from the pair turning
// beta_slow times (pair = n_rot ln(orig / (2 pi turns)) / (2 ln base), rounded outwards). The
// divisors are the inverse multipliers.
std::vector<float> yarn_divisors(int n_rot, double base, double factor, double orig_ctx,
                                 double beta_fast, double beta_slow) {
    auto pair_turning = [&](double turns) {
        return n_rot * std::log(orig_ctx / (turns * 2.0 * kPi)) / (2.0 * std::log(base));
    };
    const double low = std::max(0.0, std::floor(pair_turning(beta_fast)));
    const double high = std::min(n_rot - 1.0, std::ceil(pair_turning(beta_slow)));
    std::vector<float> out(static_cast<size_t>(n_rot / 2));
    for (int i = 0; i < n_rot / 2; ++i) {
        const double keep = 1.0 - std::clamp((i - low) / std::max(0.001, high - low), 0.0, 1.0);
        out[static_cast<size_t>(i)] = static_cast<float>(1.0 / (keep + (1.0 - keep) / factor));
    }
    return out;
}

// {arch}.rope.scaling.* as llama.cpp writes them: the type, factor, original context and the
// generic attn_factor (a magnitude on cos and sin); yarn's beta_fast/beta_slow (defaults 32 and
// 1) and attention factor (default 1 + 0.1 ln factor, the YaRN paper's). Types and keys this
// engine cannot apply are refused by name: a silent fallback would give wrong logits at every
// scaled position. Needs n_rot, rope_base and n_ctx_train.
void read_rope_scaling(const gguf::File& f, const std::string& a, Hparams& hp) {
    hp.rope_orig_ctx = f.find(a + "rope.scaling.original_context_length")
                           ? hparam(f, a + "rope.scaling.original_context_length", 1, 1 << 24)
                           : hp.n_ctx_train;
    hp.rope_mscale = static_cast<float>(float_in(f, a + "rope.scaling.attn_factor", 1.0, 0.0, 1e3));
    const std::string key = a + "rope.scaling.type";
    const std::string type = f.find(key) ? f.require_string(key) : "none";
    if (type == "none") return;
    if (type == "longrope" && hp.arch == Arch::Phi3) {
        hp.rope_scaling = RopeScaling::LongRope;  // the factors are tensors (Model::from_file)
        return;
    }
    if (type != "linear" && type != "yarn") {
        fail("unsupported " + key + " " + gguf::quote(type) +
             " (supported: none, linear, yarn; longrope for phi3)");
    }
    const double factor = f.require_float(a + "rope.scaling.factor");
    if (!(factor >= 1.0) || !(factor <= 1e6)) {
        fail(a + "rope.scaling.factor must be in [1, 1e6] for " + type + " scaling");
    }
    if (type == "linear") {
        hp.rope_scaling = RopeScaling::Linear;
        hp.rope_scale = static_cast<float>(1.0 / factor);
        return;
    }
    if (f.find(a + "rope.scaling.yarn_ext_factor") &&
        f.get_float(a + "rope.scaling.yarn_ext_factor", 1.0) != 1.0) {
        fail("unsupported " + a + "rope.scaling.yarn_ext_factor (only 1, full YaRN, is)");
    }
    if (f.find(a + "rope.scaling.yarn_log_multiplier") &&
        f.get_float(a + "rope.scaling.yarn_log_multiplier", 0.0) != 0.0) {
        fail("unsupported " + a + "rope.scaling.yarn_log_multiplier");
    }
    const double beta_fast = float_in(f, a + "rope.scaling.yarn_beta_fast", 32.0, 0.0, 1e6);
    const double beta_slow = float_in(f, a + "rope.scaling.yarn_beta_slow", 1.0, 0.0, 1e6);
    const double mscale =
        float_in(f, a + "rope.scaling.yarn_attn_factor", 1.0 + 0.1 * std::log(factor), 0.0, 1e3);
    hp.rope_scaling = RopeScaling::Yarn;
    hp.rope_mscale *= static_cast<float>(mscale);
    hp.rope_freq_factors =
        yarn_divisors(hp.n_rot, hp.rope_base, factor, hp.rope_orig_ctx, beta_fast, beta_slow);
}

// gemma3's metadata and the rules llama.cpp applies to it (the file stores no key for them):
// every 6th layer is global, the others slide over `attention.sliding_window` keys with RoPE base
// 10000 and no scaling; embeddings are scaled by sqrt(n_embd); q.k is scaled by 1/sqrt(key_length),
// except for the 27B model (62 layers), whose query_pre_attn_scalar is n_embd / n_head. Keys
// that would change the math in ways not implemented here are refused by name.
void read_gemma3(const gguf::File& f, const std::string& a, Hparams& hp) {
    hp.swa_period = 6;
    hp.swa_window = hparam(f, a + "attention.sliding_window", 1, 1 << 24);
    hp.rope_base_local = 10000.0f;
    hp.embd_scale = std::sqrt(static_cast<float>(hp.n_embd));
    if (hp.n_layer == 62) {
        if (hp.n_embd < hp.n_head) fail("gemma3: embedding_length is smaller than head_count");
        hp.attn_scale = 1.0f / std::sqrt(static_cast<float>(hp.n_embd / hp.n_head));
    }
    for (const char* key : {"attn_logit_softcapping", "final_logit_softcapping"}) {
        if (f.find(a + key) && f.get_float(a + key, 0.0) != 0.0) {
            fail("unsupported " + a + key + " (gemma3 has no logit soft-capping)");
        }
    }
    if (f.find(a + "attention.sliding_window_pattern")) {
        fail("unsupported " + a +
             "attention.sliding_window_pattern (gemma3 layers follow the fixed 5 local : 1 global "
             "pattern)");
    }
}

Hparams read_hparams(const gguf::File& f) {
    Hparams hp;
    hp.arch_name = f.require_string("general.architecture");
    if (hp.arch_name == "llama") {
        hp.arch = Arch::Llama;
        hp.rope = RopeStyle::Norm;
    } else if (hp.arch_name == "qwen2") {
        hp.arch = Arch::Qwen2;
        hp.rope = RopeStyle::Neox;
    } else if (hp.arch_name == "qwen3") {
        hp.arch = Arch::Qwen3;
        hp.rope = RopeStyle::Neox;
        hp.qk_norm = true;
    } else if (hp.arch_name == "gemma3") {
        hp.arch = Arch::Gemma3;
        hp.rope = RopeStyle::Neox;
        hp.qk_norm = true;
        hp.ffn_act = FfnAct::GeluTanh;
        hp.post_norms = true;
    } else if (hp.arch_name == "phi3") {
        hp.arch = Arch::Phi3;
        hp.rope = RopeStyle::Neox;
    } else {
        // Quoted: the name is raw file bytes (fuzz finding: invalid UTF-8 broke the message).
        fail("unsupported architecture " + gguf::quote(hp.arch_name) +
             " (supported: llama, qwen2, qwen3, gemma3, phi3)");
    }
    const std::string a = hp.arch_name + ".";
    hp.n_layer = hparam(f, a + "block_count", 1, kMaxLayers);
    hp.n_embd = hparam(f, a + "embedding_length", 1, kMaxDim);
    hp.n_ff = hparam(f, a + "feed_forward_length", 1, kMaxDim);
    hp.n_head = hparam(f, a + "attention.head_count", 1, kMaxHeads);
    hp.n_head_kv = f.find(a + "attention.head_count_kv")
                       ? hparam(f, a + "attention.head_count_kv", 1, kMaxHeads)
                       : hp.n_head;
    if (hp.n_head % hp.n_head_kv != 0) {
        fail("attention.head_count (" + std::to_string(hp.n_head) +
             ") is not a multiple of attention.head_count_kv (" + std::to_string(hp.n_head_kv) +
             ")");
    }
    if (f.find(a + "attention.key_length")) {
        hp.head_dim = hparam(f, a + "attention.key_length", 1, kMaxDim);
    } else {
        if (hp.n_embd % hp.n_head != 0) {
            fail("embedding_length (" + std::to_string(hp.n_embd) +
                 ") is not a multiple of attention.head_count (" + std::to_string(hp.n_head) + ")");
        }
        hp.head_dim = hp.n_embd / hp.n_head;
    }
    if (f.find(a + "attention.value_length") &&
        f.require_int(a + "attention.value_length") != hp.head_dim) {
        fail("attention.value_length differs from key_length: not supported");
    }
    hp.n_rot = f.find(a + "rope.dimension_count")
                   ? hparam(f, a + "rope.dimension_count", 2, kMaxDim)
                   : hp.head_dim;
    if (hp.n_rot % 2 != 0 || hp.n_rot > hp.head_dim) {
        fail("rope.dimension_count = " + std::to_string(hp.n_rot) +
             " must be even and <= the head size " + std::to_string(hp.head_dim));
    }
    hp.rope_base = static_cast<float>(f.get_float(a + "rope.freq_base", 10000.0));
    if (!(hp.rope_base > 1.0f) || !std::isfinite(hp.rope_base)) {
        fail("rope.freq_base must be a finite number > 1");
    }
    const int64_t ctx = f.get_int(a + "context_length", 2048);
    hp.n_ctx_train = static_cast<int>(ctx < 1 ? 1 : (ctx > (1 << 24) ? (1 << 24) : ctx));
    read_rope_scaling(f, a, hp);
    hp.rms_eps = static_cast<float>(f.get_float(a + "attention.layer_norm_rms_epsilon", 1e-5));
    if (!(hp.rms_eps > 0.0f) || !(hp.rms_eps < 1.0f)) {
        fail("attention.layer_norm_rms_epsilon must be in (0, 1)");
    }
    hp.attn_scale = 1.0f / std::sqrt(static_cast<float>(hp.head_dim));
    if (hp.arch == Arch::Gemma3) {
        if (hp.rope_scaling != RopeScaling::None && hp.rope_scaling != RopeScaling::Linear) {
            fail("unsupported " + a + "rope.scaling.type for gemma3 (supported: none, linear)");
        }
        if (hp.rope_mscale != 1.0f) fail("unsupported " + a + "rope.scaling.attn_factor");
        read_gemma3(f, a, hp);
    }
    // mistral (llama) and phi3 slide on every layer when the file gives a window (0: none).
    const std::string window = a + "attention.sliding_window";
    if ((hp.arch == Arch::Llama || hp.arch == Arch::Phi3) && f.find(window)) {
        hp.swa_window = hparam(f, window, 0, 1 << 30);
        if (hp.swa_window > 0) {
            hp.swa_period = hp.n_layer + 1;
            hp.rope_base_local = hp.rope_base;
        }
    }
    return hp;
}

// A count of the skip profile (ffnskip.*), which must fit the config's int.
int profile_count(const gguf::File& f, const std::string& key, int def) {
    const int64_t v = f.get_int(key, def);
    if (v < 0 || v > INT32_MAX) {
        fail("stored skip profile (ffnskip.*) is invalid: " + key + " = " + std::to_string(v) +
             " is out of range [0, " + std::to_string(INT32_MAX) + "]");
    }
    return static_cast<int>(v);
}

// A float array key (or a single float) as floats; absent: empty.
std::vector<float> float_list(const gguf::File& f, const std::string& key) {
    std::vector<float> out;
    const gguf::Value* value = f.find(key);
    if (value == nullptr) return out;
    if (value->type == gguf::ValueType::ARRAY) {
        for (double v : *f.get_float_array(key)) {
            // Out-of-range doubles would become inf here; validate() rejects them by name.
            out.push_back(std::isnan(v) || std::fabs(v) < 3e38 ? static_cast<float>(v)
                                                               : std::copysign(INFINITY, v));
        }
    } else {
        out.push_back(static_cast<float>(f.get_float(key, NAN)));
    }
    return out;
}

// Skip profile keys written by the calibration tool (ffnskip.*). A profile exists when the file
// has kind 1's threshold or any of kind 2's thresholds; without ffnskip.threshold kind 1 is off.
std::optional<SkipConfig> read_skip_profile(const gguf::File& f, int n_layer, int n_embd) {
    const bool block = f.find("ffnskip.threshold") != nullptr;
    const bool channel =
        f.find("ffnskip.t_in") || f.find("ffnskip.t_gate") || f.find("ffnskip.t_mid");
    if (!block && !channel) return std::nullopt;
    SkipConfig cfg;
    cfg.enabled = f.get_bool("ffnskip.enabled", true);
    cfg.warmup = profile_count(f, "ffnskip.warmup", cfg.warmup);
    cfg.cold_start = profile_count(f, "ffnskip.cold_start", cfg.cold_start);
    cfg.cold_end = profile_count(f, "ffnskip.cold_end", cfg.cold_end);
    cfg.span = profile_count(f, "ffnskip.span", cfg.span);
    if (const auto* arr = f.get_float_array("ffnskip.threshold")) {
        cfg.threshold.assign(arr->begin(), arr->end());
    } else if (block) {
        cfg.threshold = {static_cast<float>(f.get_float("ffnskip.threshold", 0.98))};
    } else {
        cfg.threshold = {NAN};
    }
    cfg.t_in = float_list(f, "ffnskip.t_in");
    cfg.t_gate = float_list(f, "ffnskip.t_gate");
    cfg.t_mid = float_list(f, "ffnskip.t_mid");
    if (f.find("ffnskip.compensation")) {
        const auto* comp = f.get_float_array("ffnskip.compensation");
        if (comp == nullptr) fail("ffnskip.compensation is not an array of floats");
        cfg.compensation.reserve(comp->size());
        for (double v : *comp) {
            // Out-of-range doubles would become inf here; validate() rejects them by name.
            cfg.compensation.push_back(std::fabs(v) < 3e38 ? static_cast<float>(v) : INFINITY);
        }
    }
    try {
        cfg.validate(n_layer, n_embd);
    } catch (const InvalidArgument& e) {
        fail(std::string("stored skip profile (ffnskip.*) is invalid: ") + e.what());
    }
    return cfg;
}

// The per-pair rope divisors stored as tensors, multiplied into those of the metadata (yarn):
// llama3's rope_freqs.weight; phi3's rope_factors_short.weight, with rope_factors_long.weight
// kept for Hparams::for_context. Then the magnitude is folded into the attention scale.
void read_rope_tensors(const gguf::File& f, Hparams& hp) {
    const size_t n = static_cast<size_t>(hp.n_rot / 2);
    auto divisors = [&](const char* name) {
        std::vector<float> d = vec(f, name, hp.n_rot / 2);
        for (float v : d) {
            if (!(v > 0.0f)) fail("tensor '" + std::string(name) + "' holds a factor <= 0");
        }
        return d;
    };
    auto times = [&](std::vector<float> a, const std::vector<float>& b) {
        if (a.empty()) return b;
        for (size_t i = 0; i < n; ++i) a[i] *= b[i];
        return a;
    };
    if (f.tensor("rope_freqs.weight")) {
        if (hp.arch == Arch::Gemma3) fail("tensor 'rope_freqs.weight' is not supported for gemma3");
        hp.rope_freq_factors = times(hp.rope_freq_factors, divisors("rope_freqs.weight"));
    }
    const bool longrope =
        f.tensor("rope_factors_long.weight") || f.tensor("rope_factors_short.weight");
    if (hp.rope_scaling == RopeScaling::LongRope && !longrope) {
        fail(
            "longrope scaling needs the tensors 'rope_factors_long.weight' and "
            "'rope_factors_short.weight'");
    }
    if (longrope) {
        if (hp.arch != Arch::Phi3) fail("tensors 'rope_factors_*.weight' are only read for phi3");
        hp.rope_scaling = RopeScaling::LongRope;
        hp.rope_freq_factors_long =
            times(hp.rope_freq_factors, divisors("rope_factors_long.weight"));
        hp.rope_freq_factors = times(hp.rope_freq_factors, divisors("rope_factors_short.weight"));
    }
    if (hp.rope_mscale != 1.0f) {
        // Full rotary: q.k scaled by the magnitude squared, one multiply per score. Partial: only
        // the rotated dimensions of q and k carry it, in the cos/sin table.
        if (hp.n_rot == hp.head_dim)
            hp.attn_scale *= hp.rope_mscale * hp.rope_mscale;
        else
            hp.rope_table_magnitude = hp.rope_mscale;
    }
}

}  // namespace

std::shared_ptr<Model> Model::load(const std::string& path) {
    return from_file(gguf::File::open(path));
}

std::shared_ptr<Model> Model::from_file(std::unique_ptr<gguf::File> file) {
    std::shared_ptr<Model> m(new Model());
    m->file_ = std::move(file);
    const gguf::File& f = *m->file_;
    m->hp_ = read_hparams(f);
    Hparams& hp = m->hp_;

    const gguf::TensorInfo& embd = need(f, "token_embd.weight");
    if (embd.n_dims != 2 || embd.ne[0] != hp.n_embd || embd.ne[1] < 1 || embd.ne[1] > (1 << 24)) {
        fail("tensor 'token_embd.weight' has shape " + shape_str(embd) + ", expected [" +
             std::to_string(hp.n_embd) + ", n_vocab]");
    }
    hp.n_vocab = static_cast<int>(embd.ne[1]);
    m->tok_embd = matrix(f, "token_embd.weight", hp.n_vocab, hp.n_embd);
    m->output_norm = vec(f, "output_norm.weight", hp.n_embd);
    if (f.tensor("output.weight")) {
        m->output = matrix(f, "output.weight", hp.n_vocab, hp.n_embd);
    } else {
        m->output = m->tok_embd;
        m->tied_output = true;
    }

    read_rope_tensors(f, hp);

    const int64_t q_dim = static_cast<int64_t>(hp.n_head) * hp.head_dim;
    const int64_t kv_dim = static_cast<int64_t>(hp.n_head_kv) * hp.head_dim;
    m->layers.resize(static_cast<size_t>(hp.n_layer));
    for (int l = 0; l < hp.n_layer; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        LayerWeights& L = m->layers[static_cast<size_t>(l)];
        L.attn_norm = vec(f, p + "attn_norm.weight", hp.n_embd);
        // phi3 stacks q, k and v in one matrix (llama.cpp also takes them apart): row-range views.
        if (hp.arch == Arch::Phi3 &&
            (f.tensor(p + "attn_qkv.weight") || !f.tensor(p + "attn_q.weight"))) {
            const WeightView qkv = matrix(f, p + "attn_qkv.weight", q_dim + 2 * kv_dim, hp.n_embd);
            L.wq = qkv.row_range(0, q_dim);
            L.wk = qkv.row_range(q_dim, kv_dim);
            L.wv = qkv.row_range(q_dim + kv_dim, kv_dim);
        } else {
            L.wq = matrix(f, p + "attn_q.weight", q_dim, hp.n_embd);
            L.wk = matrix(f, p + "attn_k.weight", kv_dim, hp.n_embd);
            L.wv = matrix(f, p + "attn_v.weight", kv_dim, hp.n_embd);
        }
        L.wo = matrix(f, p + "attn_output.weight", hp.n_embd, q_dim);
        if (hp.arch == Arch::Qwen2) {
            L.bq = vec(f, p + "attn_q.bias", q_dim);
            L.bk = vec(f, p + "attn_k.bias", kv_dim);
            L.bv = vec(f, p + "attn_v.bias", kv_dim);
        }
        if (hp.qk_norm) {
            L.q_norm = vec(f, p + "attn_q_norm.weight", hp.head_dim);
            L.k_norm = vec(f, p + "attn_k_norm.weight", hp.head_dim);
        }
        if (hp.post_norms) L.post_attn_norm = vec(f, p + "post_attention_norm.weight", hp.n_embd);
        L.ffn_norm = vec(f, p + "ffn_norm.weight", hp.n_embd);
        if (hp.post_norms) L.post_ffn_norm = vec(f, p + "post_ffw_norm.weight", hp.n_embd);
        if (hp.arch == Arch::Phi3) {  // gate and up stacked in ffn_up, the gate's rows first
            const WeightView gate_up = matrix(f, p + "ffn_up.weight", 2 * hp.n_ff, hp.n_embd);
            L.w_gate = gate_up.row_range(0, hp.n_ff);
            L.w_up = gate_up.row_range(hp.n_ff, hp.n_ff);
        } else {
            L.w_gate = matrix(f, p + "ffn_gate.weight", hp.n_ff, hp.n_embd);
            L.w_up = matrix(f, p + "ffn_up.weight", hp.n_ff, hp.n_embd);
        }
        L.w_down = matrix(f, p + "ffn_down.weight", hp.n_embd, hp.n_ff);
    }

    m->tokenizer_ = Tokenizer::from_gguf(f);
    if (m->tokenizer_->n_vocab() > hp.n_vocab) {
        fail("the tokenizer has " + std::to_string(m->tokenizer_->n_vocab()) +
             " tokens but token_embd.weight only " + std::to_string(hp.n_vocab) + " rows");
    }
    m->skip_profile_ = read_skip_profile(f, hp.n_layer, hp.n_embd);
    return m;
}

void Model::detach_weights(const std::vector<const uint8_t*>& unread) {
    std::vector<const uint8_t*> skip = unread;
    std::sort(skip.begin(), skip.end());
    std::vector<std::pair<size_t, size_t>> ranges;  // [begin, end) offsets into the file
    auto add = [&](const WeightView& w) {
        if (w.empty() || std::binary_search(skip.begin(), skip.end(), w.data)) return;
        const size_t at = static_cast<size_t>(w.data - file_->bytes());
        ranges.emplace_back(at, at + w.bytes());
    };
    add(tok_embd);
    add(output);
    for (const LayerWeights& L : layers) {
        for (const WeightView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
            add(*w);
    }
    std::sort(ranges.begin(), ranges.end());
    // Each detach splits the mapping (the kernel allows about 65000 pieces per process), so
    // neighbouring ranges are merged, across gaps of up to 1 MiB too: copying a gap costs less
    // than another piece.
    constexpr size_t kBridge = size_t{1} << 20;
    std::vector<std::pair<size_t, size_t>> merged;
    for (const auto& r : ranges) {
        if (!merged.empty() && r.first <= merged.back().second + kBridge) {
            merged.back().second = std::max(merged.back().second, r.second);
        } else {
            merged.push_back(r);
        }
    }
    uint64_t total = 0;
    for (const auto& [begin, end] : merged) total += end - begin;
    // Copies that do not fit in free memory and swap would end in the OOM killer: such a
    // model stays mapped and is read from the page cache as before (exposed to truncation).
    // The copies replace mapped pages, so they take no extra address space.
    // Once a model stays mapped it stays so: an engine already running reads those pages, and
    // a later engine's detach would swap them under it.
    if (stays_mapped_ || total > memory_headroom(/*address_space=*/false).bytes) {
        stays_mapped_ = true;
        return;
    }
    for (const auto& [begin, end] : merged) file_->detach(begin, end - begin);
}

Hparams Hparams::for_context(int n_ctx) const {
    Hparams hp = *this;
    if (!rope_freq_factors_long.empty() && n_ctx > rope_orig_ctx) {
        hp.rope_freq_factors = rope_freq_factors_long;
    }
    if (hp.slides_every_layer() && hp.swa_window >= n_ctx) {
        hp.swa_period = 0;
        hp.swa_window = 0;
    }
    if (hp.slides_every_layer() && (hp.rope_scale != 1.0f || !hp.rope_freq_factors.empty())) {
        fail("a sliding window on every layer (" + arch_name +
             ".attention.sliding_window = " + std::to_string(swa_window) + " < n_ctx " +
             std::to_string(n_ctx) + ") together with rope scaling is not supported");
    }
    return hp;
}

size_t Model::ffn_bytes() const {
    size_t b = 0;
    for (const LayerWeights& L : layers) b += L.ffn_bytes();
    return b;
}

size_t Model::bytes_per_token() const {
    size_t b = output.bytes() + tok_embd.row_bytes;
    for (const LayerWeights& L : layers) b += L.attn_bytes() + L.ffn_bytes();
    return b;
}

}  // namespace ffnskip
