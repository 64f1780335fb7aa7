#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include "ffnskip/ffnskip.h"

namespace ffnskip {

namespace {

// splitmix64: expands one 64-bit seed into well-mixed state words (the xoshiro authors'
// recommended seeding).
uint64_t splitmix64(uint64_t& x) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

// A float for a message: %g, so that 1e-20 does not print as std::to_string's "0.000000".
std::string num(float v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", static_cast<double>(v));
    return buf;
}

}  // namespace

void SamplingParams::validate() const {
    if (!(temperature >= 0.0f) || std::isinf(temperature))
        throw InvalidArgument("temperature must be a finite value >= 0, got " + num(temperature));
    if (top_k < 0) throw InvalidArgument("top_k must be >= 0, got " + std::to_string(top_k));
    if (!(top_p > 0.0f && top_p <= 1.0f))
        throw InvalidArgument("top_p must be in (0, 1], got " + num(top_p));
    if (!(min_p >= 0.0f && min_p <= 1.0f))
        throw InvalidArgument("min_p must be in [0, 1], got " + num(min_p));
    if (!(repetition_penalty > 0.0f) || std::isinf(repetition_penalty))
        throw InvalidArgument("repetition_penalty must be a finite value > 0, got " +
                              num(repetition_penalty));
}

void Sampler::reseed(uint64_t seed) {
    for (uint64_t& s : state_) s = splitmix64(seed);
}

uint64_t Sampler::next_u64() {
    // xoshiro256** (Blackman & Vigna): fast, 256-bit state, passes BigCrush.
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
}

double Sampler::next_unit() {
    return static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
}

// Ordering used by every filter: larger value first, lower id on ties, so results never
// depend on the order std::nth_element / std::sort happen to leave equal elements in.
static bool ahead(float a_val, int32_t a_id, float b_val, int32_t b_id) {
    return a_val > b_val || (a_val == b_val && a_id < b_id);
}

void Sampler::collect_top_k(const float* x, size_t n, size_t k) {
    // One pass with a k-sized heap whose top is the worst kept candidate: most logits lose the
    // first comparison, so this is O(n) and never copies the whole vocabulary.
    auto cmp = [](const Candidate& a, const Candidate& b) {
        return ahead(a.logit, a.id, b.logit, b.id);
    };
    const float neg_inf = -std::numeric_limits<float>::infinity();
    cand_.clear();
    for (size_t i = 0; i < n; ++i) {
        if (x[i] == neg_inf) continue;
        const auto id = static_cast<int32_t>(i);
        if (cand_.size() < k) {
            cand_.push_back({x[i], id});
            std::push_heap(cand_.begin(), cand_.end(), cmp);
        } else if (ahead(x[i], id, cand_.front().logit, cand_.front().id)) {
            std::pop_heap(cand_.begin(), cand_.end(), cmp);
            cand_.back() = {x[i], id};
            std::push_heap(cand_.begin(), cand_.end(), cmp);
        }
    }
}

size_t Sampler::top_p_prefix(double top_p, double total) {
    // Grow a sorted prefix geometrically: the nucleus is usually a few dozen tokens, so this
    // costs O(n) instead of sorting the whole vocabulary.
    auto cmp = [](const Candidate& a, const Candidate& b) {
        return ahead(a.logit, a.id, b.logit, b.id);
    };
    const double target = top_p * total;
    const size_t n = cand_.size();
    size_t done = 0;
    double cum = 0.0;
    size_t k = std::min<size_t>(n, 64);
    for (;;) {
        auto first = cand_.begin() + static_cast<std::ptrdiff_t>(done);
        auto nth = cand_.begin() + static_cast<std::ptrdiff_t>(k);
        if (k < n) std::nth_element(first, nth - 1, cand_.end(), cmp);
        std::sort(first, nth, cmp);
        for (size_t i = done; i < k; ++i) {
            cum += cand_[i].logit;
            if (cum >= target) return i + 1;
        }
        if (k == n) return n;  // rounding left the mass just short of the target: keep all
        done = k;
        k = std::min(n, k * 8);
    }
}

int32_t Sampler::sample(const float* logits, size_t n_vocab, const SamplingParams& params,
                        const int32_t* recent, size_t n_recent) {
    params.validate();
    if (n_vocab == 0) throw InvalidArgument("sample: logits are empty");
    if (n_vocab > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
        throw InvalidArgument("sample: too many logits");
    // Branch-free scan first (NaN and +inf both fail `v < inf`); locate the culprit only on error.
    const float inf = std::numeric_limits<float>::infinity();
    bool bad = false;
    for (size_t i = 0; i < n_vocab; ++i) bad |= !(logits[i] < inf);
    if (bad) {
        size_t i = 0;
        while (logits[i] < inf) ++i;
        throw InvalidArgument("sample: logits[" + std::to_string(i) + "] is " +
                              (std::isnan(logits[i]) ? "NaN" : "+inf"));
    }
    for (size_t i = 0; i < n_recent; ++i) {
        if (recent[i] < 0 || static_cast<size_t>(recent[i]) >= n_vocab)
            throw InvalidArgument("sample: recent token id " + std::to_string(recent[i]) +
                                  " is outside [0, " + std::to_string(n_vocab) + ")");
    }

    const float* x = logits;
    if (params.repetition_penalty != 1.0f && n_recent > 0) {
        work_.assign(logits, logits + n_vocab);
        std::vector<int32_t> ids(recent, recent + n_recent);
        std::sort(ids.begin(), ids.end());
        ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
        // Clamped: a tiny penalty would take a logit to +inf (inf - max_logit is NaN below)
        // and a huge one to -inf (the token would vanish rather than become unlikely). A -inf
        // logit (a masked token) stays -inf.
        const float big = std::numeric_limits<float>::max();
        for (int32_t id : ids) {
            float& v = work_[static_cast<size_t>(id)];
            if (v > 0.0f) {
                v = std::min(v / params.repetition_penalty, big);
            } else if (v > -big) {
                v = std::max(v * params.repetition_penalty, -big);
            }
        }
        x = work_.data();
    }

    const float neg_inf = -std::numeric_limits<float>::infinity();
    if (params.temperature == 0.0f) {
        size_t best = 0;
        for (size_t i = 1; i < n_vocab; ++i)
            if (x[i] > x[best]) best = i;  // strict: the first (lowest) id wins ties
        if (x[best] == neg_inf) throw InvalidArgument("sample: every logit is -inf");
        return static_cast<int32_t>(best);
    }

    if (params.top_k > 0) {
        collect_top_k(x, n_vocab, static_cast<size_t>(params.top_k));
    } else {
        cand_.clear();
        for (size_t i = 0; i < n_vocab; ++i)
            if (x[i] != neg_inf) cand_.push_back({x[i], static_cast<int32_t>(i)});
    }
    if (cand_.empty()) throw InvalidArgument("sample: every logit is -inf");
    float max_logit = neg_inf;
    for (const Candidate& c : cand_) max_logit = std::max(max_logit, c.logit);

    // Unnormalised probabilities: the most likely token has weight exactly 1, so min_p
    // compares against min_p itself. `total` is the mass of all top-k survivors.
    const float inv_t = 1.0f / params.temperature;
    double total = 0.0;
    for (Candidate& c : cand_) {
        c.logit = std::exp((c.logit - max_logit) * inv_t);
        total += c.logit;
    }

    // min_p before top_p gives the same set as the documented order (both keep a prefix of the
    // same ranking, and top_p's prefix is measured against `total`), while shrinking the sort.
    if (params.min_p > 0.0f) {
        const float floor_w = params.min_p;
        cand_.erase(std::remove_if(cand_.begin(), cand_.end(),
                                   [floor_w](const Candidate& c) { return c.logit < floor_w; }),
                    cand_.end());
    }
    if (params.top_p < 1.0f) cand_.resize(top_p_prefix(params.top_p, total));

    double kept = 0.0;
    for (const Candidate& c : cand_) kept += c.logit;
    const double u = next_unit() * kept;
    double cum = 0.0;
    for (const Candidate& c : cand_) {
        cum += c.logit;
        if (u < cum) return c.id;
    }
    return cand_.back().id;  // u landed in the rounding gap at the very end
}

}  // namespace ffnskip
