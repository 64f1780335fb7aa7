// The CUDA backend. The model, top to bottom, for one decoded token (decode_step below):
//   x = embed(token)
//   per layer:  h  = x + Wo · attention(rope(Wq·n(x)), rope(Wk·n(x)), Wv·n(x))   n = rmsnorm
//               gate: skip this FFN?  (device-side budget, skip_gate.cuh)
//               h' = h + W_down · (silu(W_gate·n(h)) * (W_up·n(h)))               (the FFN block)
//               gate: g = cos(h, h'), budget update
//               x  = h', or h when the FFN was skipped
//   logits = W_out · n(x)
// The token id, its position and the skip policy's tables sit in one small device block that a
// captured H2D copy refreshes, so the whole step is a fixed kernel sequence: captured once as a
// CUDA graph and replayed per token (FFNSKIP_CUDA_GRAPHS=0 launches the same sequence directly).
// Prompts (n > 1) go through batch_chunk: the same math with cuBLAS GEMMs, in chunks.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "backend.h"
#include "cuda/attention.cuh"
#include "cuda/blocks.cuh"
#include "cuda/common.cuh"
#include "cuda/dequant.cuh"
#include "cuda/gemm.cuh"
#include "cuda/gemv.cuh"
#include "cuda/norm_rope.cuh"
#include "cuda/skip_gate.cuh"
#include "cuda/swiglu.cuh"
#include "env_flag.h"

namespace ffnskip {

namespace cuda {
namespace {

constexpr int kChunk = 256;               // prompt tokens per batched step (cancel granularity)
constexpr size_t kSlabElems = 32u << 20;  // f16 weight slab for prompt GEMMs (64 MiB)
constexpr int64_t kLogitRows = 16384;     // vocab rows per all-logits GEMM

size_t align_up(size_t n, size_t a) {
    return (n + a - 1) / a * a;
}
std::string mib(size_t bytes) {
    return std::to_string((bytes + (1u << 20) - 1) >> 20) + " MiB";
}

// Probe kernel: launching-attribute lookup fails when the binary has no code for the device.
__global__ void probe_kernel() {}

// One cudaMalloc carved into 256-byte aligned pieces: the layout is fixed for the backend's
// lifetime, which the captured graph relies on.
class Arena {
  public:
    // Two passes: reserve() sizes, then allocate() and take() hand out the same pieces.
    size_t reserve(size_t bytes) {
        const size_t off = size_;
        size_ = align_up(size_ + bytes, 256);
        return off;
    }
    void allocate(const char* what) {
        const cudaError_t err = cudaMalloc(&base_, size_);
        if (err != cudaSuccess) {
            cudaGetLastError();  // clear the sticky allocation error
            throw BackendUnavailable(std::string("CUDA backend: cannot allocate ") + mib(size_) +
                                     " for " + what + ": " + cudaGetErrorString(err));
        }
    }
    template <typename T>
    T* at(size_t off) const {
        return reinterpret_cast<T*>(static_cast<uint8_t*>(base_) + off);
    }
    size_t size() const { return size_; }
    ~Arena() { cudaFree(base_); }

  private:
    void* base_ = nullptr;
    size_t size_ = 0;
};

// Deleters for the owning handles. Destructors cannot report, so release errors are ignored.
struct FreeHost {
    void operator()(void* p) const { cudaFreeHost(p); }
};
struct DestroyStream {
    void operator()(cudaStream_t s) const { cudaStreamDestroy(s); }
};
struct DestroyGraph {
    void operator()(cudaGraphExec_t g) const { cudaGraphExecDestroy(g); }
};

struct DevLayer {
    const float *attn_norm = nullptr, *ffn_norm = nullptr;
    const float *bq = nullptr, *bk = nullptr, *bv = nullptr;
    DevMatrix wq, wk, wv, wo, gate, up, down;
    __half *k_cache = nullptr, *v_cache = nullptr;
};

class CudaBackend final : public Backend {
  public:
    CudaBackend(std::shared_ptr<const Model> model, int n_ctx)
        : Backend(std::move(model), n_ctx, kChunk) {
        check_shapes();
        FFNSKIP_CUDA_CHECK(cudaSetDevice(device_));
        use_graphs_ = !env_set_to_zero("FFNSKIP_CUDA_GRAPHS");

        const int64_t kvd = static_cast<int64_t>(hp_.n_head_kv) * hp_.head_dim;
        dec_split_len_ =
            static_cast<int>(std::max<int64_t>(64, align_up(ceil_div(n_ctx, 128), 64)));
        dec_splits_ = static_cast<int>(ceil_div(n_ctx, dec_split_len_));
        pf_split_len_ = static_cast<int>(std::max<int64_t>(256, align_up(ceil_div(n_ctx, 8), 64)));
        pf_splits_ = static_cast<int>(ceil_div(n_ctx, pf_split_len_));

        plan_weights();
        plan_state(kvd);
        check_memory();
        weights_.allocate("the model weights");
        state_.allocate("the KV cache and activations");
        cudaStream_t stream = nullptr;
        FFNSKIP_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
        stream_.reset(stream);
        upload_weights();
        bind_state();
        alloc_host();
        gemm_ = std::make_unique<Gemm>(stream_.get(), slab_elems_);
        // Uploads and the memset ran on the legacy stream, which a non-blocking stream does not
        // wait for; a pageable cudaMemcpy may even return before its DMA is done.
        FFNSKIP_CUDA_CHECK(cudaDeviceSynchronize());
    }

    const char* name() const override { return "cuda"; }
    // upload_weights() copied every weight to the device: the host copies are never read again.
    std::vector<const uint8_t*> unread_weights() const override {
        std::vector<const uint8_t*> out = {model_->tok_embd.data, model_->output.data};
        for (const LayerWeights& L : model_->layers) {
            for (const WeightView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
                out.push_back(w->data);
        }
        return out;
    }

  private:
    // One token takes the captured decode step (the only path with a skip request: the base
    // refuses skip requests for more than one token, batched_skip() being false); more go
    // through the batched prompt path.
    void run_chunk(const int32_t* tokens, int T, float* logits, bool all_logits,
                   const SkipRequest* skip, int) override {
        FFNSKIP_CUDA_CHECK(cudaSetDevice(device_));
        if (T == 1) {
            decode(tokens[0], logits, skip);
        } else {
            batch_chunk(tokens, T, all_logits ? logits : nullptr, all_logits ? nullptr : logits);
            FFNSKIP_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
        }
    }

    // ---- one generated token ----------------------------------------------------------------
    void decode(int32_t token, float* logits, const SkipRequest* skip) {
        TokenCtl* ctl = static_cast<TokenCtl*>(h_ctl_);
        ctl->token = token;
        ctl->pos = n_past();
        ctl->n_layer = hp_.n_layer;
        ctl->mode = kGateDense;
        if (skip) {
            const SkipPolicy& p = *skip->policy;
            if (p.config().record_ffn || p.config().record_channels) {
                throw InvalidArgument(
                    "SkipConfig.record_ffn / record_channels (recording for calibration) run on "
                    "the CPU backend only");
            }
            upload_compensation(p);
            ctl->mode = p.begin_token(skip->gen_index).past_warmup ? kGateActive : kGateObserve;
            const size_t L = static_cast<size_t>(hp_.n_layer);
            int32_t* hot = reinterpret_cast<int32_t*>(ctl + 1);
            float* thr = reinterpret_cast<float*>(hot + L);
            int32_t* grant = reinterpret_cast<int32_t*>(thr + L);
            float* t_in = reinterpret_cast<float*>(grant + L);
            for (size_t l = 0; l < L; ++l) {
                hot[l] = p.hot_table()[l];
                thr[l] = p.threshold_table()[l];
                grant[l] = p.grant_table()[l];
                const SkipPolicy::ChannelThresholds c = p.channel(static_cast<int>(l));
                t_in[l] = c.in;
                t_in[L + l] = c.gate;
                t_in[2 * L + l] = c.mid;
            }
        }
        // A policy with channel filters takes the step with the filtering kernels; the others
        // keep the fused gate/up GEMV (bitwise the dense step when every threshold is NaN).
        const bool channel = skip && skip->policy->channel_any();
        if (use_graphs_) {
            auto& exec = channel ? graph_channel_ : graph_exec_;
            if (!exec) capture_decode(channel, exec);
            FFNSKIP_CUDA_CHECK(cudaGraphLaunch(exec.get(), stream_.get()));
        } else {
            decode_step(channel);
        }
        FFNSKIP_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
        if (logits)
            std::memcpy(logits, h_logits_, sizeof(float) * static_cast<size_t>(hp_.n_vocab));
        if (skip) {  // the base sized the trace for this one token
            const size_t L = static_cast<size_t>(hp_.n_layer);
            const int32_t* skipped = h_trace_;
            const float* gate = reinterpret_cast<const float*>(h_trace_ + L);
            const int32_t* drops = h_trace_ + 2 * L;
            SkipTrace& tr = *skip->trace;
            for (size_t l = 0; l < L; ++l) {
                tr.skipped[l] = skipped[l] ? 1 : 0;
                tr.gate[l] = gate[l];
                // The GPU reads every FFN weight byte (dense GEMVs on the filtered inputs), so
                // ffn_bytes stays "dense".
                if (!channel || drops[3 * l] < 0) continue;
                tr.channel_run[l] = 1;
                tr.dropped_in[l] = drops[3 * l];
                tr.dropped_gate[l] = drops[3 * l + 1];
                tr.dropped_mid[l] = drops[3 * l + 2];
            }
        }
    }

    // The device copy of the policy's compensation rows (zeros for none), refreshed only when
    // they change: the graph reads a fixed buffer.
    void upload_compensation(const SkipPolicy& p) {
        // Compared in place (no per-token copy); empty comp_host_ means the buffer holds zeros,
        // which is also its state after bind_state's memset.
        const std::vector<float>& c = p.config().compensation;
        const size_t n = static_cast<size_t>(hp_.n_layer) * static_cast<size_t>(hp_.n_embd);
        const bool none = c.size() != n;
        if (none ? comp_host_.empty() : c == comp_host_) return;
        float* dst = const_cast<float*>(skip_gate_.comp);
        if (none) {
            FFNSKIP_CUDA_CHECK(cudaMemset(dst, 0, n * sizeof(float)));
            comp_host_.clear();
        } else {
            FFNSKIP_CUDA_CHECK(
                cudaMemcpy(dst, c.data(), n * sizeof(float), cudaMemcpyHostToDevice));
            comp_host_ = c;
        }
    }

    template <class Exec>
    void capture_decode(bool channel, Exec& out) {
        cudaStream_t s = stream_.get();
        FFNSKIP_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
        cudaGraph_t graph = nullptr;
        try {
            decode_step(channel);
        } catch (...) {
            cudaStreamEndCapture(s, &graph);  // leave the stream usable
            if (graph) cudaGraphDestroy(graph);
            throw;
        }
        FFNSKIP_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
        cudaGraphExec_t exec = nullptr;
        const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
        cudaGraphDestroy(graph);
        if (err != cudaSuccess) throw_cuda_error(err, "cudaGraphInstantiate", __FILE__, __LINE__);
        out.reset(exec);
    }

    // The fixed kernel sequence of one decode step; everything that varies per token is read
    // from d_ctl_ on the device. Only launches and async copies: it is also what gets captured.
    // channel: gate and up unfused, then channel_swiglu applies kind 2's t_gate and t_mid.
    void decode_step(bool channel) {
        const int d = hp_.n_embd, ff = hp_.n_ff;
        cudaStream_t s = stream_.get();
        FFNSKIP_CUDA_CHECK(cudaMemcpyAsync(d_ctl_, h_ctl_, token_ctl_bytes(hp_.n_layer),
                                           cudaMemcpyHostToDevice, s));
        const TokenCtl* ctl = static_cast<const TokenCtl*>(d_ctl_);
        embed_rows(tok_embd_, &ctl->token, 1, x_, s);
        for (int l = 0; l < hp_.n_layer; ++l) {
            const DevLayer& L = layers_[static_cast<size_t>(l)];
            rmsnorm(x_, L.attn_norm, xn_, 1, d, hp_.rms_eps, s);
            qkv_gemv(L, s);
            rope_store_kv(rope_args(L, 1, &ctl->pos, 0), s);
            attention(attn_args(L, 1, &ctl->pos, 0, dec_split_len_, dec_splits_), s);
            gemv(L.wo.type, gemv_args(L.wo, att_, x_, nullptr, true), s);

            const int32_t* skip_flag = skip_gate_.skipped + l;
            ffn_begin(skip_gate_, l, x_, L.ffn_norm, xn_, d, hp_.rms_eps, s);
            if (!channel && L.gate.type == L.up.type && L.gate.stride == L.up.stride) {
                gemv_swiglu(L.gate, L.up, xn_, ffn_gate_, skip_flag, s);
            } else {
                GemvArgs g = gemv_args(L.gate, xn_, ffn_gate_, nullptr, false);
                g.skip = skip_flag;
                gemv(L.gate.type, g, s);
                GemvArgs u = gemv_args(L.up, xn_, ffn_up_, nullptr, false);
                u.skip = skip_flag;
                gemv(L.up.type, u, s);
                if (channel) {
                    channel_swiglu(skip_gate_, l, ffn_gate_, ffn_up_, ffn_gate_, ff, s);
                } else {
                    swiglu(ffn_gate_, ffn_up_, ffn_gate_, ff, skip_flag, s);
                }
            }
            GemvArgs down = gemv_args(L.down, ffn_gate_, x_, nullptr, true);
            down.skip = skip_flag;
            down.gate_part = gate_part_;
            gemv(L.down.type, down, s);
            ffn_end(skip_gate_, l, gate_part_, static_cast<int>(gemv_ctas(d)), s);
        }
        rmsnorm(x_, output_norm_, xn_, 1, d, hp_.rms_eps, s);
        gemv(output_.type, gemv_args(output_, xn_, logits_, nullptr, false), s);
        FFNSKIP_CUDA_CHECK(cudaMemcpyAsync(h_logits_, logits_,
                                           sizeof(float) * static_cast<size_t>(hp_.n_vocab),
                                           cudaMemcpyDeviceToHost, s));
        FFNSKIP_CUDA_CHECK(cudaMemcpyAsync(h_trace_, skip_gate_.skipped,
                                           5 * sizeof(int32_t) * hp_.n_layer,
                                           cudaMemcpyDeviceToHost, s));
    }

    // q, k and v in one launch when their types allow (they share the input and column count).
    void qkv_gemv(const DevLayer& L, cudaStream_t s) {
        if (L.wq.type == L.wk.type && L.wq.type == L.wv.type) {
            GemvArgs a = gemv_args(L.wq, xn_, q_, L.bq, false);
            a.job[1] = job(L.wk, k_, L.bk);
            a.job[2] = job(L.wv, v_, L.bv);
            a.n_jobs = 3;
            gemv(L.wq.type, a, s);
        } else {
            gemv(L.wq.type, gemv_args(L.wq, xn_, q_, L.bq, false), s);
            gemv(L.wk.type, gemv_args(L.wk, xn_, k_, L.bk, false), s);
            gemv(L.wv.type, gemv_args(L.wv, xn_, v_, L.bv, false), s);
        }
    }

    static GemvJob job(const DevMatrix& w, float* y, const float* bias) {
        GemvJob j;
        j.w = w.data;
        j.stride = w.stride;
        j.rows = static_cast<int>(w.rows);
        j.bias = bias;
        j.y = y;
        return j;
    }
    static GemvArgs gemv_args(const DevMatrix& w, const float* x, float* y, const float* bias,
                              bool accumulate) {
        GemvArgs a;
        a.job[0] = job(w, y, bias);
        a.n_jobs = 1;
        a.cols = static_cast<int>(w.cols);
        a.x = x;
        a.accumulate = accumulate;
        return a;
    }

    RopeArgs rope_args(const DevLayer& L, int n_tok, const int32_t* pos_dev, int pos0) const {
        RopeArgs r;
        r.q = q_;
        r.k = k_;
        r.v = v_;
        r.k_cache = L.k_cache;
        r.v_cache = L.v_cache;
        r.n_tok = n_tok;
        r.n_head = hp_.n_head;
        r.n_head_kv = hp_.n_head_kv;
        r.head_dim = hp_.head_dim;
        r.n_rot = hp_.n_rot;
        r.neox = hp_.rope == RopeStyle::Neox;
        r.base = hp_.rope_base;
        r.scale = hp_.rope_scale;
        r.pos_dev = pos_dev;
        r.pos0 = pos0;
        return r;
    }

    AttnArgs attn_args(const DevLayer& L, int n_tok, const int32_t* pos_dev, int pos0,
                       int split_len, int n_split) const {
        AttnArgs a;
        a.q = q_;
        a.out = att_;
        a.k_cache = L.k_cache;
        a.v_cache = L.v_cache;
        a.n_tok = n_tok;
        a.n_head = hp_.n_head;
        a.n_head_kv = hp_.n_head_kv;
        a.head_dim = hp_.head_dim;
        a.pos_dev = pos_dev;
        a.pos0 = pos0;
        a.split_len = split_len;
        a.n_split = n_split;
        a.part_o = attn_part_;
        a.part_ml = attn_part_ + static_cast<size_t>(n_tok) * hp_.n_head * n_split * hp_.head_dim;
        return a;
    }

    // ---- prompt chunks ----------------------------------------------------------------------
    // Runs T tokens at positions n_past().. through the model. all_out (T x n_vocab) receives every
    // token's logits, last_out the last token's; either may be null.
    void batch_chunk(const int32_t* tokens, int T, float* all_out, float* last_out) {
        const int d = hp_.n_embd, ff = hp_.n_ff;
        const int qd = hp_.n_head * hp_.head_dim, kvd = hp_.n_head_kv * hp_.head_dim;
        const int pos0 = n_past();
        cudaStream_t s = stream_.get();
        FFNSKIP_CUDA_CHECK(
            cudaMemcpyAsync(tokens_, tokens, sizeof(int32_t) * T, cudaMemcpyHostToDevice, s));
        embed_rows(tok_embd_, tokens_, T, x_, s);
        for (int l = 0; l < hp_.n_layer; ++l) {
            const DevLayer& L = layers_[static_cast<size_t>(l)];
            rmsnorm(x_, L.attn_norm, xn_, T, d, hp_.rms_eps, s);
            to_f16(xn_, x16_, static_cast<int64_t>(T) * d, s);
            gemm_->matmul(L.wq, x16_, T, q_, qd, 0.0f);
            gemm_->matmul(L.wk, x16_, T, k_, kvd, 0.0f);
            gemm_->matmul(L.wv, x16_, T, v_, kvd, 0.0f);
            if (L.bq) add_bias_rows(q_, L.bq, T, qd, s);
            if (L.bk) add_bias_rows(k_, L.bk, T, kvd, s);
            if (L.bv) add_bias_rows(v_, L.bv, T, kvd, s);
            rope_store_kv(rope_args(L, T, nullptr, pos0), s);
            attention(attn_args(L, T, nullptr, pos0, pf_split_len_, pf_splits_), s);
            to_f16(att_, x16_, static_cast<int64_t>(T) * qd, s);
            gemm_->matmul(L.wo, x16_, T, x_, d, 1.0f);

            rmsnorm(x_, L.ffn_norm, xn_, T, d, hp_.rms_eps, s);
            to_f16(xn_, x16_, static_cast<int64_t>(T) * d, s);
            gemm_->matmul(L.gate, x16_, T, ffn_gate_, ff, 0.0f);
            gemm_->matmul(L.up, x16_, T, ffn_up_, ff, 0.0f);
            swiglu(ffn_gate_, ffn_up_, ffn_gate_, static_cast<int64_t>(T) * ff, nullptr, s);
            to_f16(ffn_gate_, x16_, static_cast<int64_t>(T) * ff, s);
            gemm_->matmul(L.down, x16_, T, x_, d, 1.0f);
        }
        const size_t V = static_cast<size_t>(hp_.n_vocab);
        if (all_out) {
            rmsnorm(x_, output_norm_, xn_, T, d, hp_.rms_eps, s);
            to_f16(xn_, x16_, static_cast<int64_t>(T) * d, s);
            for (int64_t v0 = 0; v0 < hp_.n_vocab; v0 += kLogitRows) {
                const int64_t v1 = std::min<int64_t>(hp_.n_vocab, v0 + kLogitRows);
                const size_t w = static_cast<size_t>(v1 - v0);
                gemm_->matmul(output_, x16_, T, logit_rows_, static_cast<int64_t>(w), 0.0f, v0, v1);
                FFNSKIP_CUDA_CHECK(cudaMemcpy2DAsync(all_out + v0, V * sizeof(float), logit_rows_,
                                                     w * sizeof(float), w * sizeof(float), T,
                                                     cudaMemcpyDeviceToHost, s));
            }
        }
        if (last_out) {
            // The last row alone, through the decode GEMV (xn_ row 0 is 16-byte aligned).
            rmsnorm(x_ + static_cast<size_t>(T - 1) * d, output_norm_, xn_, 1, d, hp_.rms_eps, s);
            gemv(output_.type, gemv_args(output_, xn_, logits_, nullptr, false), s);
            FFNSKIP_CUDA_CHECK(
                cudaMemcpyAsync(last_out, logits_, V * sizeof(float), cudaMemcpyDeviceToHost, s));
        }
    }

    // ---- setup ------------------------------------------------------------------------------
    void check_shapes() const {
        auto unsupported = [](const std::string& what) {
            throw BackendUnavailable("CUDA backend: unsupported model shape: " + what);
        };
        if (hp_.head_dim % 2 != 0 || hp_.head_dim > kAttnMaxHeadDim) {
            unsupported("head_dim " + std::to_string(hp_.head_dim) +
                        " (must be even and <= " + std::to_string(kAttnMaxHeadDim) + ")");
        }
        if (hp_.n_rot > hp_.head_dim || hp_.n_rot % 2 != 0) {
            unsupported("n_rot " + std::to_string(hp_.n_rot));
        }
        // No kernel yet for these: refusing beats computing wrong logits.
        if (hp_.arch == Arch::Gemma3) {
            unsupported("architecture gemma3 (GeGLU FFN, post-norms, sliding-window layers)");
        }
        if (hp_.qk_norm) unsupported("architecture " + hp_.arch_name + " (per-head q/k norm)");
        if (!hp_.rope_freq_factors.empty()) {
            unsupported("rope_freqs.weight (llama3-style rope frequency scaling)");
        }
        if (hp_.n_head_kv < 1 || hp_.n_head % hp_.n_head_kv != 0) {
            unsupported("n_head " + std::to_string(hp_.n_head) + " / n_head_kv " +
                        std::to_string(hp_.n_head_kv));
        }
    }

    // Reserves arena space for a matrix (rows padded to 16 bytes, see DevMatrix); its device
    // pointer is filled in by upload_weights().
    void plan_matrix(const WeightView& w, DevMatrix& m, const char* what) {
        if (!dispatch_type(w.type, [](auto) {})) {
            throw BackendUnavailable(std::string("CUDA backend: no kernel for weight type ") +
                                     type_name(w.type) + " (" + what + ")");
        }
        m.type = w.type;
        m.rows = w.rows;
        m.cols = w.cols;
        m.row_bytes = w.row_bytes;
        m.stride = align_up(w.row_bytes, 16);
        const size_t off = weights_.reserve(m.stride * static_cast<size_t>(m.rows));
        pending_.push_back({w.data, off, m.row_bytes, m.stride, static_cast<size_t>(m.rows),
                            [&m](uint8_t* p) { m.data = p; }});
        const size_t elems = static_cast<size_t>(w.rows) * static_cast<size_t>(w.cols);
        slab_elems_ =
            std::max({slab_elems_, std::min(kSlabElems, elems), static_cast<size_t>(w.cols)});
    }
    void plan_vector(const std::vector<float>& v, const float*& dst) {
        dst = nullptr;
        if (v.empty()) return;
        const size_t bytes = v.size() * sizeof(float);
        pending_.push_back({reinterpret_cast<const uint8_t*>(v.data()), weights_.reserve(bytes),
                            bytes, bytes, 1,
                            [&dst](uint8_t* p) { dst = reinterpret_cast<const float*>(p); }});
    }

    void plan_weights() {
        const Model& m = *model_;
        tied_ = m.output.data == m.tok_embd.data;
        plan_matrix(m.tok_embd, tok_embd_, "token_embd");
        if (!tied_) plan_matrix(m.output, output_, "output");
        plan_vector(m.output_norm, output_norm_);
        // layers_ is sized once here: the upload callbacks hold references into it.
        layers_.resize(m.layers.size());
        for (size_t l = 0; l < m.layers.size(); ++l) {
            const LayerWeights& W = m.layers[l];
            DevLayer& D = layers_[l];
            plan_vector(W.attn_norm, D.attn_norm);
            plan_vector(W.ffn_norm, D.ffn_norm);
            plan_vector(W.bq, D.bq);
            plan_vector(W.bk, D.bk);
            plan_vector(W.bv, D.bv);
            plan_matrix(W.wq, D.wq, "attn_q");
            plan_matrix(W.wk, D.wk, "attn_k");
            plan_matrix(W.wv, D.wv, "attn_v");
            plan_matrix(W.wo, D.wo, "attn_output");
            plan_matrix(W.w_gate, D.gate, "ffn_gate");
            plan_matrix(W.w_up, D.up, "ffn_up");
            plan_matrix(W.w_down, D.down, "ffn_down");
        }
    }

    void upload_weights() {
        for (const Upload& u : pending_) {
            uint8_t* dst = weights_.at<uint8_t>(u.offset);
            FFNSKIP_CUDA_CHECK(cudaMemcpy2D(dst, u.stride, u.src, u.row_bytes, u.row_bytes, u.rows,
                                            cudaMemcpyHostToDevice));
            u.bind(dst);
        }
        if (tied_) output_ = tok_embd_;
        pending_.clear();
        pending_.shrink_to_fit();
    }

    // Offsets of the KV cache and activation buffers in the state arena.
    struct StatePlan {
        size_t kv, x, xn, q, k, v, att, ffn_gate, ffn_up, x16, logits, logit_rows, attn_part,
            gate_part, tokens, ctl, budget, trace, comp;
    };

    void plan_state(int64_t kvd) {
        const size_t C = kChunk, d = hp_.n_embd, ff = hp_.n_ff;
        const size_t qd = static_cast<size_t>(hp_.n_head) * hp_.head_dim;
        const size_t L = static_cast<size_t>(hp_.n_layer);
        kv_layer_elems_ = static_cast<size_t>(n_ctx()) * static_cast<size_t>(kvd);
        StatePlan& p = plan_;
        p.kv = state_.reserve(2 * L * kv_layer_elems_ * sizeof(__half));
        p.x = state_.reserve(C * d * sizeof(float));
        p.xn = state_.reserve(C * d * sizeof(float));
        p.q = state_.reserve(C * qd * sizeof(float));
        p.k = state_.reserve(C * static_cast<size_t>(kvd) * sizeof(float));
        p.v = state_.reserve(C * static_cast<size_t>(kvd) * sizeof(float));
        p.att = state_.reserve(C * qd * sizeof(float));
        p.ffn_gate = state_.reserve(C * ff * sizeof(float));
        p.ffn_up = state_.reserve(C * ff * sizeof(float));
        p.x16 = state_.reserve(C * std::max({d, qd, ff}) * sizeof(__half));
        p.logits = state_.reserve(static_cast<size_t>(hp_.n_vocab) * sizeof(float));
        p.logit_rows = state_.reserve(
            C * static_cast<size_t>(std::min<int64_t>(kLogitRows, hp_.n_vocab)) * sizeof(float));
        p.attn_part = state_.reserve(
            std::max(attn_scratch_floats(kChunk, hp_.n_head, pf_splits_, hp_.head_dim),
                     attn_scratch_floats(1, hp_.n_head, dec_splits_, hp_.head_dim)) *
            sizeof(float));
        p.gate_part = state_.reserve(3 * gemv_ctas(hp_.n_embd) * sizeof(double));
        p.tokens = state_.reserve(C * sizeof(int32_t));
        p.ctl = state_.reserve(token_ctl_bytes(hp_.n_layer));
        p.budget = state_.reserve(sizeof(int32_t));
        // Skipped flags, gate values, then kind 2's drops (3 per layer).
        p.trace = state_.reserve(5 * L * sizeof(int32_t));
        p.comp = state_.reserve(L * d * sizeof(float));  // skip compensation rows
    }

    void bind_state() {
        const StatePlan& p = plan_;
        __half* kv = state_.at<__half>(p.kv);
        for (size_t l = 0; l < layers_.size(); ++l) {
            layers_[l].k_cache = kv + (2 * l) * kv_layer_elems_;
            layers_[l].v_cache = kv + (2 * l + 1) * kv_layer_elems_;
        }
        x_ = state_.at<float>(p.x);
        xn_ = state_.at<float>(p.xn);
        q_ = state_.at<float>(p.q);
        k_ = state_.at<float>(p.k);
        v_ = state_.at<float>(p.v);
        att_ = state_.at<float>(p.att);
        ffn_gate_ = state_.at<float>(p.ffn_gate);
        ffn_up_ = state_.at<float>(p.ffn_up);
        x16_ = state_.at<__half>(p.x16);
        logits_ = state_.at<float>(p.logits);
        logit_rows_ = state_.at<float>(p.logit_rows);
        attn_part_ = state_.at<float>(p.attn_part);
        gate_part_ = state_.at<double>(p.gate_part);
        tokens_ = state_.at<int32_t>(p.tokens);
        d_ctl_ = state_.at<void>(p.ctl);
        int32_t* trace = state_.at<int32_t>(p.trace);
        skip_gate_ =
            skip_gate_view(d_ctl_, hp_.n_layer, state_.at<int32_t>(p.budget), trace,
                           reinterpret_cast<float*>(trace + hp_.n_layer), trace + 2 * hp_.n_layer);
        skip_gate_.comp = state_.at<float>(p.comp);
        // A zeroed cache keeps never-written entries finite (they are never read, but a bug
        // that read them would show up as wrong values rather than NaN poisoning everything).
        FFNSKIP_CUDA_CHECK(cudaMemset(state_.at<void>(0), 0, state_.size()));
    }

    // Pinned, so the captured copies can read and write them on every replay.
    void* alloc_pinned(size_t bytes, std::unique_ptr<void, FreeHost>& owner) {
        void* p = nullptr;
        FFNSKIP_CUDA_CHECK(cudaMallocHost(&p, bytes));
        owner.reset(p);
        std::memset(p, 0, bytes);
        return p;
    }
    void alloc_host() {
        const size_t L = static_cast<size_t>(hp_.n_layer);
        h_ctl_ = alloc_pinned(token_ctl_bytes(hp_.n_layer), h_ctl_owner_);
        h_logits_ = static_cast<float*>(
            alloc_pinned(sizeof(float) * static_cast<size_t>(hp_.n_vocab), h_logits_owner_));
        h_trace_ = static_cast<int32_t*>(alloc_pinned(5 * sizeof(int32_t) * L, h_trace_owner_));
    }

    void check_memory() const {
        size_t free_b = 0, total_b = 0;
        FFNSKIP_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
        const size_t slab = slab_elems_ * sizeof(__half);
        // cuBLAS workspace, the CUDA context's own allocations and the graph need some room.
        const size_t headroom = 256u << 20;
        const size_t need = weights_.size() + state_.size() + slab + headroom;
        if (need > free_b) {
            throw BackendUnavailable(
                "CUDA backend: the model does not fit in device memory: weights " +
                mib(weights_.size()) + " + KV cache and activations " + mib(state_.size()) +
                " (n_ctx " + std::to_string(n_ctx()) + ") + GEMM slab " + mib(slab) +
                " + headroom " + mib(headroom) + " = " + mib(need) + ", but only " + mib(free_b) +
                " of " + mib(total_b) + " are free");
        }
    }

    struct Upload {
        const uint8_t* src;
        size_t offset;
        size_t row_bytes;
        size_t stride;
        size_t rows;
        std::function<void(uint8_t*)> bind;  // stores the device address where it belongs
    };

    int device_ = 0;
    bool use_graphs_ = true;
    bool tied_ = false;
    int dec_split_len_ = 0, dec_splits_ = 0, pf_split_len_ = 0, pf_splits_ = 0;

    Arena weights_, state_;
    std::vector<Upload> pending_;
    StatePlan plan_{};
    size_t kv_layer_elems_ = 0;
    size_t slab_elems_ = 0;

    DevMatrix tok_embd_, output_;
    const float* output_norm_ = nullptr;
    std::vector<DevLayer> layers_;

    float *x_ = nullptr, *xn_ = nullptr, *q_ = nullptr, *k_ = nullptr, *v_ = nullptr;
    float *att_ = nullptr, *ffn_gate_ = nullptr, *ffn_up_ = nullptr, *logits_ = nullptr;
    float *logit_rows_ = nullptr, *attn_part_ = nullptr;
    __half* x16_ = nullptr;
    double* gate_part_ = nullptr;
    std::vector<float> comp_host_;  // what skip_gate_.comp holds; empty: zeros (no compensation)
    int32_t* tokens_ = nullptr;
    void* d_ctl_ = nullptr;
    SkipGateView skip_gate_;

    // Owners release in reverse declaration order: graph, GEMM, stream, pinned buffers, arenas.
    std::unique_ptr<void, FreeHost> h_ctl_owner_, h_logits_owner_, h_trace_owner_;
    void* h_ctl_ = nullptr;
    float* h_logits_ = nullptr;
    int32_t* h_trace_ = nullptr;

    std::unique_ptr<CUstream_st, DestroyStream> stream_;
    std::unique_ptr<Gemm> gemm_;
    std::unique_ptr<CUgraphExec_st, DestroyGraph> graph_exec_, graph_channel_;
};

}  // namespace
}  // namespace cuda

bool cuda_available(std::string* why) {
    auto fail = [why](const std::string& msg) {
        if (why) *why = msg;
        return false;
    };
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        cudaGetLastError();
        return fail(std::string("no usable CUDA device: ") + cudaGetErrorString(err));
    }
    if (count == 0) return fail("no CUDA device found");
    cudaFuncAttributes attr;
    const cudaError_t probe = cudaFuncGetAttributes(&attr, cuda::probe_kernel);
    if (probe != cudaSuccess) {
        cudaGetLastError();
        cudaDeviceProp prop{};
        cudaGetDeviceProperties(&prop, 0);
        return fail(std::string("this build has no kernels for the device (") + prop.name +
                    ", compute capability " + std::to_string(prop.major) + "." +
                    std::to_string(prop.minor) + "): " + cudaGetErrorString(probe));
    }
    if (why) why->clear();
    return true;
}

std::unique_ptr<Backend> make_cuda_backend(std::shared_ptr<const Model> model, int n_ctx) {
    std::string why;
    if (!cuda_available(&why)) throw BackendUnavailable("CUDA backend unavailable: " + why);
    return std::make_unique<cuda::CudaBackend>(std::move(model), n_ctx);
}

}  // namespace ffnskip
