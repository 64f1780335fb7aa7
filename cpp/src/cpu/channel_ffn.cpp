#include "cpu/channel_ffn.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "cpu/kernels.h"
#include "cpu/ops.h"
#include "ffn_rules.h"

namespace ffnskip::cpu {

namespace {

constexpr uint8_t kWantGateUp = 1, kWantDown = 2;

uint8_t wanted(const SkipPolicy::ChannelThresholds& th) {
    uint8_t w = 0;
    if (!std::isnan(th.in)) w |= kWantGateUp;
    if (!std::isnan(th.gate) || !std::isnan(th.mid)) w |= kWantDown;
    return w;
}

// The channels i < n with rules::channel_keep(v[i], t), ascending, into out (room for n); returns
// their count. Branch-free: keep decisions are near-random, and a branch per channel
// mispredicts about half the time.
int64_t kept_channels(const float* v, int64_t n, float t, int32_t* out) {
    int64_t k = 0;
    for (int64_t i = 0; i < n; ++i) {
        out[k] = static_cast<int32_t>(i);
        k += rules::channel_keep(v[i], t) ? 1 : 0;
    }
    return k;
}

// y += x, n floats (the threads' parts of a product).
void add_into(float* y, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

}  // namespace

void ChannelHists::count(int64_t* hist, const float* v, int64_t n) const {
    if (hist == nullptr) return;
    for (int64_t i = 0; i < n; ++i) ++hist[channel_hist_bin(v[i])];
}

ChannelFfn::ChannelFfn(const std::vector<LayerWeights>& file, int n_embd, int n_ff, FfnAct gate_act,
                       ThreadPool& pool)
    : file_(file), n_embd_(n_embd), n_ff_(n_ff), act_(gate_act), pool_(pool) {
    layouts_.resize(file.size());
    want_.assign(file.size(), 0);
    const size_t ff = static_cast<size_t>(n_ff);
    ffn_gate_.resize(ff);
    ffn_up_.resize(ff);
    m_.resize(ff);
    ones_.assign(ff, 1.0f);
    active_.resize(std::max<size_t>(ff, static_cast<size_t>(n_embd)));
    kept_.reserve(ff);
    size_t act = 0;
    for (const LayerWeights& L : file) {
        for (const WeightView* w : {&L.w_gate, &L.w_up, &L.w_down}) {
            act = std::max(act, act_row_bytes(w->type, w->cols));
        }
    }
    acts_.resize(act + 64);
}

void ChannelFfn::fill(const WeightView& w, uint8_t* base, TransposedView& view) {
    const int64_t groups = view.groups();
    const int n_tasks = static_cast<int>(std::min<int64_t>(groups, 4 * pool_.size()));
    pool_.run(n_tasks, [&](int task, int) {
        const int64_t g0 = groups * task / n_tasks, g1 = groups * (task + 1) / n_tasks;
        fill_transposed(w, view, base, g0 * kTGroup, g1 * kTGroup);
    });
    view = bind_transposed(view, base);
}

void ChannelFfn::build(const WeightView& w, PageBuffer& bytes, TransposedView& view) {
    view = plan_transposed(w);
    bytes = PageBuffer(view.bytes());
    fill(w, bytes.data(), view);
}

void ChannelFfn::update(size_t l, uint8_t want, bool free) {
    Layouts& T = layouts_[l];
    const LayerWeights& W = file_[l];
    if ((want & kWantGateUp) && !T.gate_up) {
        build(W.w_gate, T.gate_bytes, T.gate);
        build(W.w_up, T.up_bytes, T.up);
        T.gate_up = true;
    }
    if ((want & kWantDown) && !T.down_built) {
        build(W.w_down, T.down_bytes, T.down);
        T.down_built = true;
    }
    if (free && !(want & kWantGateUp)) {
        T.gate_bytes.reset();
        T.up_bytes.reset();
        T.gate_up = false;
    }
    if (free && !(want & kWantDown)) {
        T.down_bytes.reset();
        T.down_built = false;
    }
    want_[l] = free ? want : static_cast<uint8_t>(want_[l] | want);
}

void ChannelFfn::prepare(const SkipPolicy* policy) {
    const size_t n = layouts_.size();
    std::vector<uint8_t> want(n, 0);
    for (size_t l = 0; l < n; ++l)
        want[l] = policy ? wanted(policy->channel(static_cast<int>(l))) : 0;
    if (want == want_) return;
    // Every layout again, in one mapping sized for them (a change of profile is rare; the
    // layouts of a layer kept would otherwise stay in their own small mappings).
    layouts_.clear();  // (Layouts holds move-only buffers: cleared and regrown, not assigned)
    layouts_.resize(n);
    arena_.reset();
    want_.assign(n, 0);
    // Planned once: their sizes give the mapping's, then they are filled at their offsets.
    constexpr size_t kAlign = 4096;
    auto room = [](const TransposedView& v) { return (v.bytes() + kAlign - 1) / kAlign * kAlign; };
    size_t total = 0;
    for (size_t l = 0; l < n; ++l) {
        Layouts& T = layouts_[l];
        const LayerWeights& W = file_[l];
        if (want[l] & kWantGateUp) {
            T.gate = plan_transposed(W.w_gate);
            T.up = plan_transposed(W.w_up);
            total += room(T.gate) + room(T.up);
        }
        if (want[l] & kWantDown) {
            T.down = plan_transposed(W.w_down);
            total += room(T.down);
        }
    }
    if (total == 0) return;
    arena_ = PageBuffer(total);
    size_t at = 0;
    auto place = [&](const WeightView& w, TransposedView& view) {
        const size_t r = room(view);
        fill(w, arena_.data() + at, view);
        at += r;
    };
    for (size_t l = 0; l < n; ++l) {
        Layouts& T = layouts_[l];
        const LayerWeights& W = file_[l];
        if (want[l] & kWantGateUp) {
            place(W.w_gate, T.gate);
            place(W.w_up, T.up);
            T.gate_up = true;
        }
        if (want[l] & kWantDown) {
            place(W.w_down, T.down);
            T.down_built = true;
        }
    }
    want_ = want;
}

void ChannelFfn::ensure(const SkipPolicy& policy) {
    for (size_t l = 0; l < layouts_.size(); ++l) {
        const uint8_t want = wanted(policy.channel(static_cast<int>(l)));
        if ((want & ~want_[l]) != 0) update(l, want, false);
    }
}

void ChannelFfn::count_dense(const float* hn, const float* gate, const float* m,
                             const ChannelHists& hists) {
    const int64_t ff = n_ff_;
    hists.count(hists.h, hn, n_embd_);
    std::copy(gate, gate + ff, ffn_gate_.begin());
    gated_act(act_, ffn_gate_.data(), ones_.data(), ff);
    hists.count(hists.g, ffn_gate_.data(), ff);
    hists.count(hists.m, m, ff);
}

size_t ChannelFfn::layout_bytes() const {
    size_t b = 0;
    for (const Layouts& T : layouts_) {
        if (T.gate_up) b += T.gate.bytes() + T.up.bytes();
        if (T.down_built) b += T.down.bytes();
    }
    return b;
}

void ChannelFfn::dense_matvec(const WeightView& w, const float* x, float* y) {
    const size_t arb = act_row_bytes(w.type, w.cols);
    if (arb) prepare_acts(w.type, x, w.cols, 0, 1, acts_.data());
    // One contiguous range of rows per thread, as the backend's one-token matmuls.
    const int n = pool_.size();
    int64_t block = (w.rows + n - 1) / n;
    block = std::max<int64_t>(16, (block + 15) / 16 * 16);
    const int n_tasks = static_cast<int>((w.rows + block - 1) / block);
    pool_.run(n_tasks, [&](int task, int) {
        const int64_t r0 = task * block, r1 = std::min(w.rows, r0 + block);
        matmul(w, x, arb ? acts_.data() : nullptr, 1, y, w.rows, r0, r1);
    });
}

void pooled_sparse_matvec(ThreadPool& pool, const TransposedView& a, SparseInput& x, float* ya,
                          const TransposedView* b, float* yb, std::vector<float>& parts,
                          bool fill_terms) {
    // Task k computes every output over part k of the active blocks (balanced by channel count);
    // task 0 writes ya (yb), the others their own part of `parts`, added after the run.
    const int n = static_cast<int>(std::min<int64_t>(pool.size(), std::max<int64_t>(1, x.units())));
    const size_t stride = static_cast<size_t>(a.n_out + (b != nullptr ? b->n_out : 0));
    parts.resize(stride * static_cast<size_t>(n));
    pool.run(n, [&](int task, int) {
        const auto [k0, k1] = x.part(task, n);
        if (fill_terms) x.fill_terms(k0, k1);
        float* pa = task == 0 ? ya : parts.data() + stride * static_cast<size_t>(task);
        cpu::sparse_matvec(a, x, pa, k0, k1);
        if (b != nullptr) cpu::sparse_matvec(*b, x, task == 0 ? yb : pa + a.n_out, k0, k1);
    });
    for (int task = 1; task < n; ++task) {
        const float* pa = parts.data() + stride * static_cast<size_t>(task);
        add_into(ya, pa, a.n_out);
        if (b != nullptr) add_into(yb, pa + a.n_out, b->n_out);
    }
}

void ChannelFfn::sparse_matvec(const TransposedView& a, SparseInput& xa, float* ya,
                               const TransposedView* b, float* yb) {
    pooled_sparse_matvec(pool_, a, xa, ya, b, yb, parts_, true);
}

ChannelCounts ChannelFfn::run(int layer, SkipPolicy::ChannelThresholds th,
                              const LayerWeights& dense, const float* hn, float* out,
                              const ChannelHists& hists) {
    const Layouts& T = layouts_[static_cast<size_t>(layer)];
    const uint8_t want = wanted(th);
    if ((want & ~want_[static_cast<size_t>(layer)]) != 0) {
        throw InvalidArgument("channel FFN: layer " + std::to_string(layer) +
                              " has no weight layout for these thresholds (prepare first)");
    }
    const int64_t d = n_embd_, ff = n_ff_;
    ChannelCounts c;
    hists.count(hists.h, hn, d);

    // gate and up from h~.
    const bool in_on = !std::isnan(th.in), gate_on = !std::isnan(th.gate);
    if (in_on) {
        const int64_t na = kept_channels(hn, d, th.in, active_.data());
        c.dropped_in = static_cast<int32_t>(d - na);
        in_.plan(T.gate, hn, active_.data(), na);
        c.bytes += static_cast<int64_t>(in_.bytes_read(T.gate));
        if (T.up.blk == T.gate.blk && T.up.super == T.gate.super) {
            // The same blocks: one prepared input and one pool run for both products.
            sparse_matvec(T.gate, in_, ffn_gate_.data(), &T.up, ffn_up_.data());
            c.bytes += static_cast<int64_t>(in_.bytes_read(T.up));
        } else {
            sparse_matvec(T.gate, in_, ffn_gate_.data());
            up_in_.plan(T.up, hn, active_.data(), na);
            sparse_matvec(T.up, up_in_, ffn_up_.data());
            c.bytes += static_cast<int64_t>(up_in_.bytes_read(T.up));
        }
    } else {
        dense_matvec(dense.w_gate, hn, ffn_gate_.data());
        c.bytes += static_cast<int64_t>(dense.w_gate.bytes());
    }
    // g = act(W_gate h~), with the dense path's rounding.
    gated_act(act_, ffn_gate_.data(), ones_.data(), ff);
    hists.count(hists.g, ffn_gate_.data(), ff);
    kept_.clear();
    if (gate_on) {
        for (int64_t j = 0; j < ff; ++j) {
            if (rules::channel_keep(ffn_gate_[j], th.gate))
                kept_.push_back(static_cast<int32_t>(j));
        }
        c.dropped_gate = static_cast<int32_t>(ff - static_cast<int64_t>(kept_.size()));
    }
    if (!in_on) {
        if (gate_on) {  // gate-first: only the kept neurons' rows of W_up, in the file's layout
            const WeightView& w = dense.w_up;
            const size_t arb = act_row_bytes(w.type, w.cols);
            if (arb) prepare_acts(w.type, hn, w.cols, 0, 1, acts_.data());
            const int n = pool_.size();
            const int64_t nk = static_cast<int64_t>(kept_.size());
            pool_.run(n, [&](int task, int) {
                const int64_t k0 = nk * task / n, k1 = nk * (task + 1) / n;
                matvec_rows(w, hn, arb ? acts_.data() : nullptr, kept_.data() + k0, k1 - k0,
                            ffn_up_.data());
            });
            c.bytes += nk * static_cast<int64_t>(w.row_bytes);
        } else {
            dense_matvec(dense.w_up, hn, ffn_up_.data());
            c.bytes += static_cast<int64_t>(dense.w_up.bytes());
        }
    }

    // m = g * k * up; the histogram of |m| counts the neurons t_gate kept.
    if (gate_on) {
        std::fill(m_.begin(), m_.end(), 0.0f);
        for (int32_t j : kept_) m_[j] = ffn_gate_[j] * ffn_up_[j];
        if (hists.m) {
            for (int32_t j : kept_) ++hists.m[channel_hist_bin(m_[j])];
        }
    } else {
        for (int64_t j = 0; j < ff; ++j) m_[j] = ffn_gate_[j] * ffn_up_[j];
        hists.count(hists.m, m_.data(), ff);
    }

    // out = W_down m~.
    const bool mid_on = !std::isnan(th.mid);
    if (gate_on || mid_on) {
        int64_t nm = 0;
        if (gate_on) {
            for (int32_t j : kept_) {
                active_[static_cast<size_t>(nm)] = j;
                nm += rules::channel_keep(m_[j], th.mid) ? 1 : 0;
            }
            c.dropped_mid = static_cast<int32_t>(static_cast<int64_t>(kept_.size()) - nm);
        } else {
            nm = kept_channels(m_.data(), ff, th.mid, active_.data());
            c.dropped_mid = static_cast<int32_t>(ff - nm);
        }
        mid_.plan(T.down, m_.data(), active_.data(), nm);
        sparse_matvec(T.down, mid_, out);
        c.bytes += static_cast<int64_t>(mid_.bytes_read(T.down));
    } else {
        dense_matvec(dense.w_down, m_.data(), out);
        c.bytes += static_cast<int64_t>(dense.w_down.bytes());
    }
    return c;
}

}  // namespace ffnskip::cpu
