// The CPU backend. run_chunk() below is the whole model, top to bottom, for a chunk of tokens:
//   x = embed(tokens)                                          (gemma3: times sqrt(n_embd))
//   per layer:  h  = x + Wo · attention(rope(Wq·n(x)), rope(Wk·n(x)), Wv·n(x))   n = rmsnorm
//               (qwen3, gemma3 also RMS-normalize each q and k head before rope)
//               h' = h + W_down · (act(W_gate·n(h)) * (W_up·n(h)))                (the FFN block)
//               x  = h', or h when the skip policy skips this FFN for this token
//   logits = W_out · n(x)
// act is silu (SwiGLU), or gelu-tanh (GeGLU) for gemma3. gemma3 also RMS-normalizes the attention
// output (Wo · ...) and the FFN output (W_down · ...) before their residual adds, and its local
// layers attend to the last swa_window positions only, with their own rope table (Hparams).
// Matmuls run on the persistent thread pool, split by output rows.
// Serving (forward_batch): every row of a step carries its own KV slot, position and skip state;
// see "several sequences" below for how a row's arithmetic is kept independent of the batch.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend.h"
#include "cpu/attention.h"
#include "cpu/channel_ffn.h"
#include "cpu/kernels.h"
#include "cpu/ops.h"
#include "cpu/repack.h"
#include "cpu/threadpool.h"
#include "env_flag.h"
#include "host_memory.h"

namespace ffnskip {

namespace {

using cpu::ThreadPool;

// Tokens per forward chunk: bounds scratch memory and sets the cancellation granularity.
constexpr int kChunk = 256;

struct MatmulJob {
    const WeightView* w;
    const float* x;  // f32 input rows (stride w->cols)
    float* y;        // output rows (stride ldy)
    int64_t ldy;
    uint8_t* acts;  // prepared activations (a slice of acts_), or null
};

class CpuBackend final : public Backend {
  public:
    CpuBackend(std::shared_ptr<const Model> model, int n_ctx, int n_threads, int n_slots)
        : Backend(std::move(model), n_ctx, kChunk, n_slots),
          pool_(n_threads),
          channel_(model_->layers, hp_.n_embd, hp_.n_ff, hp_.ffn_act, pool_) {
        const int64_t kvd = static_cast<int64_t>(hp_.n_head_kv) * hp_.head_dim;
        const int64_t qd = static_cast<int64_t>(hp_.n_head) * hp_.head_dim;
        const size_t C = kChunk;
        size_t act = 0;
        auto grow = [&](const WeightView& w) {
            act = std::max(act, cpu::act_row_bytes(w.type, w.cols));
        };
        grow(model_->output);
        for (const LayerWeights& L : model_->layers) {
            for (const WeightView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
                grow(*w);
        }
        act_stride_ = act;
        const size_t acts_bytes = 3 * C * act + 64;
        // The KV cache is zero-filled, so all of it is committed at once: refuse up front what
        // cannot fit, naming the bytes, instead of failing inside (or being OOM-killed after).
        const size_t floats_per_row =
            3 * hp_.n_embd + 2 * qd + 2 * kvd + 2 * hp_.n_ff + 4 * std::max(1, hp_.n_rot / 2);
        const Memory need =
            state_bytes(kvd, sizeof(float) * (C * floats_per_row + hp_.n_embd) + acts_bytes);
        const MemoryHeadroom room = memory_headroom();
        if (need.total() > room.bytes) {
            throw ResourceError(need.describe(n_ctx) + ", but " + room.limit + " is only " +
                                describe_bytes(room.bytes) + ": use a smaller n_ctx");
        }
        try {
            allocate_state(kvd, qd, acts_bytes);
            group_weights();
        } catch (const std::bad_alloc&) {
            throw ResourceError(need.describe(n_ctx) +
                                " (and the model's re-laid-out weights), "
                                "which could not be allocated: use a smaller n_ctx");
        } catch (const std::length_error&) {
            throw ResourceError(need.describe(n_ctx) +
                                ", more than a buffer can hold: use a "
                                "smaller n_ctx");
        }
    }

    const char* name() const override { return "cpu"; }
    bool batched_skip() const override { return true; }
    void prepare_skip(const SkipPolicy* policy) override { channel_.prepare(policy); }

    std::vector<const uint8_t*> unread_weights() const override { return unread_; }

  private:
    // ---- state ------------------------------------------------------------------------------
    // What the KV cache and the scratch buffers take.
    struct Memory {
        uint64_t kv_per_position, kv, scratch;
        uint64_t total() const { return kv + scratch < kv ? UINT64_MAX : kv + scratch; }
        std::string describe(int n_ctx) const {
            return "n_ctx=" + std::to_string(n_ctx) + " needs " + describe_bytes(kv) +
                   " for the KV cache (" + std::to_string(kv_per_position) +
                   " bytes per position) and " + describe_bytes(scratch) + " of scratch";
        }
    };
    Memory state_bytes(int64_t kvd, uint64_t scratch) const {
        Memory m{};
        // K and V, f16, every layer; saturating (hostile shapes could overflow 64 bits).
        m.kv_per_position =
            2 * sizeof(uint16_t) * static_cast<uint64_t>(hp_.n_layer) * static_cast<uint64_t>(kvd);
        // Every slot holds n_ctx positions (both ints, so the product fits 64 bits).
        const uint64_t positions =
            static_cast<uint64_t>(n_ctx()) * static_cast<uint64_t>(n_slots());
        if (__builtin_mul_overflow(m.kv_per_position, positions, &m.kv)) {
            m.kv = UINT64_MAX;
        }
        m.scratch = scratch;
        return m;
    }

    void allocate_state(int64_t kvd, int64_t qd, size_t acts_bytes) {
        const size_t C = kChunk;
        slot_stride_ = static_cast<size_t>(n_ctx()) * static_cast<size_t>(kvd);
        const size_t cache = slot_stride_ * static_cast<size_t>(n_slots());
        k_cache_.resize(static_cast<size_t>(hp_.n_layer));
        v_cache_.resize(static_cast<size_t>(hp_.n_layer));
        for (int l = 0; l < hp_.n_layer; ++l) {
            k_cache_[static_cast<size_t>(l)].assign(cache, 0);
            v_cache_[static_cast<size_t>(l)].assign(cache, 0);
        }
        x_.resize(C * hp_.n_embd);
        xn_.resize(C * hp_.n_embd);
        block_out_.resize(C * hp_.n_embd);
        h_after_ffn_.resize(hp_.n_embd);
        q_.resize(C * qd);
        k_.resize(C * kvd);
        v_.resize(C * kvd);
        att_.resize(C * qd);
        ffn_gate_.resize(C * hp_.n_ff);
        ffn_up_.resize(C * hp_.n_ff);
        rope_cos_.resize(C * std::max(1, hp_.n_rot / 2));
        rope_sin_.resize(C * std::max(1, hp_.n_rot / 2));
        if (hp_.swa_period > 0) {
            rope_cos_local_.resize(C * std::max(1, hp_.n_rot / 2));
            rope_sin_local_.resize(C * std::max(1, hp_.n_rot / 2));
        }
        states_.resize(C);
        run_rows_.resize(C);
        row_pos_.resize(C);
        row_gen_.resize(C);
        step_tokens_.resize(C);
        chan_rows_.resize(C);
        // One prepared-activation buffer per distinct weight type of a fused matmul group.
        acts_.resize(acts_bytes);
    }

    // ---- weights ----------------------------------------------------------------------------
    // The matmuls read layers_/output_: the model's views, except that Q4_0/Q4_1 weights are
    // copied into the grouped layout of cpu/repack.h where the kernels gain from it (the file's
    // pages are then read once, here). FFNSKIP_REPACK=0 keeps the file's layout (comparisons).
    void group_weights() {
        layers_ = model_->layers;
        output_ = model_->output;
        if (env_set_to_zero("FFNSKIP_REPACK")) return;
        std::vector<WeightView*> views;  // the ones to group, and where their copies start
        std::vector<size_t> at;
        size_t total = 0;
        auto consider = [&](WeightView* w) {
            if (!cpu::grouped_layout_pays_off(w->type)) return;
            views.push_back(w);
            at.push_back(total);
            total += w->bytes();
        };
        for (LayerWeights& L : layers_) {
            for (WeightView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
                consider(w);
        }
        consider(&output_);
        if (views.empty()) return;
        grouped_.resize(total);
        for (const WeightView* w : views) {
            // The embedding lookup reads token rows from the model's view (tied output).
            if (w->data != model_->tok_embd.data) unread_.push_back(w->data);
        }
        pool_.run(static_cast<int>(views.size()), [&](int i, int) {
            const size_t k = static_cast<size_t>(i);
            *views[k] = cpu::group_weight(*views[k], grouped_.data() + at[k]);
        });
    }

    // ---- the model ------------------------------------------------------------------------
    void run_chunk(const int32_t* tokens, int T, float* logits, bool all_logits,
                   const SkipRequest* skip, int first_token) override {
        segs_.assign(1, Segment{0, 0, T, n_past()});
        for (int t = 0; t < T; ++t) {
            row_pos_[static_cast<size_t>(t)] = n_past() + t;
            row_gen_[static_cast<size_t>(t)] = skip ? skip->gen_index + first_token + t : -1;
        }
        rowwise_ = false;
        logit_rows_.clear();
        if (logits) {
            for (int t = all_logits ? 0 : T - 1; t < T; ++t) logit_rows_.push_back(t);
        }
        run_rows(tokens, T, skip ? skip->policy : nullptr, skip ? skip->trace : nullptr,
                 first_token, logits);
    }

    // ---- several sequences (serving) ------------------------------------------------------
    // A step's rows are the sequences' tokens in order. Batch invariance: the ops per row
    // (norms, RoPE, SwiGLU, adds) never mix rows; attention runs per sequence with unsplit key
    // ranges (a query's sums then do not depend on how its sequence was chunked, attention.cpp);
    // and matmuls run row by row through the one-token kernels over row blocks that do not
    // depend on the step (matmuls_rowwise), so each output is the same float ops as a lone
    // decode step, while a weight block is read from DRAM once per step for all rows.
    void run_batch(const BatchSeq* seqs, int n_seqs, const SkipPolicy* policy,
                   SkipTrace* trace) override {
        segs_.clear();
        int T = 0;
        for (int i = 0; i < n_seqs; ++i) {
            const BatchSeq& q = seqs[i];
            const int pos0 = slot_past(q.slot);
            segs_.push_back(Segment{q.slot, T, q.n, pos0});
            for (int j = 0; j < q.n; ++j, ++T) {
                step_tokens_[static_cast<size_t>(T)] = q.tokens[j];
                row_pos_[static_cast<size_t>(T)] = pos0 + j;
                row_gen_[static_cast<size_t>(T)] = q.gen_index >= 0 ? q.gen_index + j : -1;
            }
        }
        rowwise_ = true;
        logit_rows_.clear();
        for (int i = 0; i < n_seqs; ++i) {
            if (seqs[i].logits)
                logit_rows_.push_back(segs_[static_cast<size_t>(i)].row0 + seqs[i].n - 1);
        }
        batch_logits_.resize(logit_rows_.size() * static_cast<size_t>(hp_.n_vocab));
        run_rows(step_tokens_.data(), T, policy, trace, 0, batch_logits_.data());
        const float* row = batch_logits_.data();
        for (int i = 0; i < n_seqs; ++i) {
            if (!seqs[i].logits) continue;
            std::memcpy(seqs[i].logits, row, sizeof(float) * hp_.n_vocab);
            row += hp_.n_vocab;
        }
    }

    // The model for rows [0, T) (row_pos_, row_gen_ and segs_ describe them). Trace row of row t:
    // trace_row0 + t. The logits of rows logit_rows_ go to logits, in order (none if null).
    void run_rows(const int32_t* tokens, int T, const SkipPolicy* policy, SkipTrace* trace,
                  int trace_row0, float* logits) {
        const int d = hp_.n_embd;
        const int half = hp_.n_rot / 2;
        for_rows(T, d + 64 * half, [&](int t) {
            float* x = &x_[static_cast<size_t>(t) * d];
            cpu::dequantize_row(model_->tok_embd.type,
                                model_->tok_embd.data + model_->tok_embd.row_bytes * tokens[t], x,
                                d);
            if (hp_.embd_scale != 1.0f) {
                for (int i = 0; i < d; ++i) x[i] *= hp_.embd_scale;
            }
            const int pos = row_pos_[static_cast<size_t>(t)];
            cpu::rope_table(pos, hp_.n_rot, hp_.rope_base, &rope_cos_[t * half],
                            &rope_sin_[t * half], hp_.rope_scale,
                            hp_.rope_freq_factors.empty() ? nullptr : hp_.rope_freq_factors.data(),
                            hp_.rope_table_magnitude);
            if (hp_.swa_period > 0) {  // local layers: their own base, no scaling
                cpu::rope_table(pos, hp_.n_rot, hp_.rope_base_local, &rope_cos_local_[t * half],
                                &rope_sin_local_[t * half]);
            }
        });
        if (policy) {
            for (int t = 0; t < T; ++t) {
                states_[static_cast<size_t>(t)] =
                    policy->begin_token(row_gen_[static_cast<size_t>(t)]);
            }
            if (policy->channel_any()) channel_.ensure(*policy);
        }
        for (int l = 0; l < hp_.n_layer; ++l) {
            const LayerWeights& L = layers_[static_cast<size_t>(l)];
            attention_block(L, l, T);  // x <- h
            if (!policy) {
                ffn_block(L, nullptr, T);  // block_out <- FFN(n(h)) for every row
                add_inplace(x_.data(), block_out_.data(), static_cast<int64_t>(T) * d);
                continue;
            }
            // Each row walks its own budget; rows whose FFN is skipped read no FFN weight. Of
            // the others, past-warm-up rows in a layer with a channel filter take the
            // channel-sparse FFN, one row at a time; the rest the dense FFN, batched.
            const SkipPolicy::ChannelThresholds th = policy->channel(l);
            int n_dense = 0, n_chan = 0;
            for (int t = 0; t < T; ++t) {
                const size_t at = static_cast<size_t>(trace_row0 + t) * hp_.n_layer + l;
                SkipPolicy::TokenState& st = states_[static_cast<size_t>(t)];
                if (policy->skip_ffn(st, l)) {
                    trace->skipped[at] = 1;
                    // A compensated skip adds the layer's calibrated mean update instead.
                    if (const float* c = policy->compensation(l)) {
                        add_inplace(&x_[static_cast<size_t>(t) * d], c, d);
                    }
                } else if (st.past_warmup && th.on()) {
                    chan_rows_[static_cast<size_t>(n_chan++)] = t;
                } else {
                    run_rows_[static_cast<size_t>(n_dense++)] = t;
                }
            }
            if (n_dense > 0) ffn_block(L, run_rows_.data(), n_dense, policy, trace, l);
            for (int c = 0; c < n_chan; ++c) {
                const int t = chan_rows_[static_cast<size_t>(c)];
                const size_t at = static_cast<size_t>(trace_row0 + t) * hp_.n_layer + l;
                float* hn = &xn_[static_cast<size_t>(n_dense + c) * d];
                cpu::rmsnorm(&x_[static_cast<size_t>(t) * d], L.ffn_norm.data(), hn, d,
                             hp_.rms_eps);
                float* out = &block_out_[static_cast<size_t>(n_dense + c) * d];
                const cpu::ChannelCounts cc = channel_.run(l, th, L, hn, out, hists(*trace, l));
                post_norm(L.post_ffn_norm, out, 1);
                SkipTrace& tr = *trace;
                tr.ffn_bytes[at] = cc.bytes;
                tr.channel_run[at] = 1;
                tr.dropped_in[at] = cc.dropped_in;
                tr.dropped_gate[at] = cc.dropped_gate;
                tr.dropped_mid[at] = cc.dropped_mid;
            }
            for (int i = 0; i < n_dense + n_chan; ++i) {
                const int t = i < n_dense ? run_rows_[static_cast<size_t>(i)]
                                          : chan_rows_[static_cast<size_t>(i - n_dense)];
                float* x = &x_[static_cast<size_t>(t) * d];
                const float* f = &block_out_[static_cast<size_t>(i) * d];
                const size_t at = static_cast<size_t>(trace_row0 + t) * hp_.n_layer + l;
                if (!trace->ffn_out.empty()) {
                    std::memcpy(&trace->ffn_out[at * static_cast<size_t>(d)], f, sizeof(float) * d);
                }
                // h' = h + f, kept apart from h for the gate; same float ops as the dense add.
                for (int k = 0; k < d; ++k) h_after_ffn_[k] = x[k] + f[k];
                const float g = cosine_similarity(x, h_after_ffn_.data(), d);
                trace->gate[at] = g;
                policy->observe_gate(states_[static_cast<size_t>(t)], l, g);
                std::memcpy(x, h_after_ffn_.data(), sizeof(float) * d);
            }
        }
        const int rows = static_cast<int>(logit_rows_.size());
        if (!logits || rows == 0) return;
        for_rows(rows, d, [&](int i) {
            cpu::rmsnorm(&x_[static_cast<size_t>(logit_rows_[static_cast<size_t>(i)]) * d],
                         model_->output_norm.data(), &xn_[static_cast<size_t>(i) * d], d,
                         hp_.rms_eps);
        });
        matmuls({{&output_, xn_.data(), logits, hp_.n_vocab, nullptr}}, rows);
    }

    void attention_block(const LayerWeights& L, int l, int T) {
        const int d = hp_.n_embd, hd = hp_.head_dim;
        const int qd = hp_.n_head * hd, kvd = hp_.n_head_kv * hd;
        for_rows(T, d, [&](int t) {
            cpu::rmsnorm(&x_[static_cast<size_t>(t) * d], L.attn_norm.data(),
                         &xn_[static_cast<size_t>(t) * d], d, hp_.rms_eps);
        });
        matmuls({{&L.wq, xn_.data(), q_.data(), qd, nullptr},
                 {&L.wk, xn_.data(), k_.data(), kvd, nullptr},
                 {&L.wv, xn_.data(), v_.data(), kvd, nullptr}},
                T);
        uint16_t* kc = k_cache_[static_cast<size_t>(l)].data();
        uint16_t* vc = v_cache_[static_cast<size_t>(l)].data();
        const int half = hp_.n_rot / 2;
        const bool local = hp_.sliding(l);
        const float* rope_cos = local ? rope_cos_local_.data() : rope_cos_.data();
        const float* rope_sin = local ? rope_sin_local_.data() : rope_sin_.data();
        for_rows(T, 2 * (qd + 2 * kvd), [&](int t) {
            float* q = &q_[static_cast<size_t>(t) * qd];
            float* k = &k_[static_cast<size_t>(t) * kvd];
            float* v = &v_[static_cast<size_t>(t) * kvd];
            if (!L.bq.empty()) {
                for (int i = 0; i < qd; ++i) q[i] += L.bq[i];
                for (int i = 0; i < kvd; ++i) k[i] += L.bk[i];
                for (int i = 0; i < kvd; ++i) v[i] += L.bv[i];
            }
            if (!L.q_norm.empty()) {  // qwen3, gemma3: each head RMS-normalized before RoPE
                for (int h = 0; h < hp_.n_head; ++h)
                    cpu::rmsnorm(q + h * hd, L.q_norm.data(), q + h * hd, hd, hp_.rms_eps);
                for (int h = 0; h < hp_.n_head_kv; ++h)
                    cpu::rmsnorm(k + h * hd, L.k_norm.data(), k + h * hd, hd, hp_.rms_eps);
            }
            cpu::rope_apply(q, hp_.n_head, hd, hp_.n_rot, hp_.rope, rope_cos + t * half,
                            rope_sin + t * half);
            cpu::rope_apply(k, hp_.n_head_kv, hd, hp_.n_rot, hp_.rope, rope_cos + t * half,
                            rope_sin + t * half);
            const size_t row = slot_stride_ * static_cast<size_t>(slot_of_row(t)) +
                               static_cast<size_t>(row_pos_[static_cast<size_t>(t)]) * kvd;
            cpu::f32_to_f16(k, kc + row, kvd);
            cpu::f32_to_f16(v, vc + row, kvd);
        });
        for (const Segment& g : segs_) {  // each sequence attends to its own slot
            cpu::AttnArgs att{};
            att.q_stride = att.out_stride = qd;
            att.kv_stride = kvd;
            att.n_head = hp_.n_head;
            att.n_head_kv = hp_.n_head_kv;
            att.head_dim = hd;
            att.scale = hp_.attn_scale;
            const uint16_t* k_slot = kc + slot_stride_ * static_cast<size_t>(g.slot);
            const uint16_t* v_slot = vc + slot_stride_ * static_cast<size_t>(g.slot);
            // Queries whose window reaches position 0 see all earlier keys: one batched call.
            // Each later query of a local layer runs alone with the cache viewed from its
            // window's first key, so the kernels' causal rule (key <= query) is the window.
            const int W = hp_.swa_window;
            const int n_all = local ? std::clamp(W - g.pos0, 0, g.n) : g.n;
            for (int t = 0; t < g.n; t = t < n_all ? n_all : t + 1) {
                const int first_key = t < n_all ? 0 : g.pos0 + t - W + 1;
                const size_t at = static_cast<size_t>(first_key) * kvd;
                att.q = &q_[static_cast<size_t>(g.row0 + t) * qd];
                att.out = &att_[static_cast<size_t>(g.row0 + t) * qd];
                att.k = k_slot + at;
                att.v = v_slot + at;
                att.n_tok = t < n_all ? n_all : 1;
                att.pos0 = t < n_all ? g.pos0 : W - 1;
                cpu::attention(att, pool_, attn_ws_, rowwise_ ? 1 : 0);
            }
        }
        matmuls({{&L.wo, att_.data(), block_out_.data(), d, nullptr}}, T);
        post_norm(L.post_attn_norm, block_out_.data(), T);
        add_inplace(x_.data(), block_out_.data(), static_cast<int64_t>(T) * d);
    }

    // rows [0, n) of `out` (stride n_embd) <- rmsnorm(row) * w, in place; nothing for an empty w
    // (only gemma3 has these post-norms).
    void post_norm(const std::vector<float>& w, float* out, int n) {
        if (w.empty()) return;
        const int d = hp_.n_embd;
        for_rows(n, d, [&](int i) {
            float* row = out + static_cast<size_t>(i) * d;
            cpu::rmsnorm(row, w.data(), row, d, hp_.rms_eps);
        });
    }

    // block_out row i <- W_down · (act(W_gate · n(h)) * (W_up · n(h))) with h = x row rows[i]
    // (rows == nullptr: every row, in order). With a skip request that records channel
    // histograms, the past-warm-up rows' |h|, |g| and |m| of layer l are counted.
    void ffn_block(const LayerWeights& L, const int* rows, int n,
                   const SkipPolicy* policy = nullptr, SkipTrace* trace = nullptr, int l = 0) {
        const int d = hp_.n_embd, ff = hp_.n_ff;
        for_rows(n, d, [&](int i) {
            const int t = rows ? rows[i] : i;
            cpu::rmsnorm(&x_[static_cast<size_t>(t) * d], L.ffn_norm.data(),
                         &xn_[static_cast<size_t>(i) * d], d, hp_.rms_eps);
        });
        matmuls({{&L.w_gate, xn_.data(), ffn_gate_.data(), ff, nullptr},
                 {&L.w_up, xn_.data(), ffn_up_.data(), ff, nullptr}},
                n);
        // Rows to count into the histograms: past-warm-up ones, when recording.
        const bool record = policy && rows && policy->config().record_channels;
        if (record) {
            for (int i = 0; i < n; ++i) {
                if (!states_[static_cast<size_t>(rows[i])].past_warmup) continue;
                const size_t at = static_cast<size_t>(i) * ff;
                // m is not there yet: count h and g now, m after the activation below.
                cpu::ChannelHists h = hists(*trace, l);
                h.m = nullptr;
                channel_.count_dense(&xn_[static_cast<size_t>(i) * d], &ffn_gate_[at], nullptr, h);
            }
        }
        for_rows(n, 8 * ff, [&](int i) {
            const size_t at = static_cast<size_t>(i) * ff;
            cpu::gated_act(hp_.ffn_act, &ffn_gate_[at], &ffn_up_[at], ff);
        });
        if (record) {
            for (int i = 0; i < n; ++i) {
                if (!states_[static_cast<size_t>(rows[i])].past_warmup) continue;
                const cpu::ChannelHists h = hists(*trace, l);
                h.count(h.m, &ffn_gate_[static_cast<size_t>(i) * ff], ff);
            }
        }
        matmuls({{&L.w_down, ffn_gate_.data(), block_out_.data(), d, nullptr}}, n);
        post_norm(L.post_ffn_norm, block_out_.data(), n);
    }

    // The histograms of layer l in the request's trace (all null when not recording).
    static cpu::ChannelHists hists(SkipTrace& tr, int l) {
        cpu::ChannelHists h;
        if (tr.hist_h.empty()) return h;
        const size_t at = static_cast<size_t>(l) * ChannelHist::kBins;
        h.h = tr.hist_h.data() + at;
        h.g = tr.hist_g.data() + at;
        h.m = tr.hist_m.data() + at;
        return h;
    }

    // ---- parallel matmuls -----------------------------------------------------------------
    // Runs several matmuls over the same T input rows as one pool run: activations are
    // prepared once per distinct (input, weight type), then output rows are split into tasks.
    void matmuls(std::initializer_list<MatmulJob> list, int T) {
        if (rowwise_) return matmuls_rowwise(list, T);
        for_row_blocks(list, T, [&](const MatmulJob& j, int64_t r0, int64_t r1) {
            cpu::matmul(*j.w, j.x, j.acts, T, j.y, j.ldy, r0, r1);
        });
    }

    // The serving step's matmuls: every row as the one-token kernel gives it
    // (cpu::matmul_each_token) over row blocks fixed by the weight alone, so a row's outputs are
    // bitwise those of a lone decode step whatever else is in the batch. Each task walks its rows
    // in sub-blocks of ~16 KiB of weights and runs all T rows over a sub-block while it is in
    // L1/L2: the weights stream from DRAM once per step, and a quantized block is decoded once
    // per 4 rows (the float types' compute is T times one row's). SmolLM2 Q4_1, 1 thread, process
    // CPU time per 4-row decode step (bench/batch_step.py, interleaved): 24.8 ms row by row, 17.7
    // ms now, against 10.5 ms for one row.
    void matmuls_rowwise(std::initializer_list<MatmulJob> list, int T) {
        for_row_blocks(list, T, [&](const MatmulJob& j, int64_t r0, int64_t r1) {
            // Multiples of 16 rows too. One row reuses nothing: its range is walked whole, so the
            // one-token tiles' prefetch runs on across it (a lone request's step, Qwen2.5-1.5B, 2
            // threads, bench/batch_step.py: 73.5 ms in 16 KiB sub-blocks, 67.9 whole, no slower
            // than Engine decode in the same process).
            const int64_t sub =
                T == 1 ? r1 - r0
                       : std::max<int64_t>(
                             16, static_cast<int64_t>(kRowwiseBytes / j.w->row_bytes) / 16 * 16);
            for (int64_t s0 = r0; s0 < r1; s0 += sub)
                cpu::matmul_each_token(*j.w, j.x, j.acts, T, j.y, j.ldy, s0,
                                       std::min(r1, s0 + sub));
        });
    }

    // Both matmul paths: prepares each job's activations (one copy per input and type), splits
    // the jobs' rows into blocks and runs body(job, r0, r1) for each block on the pool.
    template <class Body>
    void for_row_blocks(std::initializer_list<MatmulJob> list, int T, const Body& body) {
        MatmulJob jobs[3];
        int n_jobs = 0;
        for (const MatmulJob& j : list) jobs[n_jobs++] = j;
        uint8_t* next_buf = acts_.data();
        for (int i = 0; i < n_jobs; ++i) {
            MatmulJob& j = jobs[i];
            if (cpu::act_row_bytes(j.w->type, j.w->cols) == 0) continue;
            for (int p = 0; p < i; ++p) {  // share with an earlier job of the same input & type
                if (jobs[p].x == j.x && jobs[p].w->type == j.w->type && jobs[p].acts) {
                    j.acts = jobs[p].acts;
                }
            }
            if (j.acts) continue;
            j.acts = next_buf;
            next_buf += static_cast<size_t>(T) * act_stride_;
            prepare(j, T);
        }
        // Row blocks are multiples of 16 rows, so every 4-row tile starts where it would in one
        // call over the whole matrix and only the matrix's last rows take the kernels' tail path:
        // a row's result does not depend on the split (the serving step's batch invariance).
        // Several rows (a prompt, a step of several sequences): ~4 tasks per thread for balance.
        // One row (decode): one contiguous range per thread, so each thread streams one region of
        // the weights from DRAM (SmolLM2 decode at 2 threads, interleaved runs: median +5% over 2
        // tasks per thread, +5..14% over 4).
        int64_t total_rows = 0;
        for (int i = 0; i < n_jobs; ++i) total_rows += jobs[i].w->rows;
        const int64_t want = static_cast<int64_t>(pool_.size()) * (T == 1 ? 1 : 4);
        int64_t block = std::max<int64_t>(16, (total_rows + want - 1) / want);
        block = (block + 15) / 16 * 16;
        int64_t first_task[4] = {0, 0, 0, 0};
        int64_t n_tasks = 0;
        for (int i = 0; i < n_jobs; ++i) {
            first_task[i] = n_tasks;
            n_tasks += (jobs[i].w->rows + block - 1) / block;
        }
        first_task[n_jobs] = n_tasks;
        pool_.run(static_cast<int>(n_tasks), [&](int task, int) {
            int i = 0;
            while (task >= first_task[i + 1]) ++i;
            const MatmulJob& j = jobs[i];
            const int64_t r0 = (task - first_task[i]) * block;
            body(j, r0, std::min(j.w->rows, r0 + block));
        });
    }

    void prepare(const MatmulJob& j, int T) {
        const WeightView& w = *j.w;
        if (T < 8) {
            cpu::prepare_acts(w.type, j.x, w.cols, 0, T, j.acts);
            return;
        }
        const int per = (T + pool_.size() - 1) / pool_.size();
        pool_.run(pool_.size(), [&](int task, int) {
            const int t0 = task * per, t1 = std::min(T, t0 + per);
            if (t0 < t1) cpu::prepare_acts(w.type, j.x, w.cols, t0, t1, j.acts);
        });
    }

    // ---- per-row ops ------------------------------------------------------------------------
    // fn(row) for rows [0, n): on the pool when the rows hold enough work (about `work` simple
    // float ops each) to pay for a pool run's start and join (a few microseconds), else inline,
    // as for every decode step.
    template <class Fn>
    void for_rows(int n, int64_t work, const Fn& fn) {
        constexpr int64_t kMinPoolWork = 1 << 16;
        if (pool_.size() == 1 || n < 2 || n * work < kMinPoolWork) {
            for (int i = 0; i < n; ++i) fn(i);
            return;
        }
        const int n_tasks = std::min(n, 4 * pool_.size());
        pool_.run(n_tasks, [&](int task, int) {
            const int r1 = static_cast<int>(static_cast<int64_t>(n) * (task + 1) / n_tasks);
            for (int i = static_cast<int>(static_cast<int64_t>(n) * task / n_tasks); i < r1; ++i)
                fn(i);
        });
    }

    void add_inplace(float* x, const float* y, int64_t n) {
        constexpr int64_t kBlock = 4096;
        const int blocks = static_cast<int>((n + kBlock - 1) / kBlock);
        for_rows(blocks, kBlock / 4, [&](int b) {
            const int64_t i0 = b * kBlock;
            cpu::add_inplace(x + i0, y + i0, std::min(kBlock, n - i0));
        });
    }

    // ---- several sequences: the current step's rows ----------------------------------------
    struct Segment {  // one sequence: rows [row0, row0 + n) at positions pos0.. of KV slot `slot`
        int slot, row0, n, pos0;
    };
    int slot_of_row(int t) const {
        for (const Segment& g : segs_)
            if (t < g.row0 + g.n) return g.slot;
        return 0;
    }
    // Weight bytes per rowwise sub-block: the T rows of a step re-read it from L1/L2.
    static constexpr size_t kRowwiseBytes = 16 * 1024;
    std::vector<Segment> segs_;
    std::vector<int> row_pos_;      // position of each row in its slot
    std::vector<int64_t> row_gen_;  // generated-token index of each row (< 0: prompt, dense)
    std::vector<int32_t> step_tokens_;
    std::vector<int> logit_rows_;  // rows whose logits the step returns
    std::vector<float> batch_logits_;
    bool rowwise_ = false;    // the current step is a serving step (matmuls_rowwise)
    size_t slot_stride_ = 0;  // cache entries per slot per layer (n_ctx * kv_dim)

    ThreadPool pool_;
    std::vector<std::vector<uint16_t>> k_cache_, v_cache_;  // [layer][pos * kv_dim + dim], f16
    std::vector<float> x_, xn_, q_, k_, v_, att_, rope_cos_, rope_sin_, attn_ws_;
    std::vector<float> rope_cos_local_, rope_sin_local_;  // sliding-window layers' table (gemma3)
    std::vector<float> block_out_;  // per row: the attention or FFN output before the residual add
    std::vector<float> h_after_ffn_;  // one row: h + FFN(n(h)), kept apart from h for the skip gate
    // Per row: W_gate · n(h) (act(gate) * up in place) and W_up · n(h).
    std::vector<float> ffn_gate_, ffn_up_;
    std::vector<uint8_t> acts_;
    size_t act_stride_ = 0;
    std::vector<SkipPolicy::TokenState> states_;  // per row of the chunk
    std::vector<int> run_rows_;                   // rows whose dense FFN runs at the current layer
    std::vector<int> chan_rows_;        // rows whose channel-sparse FFN runs at the current layer
    cpu::ChannelFfn channel_;           // kind 2: layouts by input channel and the per-token FFN
    std::vector<LayerWeights> layers_;  // the views the matmuls read (group_weights)
    WeightView output_;
    std::vector<uint8_t> grouped_;        // the grouped copies' bytes
    std::vector<const uint8_t*> unread_;  // model weights read only to group them
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(std::shared_ptr<const Model> model, int n_ctx,
                                          int n_threads, int n_slots) {
    if (n_threads <= 0) n_threads = cpu::physical_cores();
    return std::make_unique<CpuBackend>(std::move(model), n_ctx, n_threads, n_slots);
}

}  // namespace ffnskip
