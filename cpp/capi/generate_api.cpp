// ffnskip_generate: prompt, then sample / stream / evaluate one token at a time, the same loop as
// the Python Generator's (python/ffnskip_native/generator.py) without stop strings.
#include <deque>
#include <string>
#include <vector>

#include "boundary.h"
#include "handles.h"

using namespace ffnskip;
using namespace ffnskip::capi;

namespace {

struct Outcome {
    int32_t n_generated = 0;
    ffnskip_finish finish = FFNSKIP_FINISH_LENGTH;
};

void check_cancel(const ffnskip_context& c) {
    if (c.cancel.load()) throw Cancelled("the generation was cancelled");
}

void run(ffnskip_context& c, ffnskip_sampler& s, const int32_t* prompt, int32_t n_prompt,
         int32_t max_tokens, ffnskip_token_fn on_token, void* user_data, Outcome& out) {
    Engine& engine = *c.engine;
    const Tokenizer& tok = engine.model().tokenizer();
    const size_t n_vocab = c.logits.size();
    const int n_ctx = engine.backend().n_ctx();

    c.has_logits = false;
    engine.eval(prompt, n_prompt, false, c.logits.data());
    c.has_logits = true;

    // The repetition penalty looks at the last repeat_last_n tokens, prompt included.
    const bool penalise = s.params.repetition_penalty != 1.0f && s.repeat_last_n > 0;
    const size_t window = static_cast<size_t>(s.repeat_last_n);
    std::deque<int32_t> recent_q;
    if (penalise) {
        const int32_t first = n_prompt > s.repeat_last_n ? n_prompt - s.repeat_last_n : 0;
        recent_q.assign(prompt + first, prompt + n_prompt);
    }
    std::vector<int32_t> recent;

    while (out.n_generated < max_tokens) {
        check_cancel(c);
        recent.assign(recent_q.begin(), recent_q.end());
        const int32_t token =
            s.sampler.sample(c.logits.data(), n_vocab, s.params, recent.data(), recent.size());
        if (tok.is_eog(token)) {
            out.finish = FFNSKIP_FINISH_EOG;
            return;
        }
        ++out.n_generated;
        if (penalise) {
            recent_q.push_back(token);
            if (recent_q.size() > window) recent_q.pop_front();
        }
        if (on_token != nullptr) {
            const std::string piece = tok.token_to_bytes(token);
            if (!on_token(token, piece.c_str(), piece.size(), user_data)) {
                out.finish = FFNSKIP_FINISH_CALLBACK;
                return;
            }
        }
        // The token just streamed needs a free cache slot to be evaluated.
        if (out.n_generated >= max_tokens || engine.backend().n_past() >= n_ctx) return;
        check_cancel(c);
        c.has_logits = false;
        engine.eval_generated(token, out.n_generated - 1, c.logits.data());
        c.has_logits = true;
    }
}

}  // namespace

extern "C" {

FFNSKIP_API ffnskip_status ffnskip_generate(ffnskip_context* ctx, ffnskip_sampler* sampler,
                                            const int32_t* prompt, int32_t n_prompt,
                                            int32_t max_tokens, ffnskip_token_fn on_token,
                                            void* user_data, int32_t* n_generated,
                                            ffnskip_finish* finish) {
    Outcome out;
    const ffnskip_status status = guarded(__func__, [&] {
        Lease<ffnskip_context> c(ctx, "ctx", Access::Exclusive);
        Lease<ffnskip_sampler> s(sampler, "sampler", Access::Exclusive);
        if (n_prompt < 1) {
            fail(FFNSKIP_ERR_INVALID_ARGUMENT,
                 "n_prompt must be >= 1, got " + std::to_string(n_prompt));
        }
        need(prompt, "prompt");
        if (max_tokens < 0) {
            fail(FFNSKIP_ERR_INVALID_ARGUMENT,
                 "max_tokens must be >= 0, got " + std::to_string(max_tokens));
        }
        c->begin_call();
        c->engine->reset_skip_stats();
        run(*c, *s, prompt, n_prompt, max_tokens, on_token, user_data, out);
    });
    if (n_generated != nullptr) *n_generated = out.n_generated;
    if (finish != nullptr && status == FFNSKIP_OK) *finish = out.finish;
    return status;
}

}  // extern "C"
