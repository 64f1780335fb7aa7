#include "ffn_skip.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace ffnskip {

void SkipConfig::validate(int n_layer, int n_embd) const {
    auto bad = [](const std::string& what) { throw InvalidArgument("SkipConfig: " + what); };
    if (warmup < 0) bad("warmup must be >= 0, got " + std::to_string(warmup));
    if (cold_start < 0) bad("cold_start must be >= 0, got " + std::to_string(cold_start));
    if (cold_end < 0) bad("cold_end must be >= 0, got " + std::to_string(cold_end));
    if (span < 0) bad("span must be >= 0, got " + std::to_string(span));
    if (threshold.empty()) bad("threshold is empty (give one value or one per layer)");
    if (threshold.size() != 1 && threshold.size() != static_cast<size_t>(n_layer)) {
        bad("threshold has " + std::to_string(threshold.size()) + " values; the model has " +
            std::to_string(n_layer) + " layers (give 1 or " + std::to_string(n_layer) + ")");
    }
    for (size_t i = 0; i < threshold.size(); ++i) {
        const float t = threshold[i];
        // +-inf are allowed as "always" / "never" sentinels; NaN means "never".
        if (std::isfinite(t) && (t < -1.0f || t > 1.0f)) {
            bad("threshold[" + std::to_string(i) + "] = " + std::to_string(t) +
                " is outside [-1, 1] (use NaN for 'never')");
        }
    }
    auto check_channel = [&](const std::vector<float>& t, const char* name) {
        if (t.size() > 1 && t.size() != static_cast<size_t>(n_layer)) {
            bad(std::string(name) + " has " + std::to_string(t.size()) + " values; the model has " +
                std::to_string(n_layer) + " layers (give none, 1 or " + std::to_string(n_layer) +
                ")");
        }
        for (size_t i = 0; i < t.size(); ++i) {
            // NaN: the filter is off in that layer; +inf drops every entry.
            if (t[i] < 0.0f) {
                bad(std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(t[i]) +
                    " is negative (use NaN for 'off')");
            }
        }
    };
    check_channel(t_in, "t_in");
    check_channel(t_gate, "t_gate");
    check_channel(t_mid, "t_mid");
    if (!compensation.empty()) {
        const size_t layers = static_cast<size_t>(std::max(n_layer, 1));
        const size_t want = static_cast<size_t>(n_layer) * static_cast<size_t>(n_embd);
        if ((n_embd > 0 && compensation.size() != want) ||
            (n_embd <= 0 && compensation.size() % layers != 0)) {
            bad("compensation has " + std::to_string(compensation.size()) +
                " values; the model needs n_layer x n_embd = " +
                (n_embd > 0 ? std::to_string(want) : std::to_string(n_layer) + " x n_embd") +
                " (or none)");
        }
        for (size_t i = 0; i < compensation.size(); ++i) {
            if (!std::isfinite(compensation[i])) {
                bad("compensation[" + std::to_string(i) + "] is not finite");
            }
        }
    }
}

float ChannelHist::lower_edge(int bin) {
    if (bin <= 0) return 0.0f;
    const int k = bin - 1;
    const int e = kHistMinExp + k / kHistPerOctave;
    return std::ldexp(1.0f + static_cast<float>(k % kHistPerOctave) / kHistPerOctave, e);
}

void SkipStats::reset(int layers) {
    const size_t n = static_cast<size_t>(layers);
    n_layer = layers;
    tokens = 0;
    evaluated.assign(n, 0);
    skipped.assign(n, 0);
    gates.clear();
    n_embd = 0;
    ffn_out.clear();
    ffn_bytes_read.assign(n, 0);
    if (ffn_bytes_dense.size() != n) ffn_bytes_dense.assign(n, 0);  // the engine sets them
    for (auto* v : {&channel_runs, &dropped_in, &dropped_gate, &dropped_mid}) v->assign(n, 0);
    for (auto* v : {&hist_h, &hist_g, &hist_m}) v->clear();
    drops.clear();
}

int64_t SkipStats::total_skipped() const {
    int64_t s = 0;
    for (int64_t v : skipped) s += v;
    return s;
}

double SkipStats::skip_ratio() const {
    if (tokens == 0 || n_layer == 0) return 0.0;
    return static_cast<double>(total_skipped()) / (static_cast<double>(tokens) * n_layer);
}

double SkipStats::ffn_bytes_saved() const {
    double read = 0, dense = 0;
    for (int64_t b : ffn_bytes_read) read += static_cast<double>(b);
    for (int64_t b : ffn_bytes_dense) dense += static_cast<double>(b);
    if (tokens == 0 || dense == 0) return 0.0;
    return 1.0 - read / (dense * static_cast<double>(tokens));
}

SkipPolicy::SkipPolicy(SkipConfig cfg, int n_layer, int n_embd)
    : cfg_(std::move(cfg)), n_layer_(n_layer) {
    cfg_.validate(n_layer, n_embd);
    n_embd_ = cfg_.compensation.empty()
                  ? 0
                  : static_cast<int>(cfg_.compensation.size() / static_cast<size_t>(n_layer));
    const size_t n = static_cast<size_t>(n_layer);
    hot_.assign(n, 0);
    thr_.assign(n, std::numeric_limits<float>::quiet_NaN());
    grant_.assign(n, 0);
    const int hot_end = n_layer - cfg_.cold_end;
    for (int l = cfg_.cold_start; l < hot_end; ++l) hot_[static_cast<size_t>(l)] = 1;
    const float off = std::numeric_limits<float>::quiet_NaN();
    auto per_layer = [&](const std::vector<float>& t, int l) {
        if (t.empty()) return off;
        return t.size() == 1 ? t[0] : t[static_cast<size_t>(l)];
    };
    chan_.resize(n);
    for (int l = 0; l < n_layer; ++l) {
        ChannelThresholds& c = chan_[static_cast<size_t>(l)];
        c = {per_layer(cfg_.t_in, l), per_layer(cfg_.t_gate, l), per_layer(cfg_.t_mid, l)};
        channel_any_ = channel_any_ || c.on();
    }
    for (int l = 0; l < n_layer; ++l) {
        thr_[static_cast<size_t>(l)] = cfg_.threshold_for(l);
        grant_[static_cast<size_t>(l)] = rules::block_grant(cfg_.span, l, hot_end);
    }
}

SkipPolicy::TokenState SkipPolicy::begin_token(int64_t gen_index) const {
    TokenState s;
    s.past_warmup = rules::token_past_warmup(cfg_.enabled, gen_index, cfg_.warmup);
    s.budget = 0;
    return s;
}

bool SkipPolicy::skip_ffn(TokenState& s, int layer) const {
    return rules::block_skip(s.past_warmup, is_hot(layer), s.budget);
}

void SkipPolicy::observe_gate(TokenState& s, int layer, float g) const {
    const size_t l = static_cast<size_t>(layer);
    rules::block_observe(s.past_warmup, is_hot(layer), g, thr_[l], grant_[l], s.budget);
}

void SkipTrace::resize(int layers, int tokens) {
    n_layer = layers;
    n_tokens = tokens;
    const size_t n = static_cast<size_t>(layers) * static_cast<size_t>(tokens);
    skipped.assign(n, 0);
    gate.assign(n, std::numeric_limits<float>::quiet_NaN());
    ffn_out.clear();
    n_embd = 0;
    ffn_bytes.assign(n, -1);
    channel_run.assign(n, 0);
    for (auto* v : {&dropped_in, &dropped_gate, &dropped_mid}) v->assign(n, 0);
    for (auto* v : {&hist_h, &hist_g, &hist_m}) v->clear();
}

void SkipTrace::record_channels() {
    const size_t n = static_cast<size_t>(n_layer) * ChannelHist::kBins;
    for (auto* v : {&hist_h, &hist_g, &hist_m}) v->assign(n, 0);
}

void SkipTrace::record_ffn(int embd) {
    n_embd = embd;
    ffn_out.assign(skipped.size() * static_cast<size_t>(embd),
                   std::numeric_limits<float>::quiet_NaN());
}

float cosine_similarity(const float* a, const float* b, int64_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (int64_t i = 0; i < n; ++i) {
        ab += static_cast<double>(a[i]) * b[i];
        aa += static_cast<double>(a[i]) * a[i];
        bb += static_cast<double>(b[i]) * b[i];
    }
    return rules::cosine_from_sums(ab, aa, bb);
}

void accumulate(SkipStats& stats, const SkipTrace& trace, bool record_gates, bool record_ffn) {
    // A backend may fill the per-layer vectors of a one-token trace without setting the sizes.
    const size_t n_layer =
        trace.n_layer > 0 ? static_cast<size_t>(trace.n_layer) : trace.skipped.size();
    if (n_layer == 0) return;
    const size_t n_tokens = trace.skipped.size() / n_layer;
    if (stats.n_layer != static_cast<int>(n_layer)) stats.reset(static_cast<int>(n_layer));
    stats.tokens += static_cast<int64_t>(n_tokens);
    const bool with_bytes = trace.ffn_bytes.size() == trace.skipped.size();
    const bool with_channels = trace.channel_run.size() == trace.skipped.size();
    for (size_t i = 0; i < trace.skipped.size(); ++i) {
        const size_t l = i % n_layer;
        if (trace.skipped[i]) {
            ++stats.skipped[l];
            continue;
        }
        ++stats.evaluated[l];
        const int64_t b = with_bytes ? trace.ffn_bytes[i] : -1;
        stats.ffn_bytes_read[l] += b >= 0 ? b : stats.ffn_bytes_dense[l];
        if (with_channels && trace.channel_run[i]) {
            ++stats.channel_runs[l];
            stats.dropped_in[l] += trace.dropped_in[i];
            stats.dropped_gate[l] += trace.dropped_gate[i];
            stats.dropped_mid[l] += trace.dropped_mid[i];
        }
    }
    const std::vector<int64_t>* from[3] = {&trace.hist_h, &trace.hist_g, &trace.hist_m};
    std::vector<int64_t>* to[3] = {&stats.hist_h, &stats.hist_g, &stats.hist_m};
    for (int k = 0; k < 3; ++k) {
        if (from[k]->empty()) continue;
        if (to[k]->size() != from[k]->size()) to[k]->assign(from[k]->size(), 0);
        for (size_t i = 0; i < from[k]->size(); ++i) (*to[k])[i] += (*from[k])[i];
    }
    if (record_gates) {
        stats.gates.insert(stats.gates.end(), trace.gate.begin(), trace.gate.end());
        for (size_t i = 0; i < trace.skipped.size(); ++i) {
            const bool ran = with_channels && trace.channel_run[i];
            stats.drops.push_back(ran ? trace.dropped_in[i] : -1);
            stats.drops.push_back(ran ? trace.dropped_gate[i] : -1);
            stats.drops.push_back(ran ? trace.dropped_mid[i] : -1);
        }
    }
    if (record_ffn && !trace.ffn_out.empty()) {
        stats.n_embd = trace.n_embd;
        stats.ffn_out.insert(stats.ffn_out.end(), trace.ffn_out.begin(), trace.ffn_out.end());
    }
}

}  // namespace ffnskip
