// Token sampling from one row of logits: repetition penalty, temperature, top-k, top-p, min-p,
// then a draw from a seeded RNG. Pure host code, shared by every backend (logits arrive on the
// host). Not thread-safe: one Sampler per generation stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ffnskip {

// The filters run in this order (each sees the survivors of the previous one):
//   1. repetition_penalty over the distinct ids of `recent` (llama.cpp / CTRL convention:
//      a positive logit is divided by the penalty, a negative one multiplied; 1 = off)
//   2. temperature == 0: greedy argmax (ties -> lowest id); nothing below applies
//   3. top_k: keep the k largest logits (ties -> lower ids first; 0 = off)
//   4. softmax(logits / temperature) over the survivors
//   5. top_p: keep the smallest prefix of the tokens sorted by probability whose mass is
//      >= top_p (1 = off)
//   6. min_p: keep tokens with p >= min_p * p_max (0 = off)
//   7. draw from the kept tokens in proportion to their probabilities
struct SamplingParams {
    float temperature = 0.8f;         // >= 0, finite
    int top_k = 40;                   // >= 0
    float top_p = 0.95f;              // in (0, 1]
    float min_p = 0.05f;              // in [0, 1]
    float repetition_penalty = 1.0f;  // > 0, finite

    // Throws InvalidArgument naming the bad field.
    void validate() const;
};

class Sampler {
  public:
    explicit Sampler(uint64_t seed = 0) { reseed(seed); }
    // Same seed -> the same sequence of draws, on every platform (no std:: distributions).
    void reseed(uint64_t seed);

    // Throws InvalidArgument for bad params, a NaN or +inf logit, all logits -inf, or a
    // `recent` id outside [0, n_vocab).
    int32_t sample(const float* logits, size_t n_vocab, const SamplingParams& params,
                   const int32_t* recent = nullptr, size_t n_recent = 0);

  private:
    struct Candidate {
        float logit;  // after penalty and temperature; becomes the probability in step 4
        int32_t id;
    };

    uint64_t next_u64();
    double next_unit();  // uniform in [0, 1) with 53 random bits

    // Fills cand_ with the k best finite logits of x (any order).
    void collect_top_k(const float* x, size_t n, size_t k);
    // Sorts the candidates by (probability desc, id asc) far enough to cut the top_p prefix;
    // returns the prefix length. `total` is the mass of all candidates.
    size_t top_p_prefix(double top_p, double total);

    uint64_t state_[4] = {};       // xoshiro256** state
    std::vector<Candidate> cand_;  // scratch, reused across calls
    std::vector<float> work_;      // penalised logits (copied only when penalised)
};

}  // namespace ffnskip
