// ffnskip_sampler_*: the engine's Sampler behind a handle, with its parameters fixed at creation.
#include <cstddef>
#include <string>

#include "boundary.h"
#include "handles.h"

using namespace ffnskip;
using namespace ffnskip::capi;

namespace {

constexpr size_t kSamplerParamsV1 = offsetof(ffnskip_sampler_params, seed) + sizeof(uint64_t);

ffnskip_sampler_params default_sampler_params() {
    const SamplingParams d;
    ffnskip_sampler_params p{};
    p.struct_size = sizeof p;
    p.temperature = d.temperature;
    p.top_k = d.top_k;
    p.top_p = d.top_p;
    p.min_p = d.min_p;
    p.repetition_penalty = d.repetition_penalty;
    p.repeat_last_n = 64;
    p.seed = 0;
    return p;
}

}  // namespace

extern "C" {

FFNSKIP_API ffnskip_status ffnskip_sampler_params_init(ffnskip_sampler_params* params,
                                                       size_t struct_size) {
    return guarded(__func__, [&] {
        init_params(params, struct_size, default_sampler_params(), kSamplerParamsV1, "params");
    });
}

FFNSKIP_API ffnskip_status ffnskip_sampler_create(const ffnskip_sampler_params* params,
                                                  ffnskip_sampler** sampler) {
    return guarded(__func__, [&] {
        need(sampler, "sampler");
        const ffnskip_sampler_params p =
            read_params(params, default_sampler_params(), kSamplerParamsV1, "params");
        auto handle = std::make_unique<ffnskip_sampler>();
        handle->params.temperature = p.temperature;
        handle->params.top_k = p.top_k;
        handle->params.top_p = p.top_p;
        handle->params.min_p = p.min_p;
        handle->params.repetition_penalty = p.repetition_penalty;
        handle->params.validate();
        if (p.repeat_last_n < 0) {
            fail(FFNSKIP_ERR_INVALID_ARGUMENT,
                 "repeat_last_n must be >= 0, got " + std::to_string(p.repeat_last_n));
        }
        handle->repeat_last_n = p.repeat_last_n;
        handle->sampler.reseed(p.seed);
        *sampler = Registry::instance().adopt(std::move(handle));
    });
}

FFNSKIP_API ffnskip_status ffnskip_sampler_free(ffnskip_sampler* sampler) {
    return guarded(__func__, [&] { free_handle(sampler, "sampler"); });
}

FFNSKIP_API ffnskip_status ffnskip_sampler_reseed(ffnskip_sampler* sampler, uint64_t seed) {
    return guarded(__func__, [&] {
        Lease<ffnskip_sampler> s(sampler, "sampler", Access::Exclusive);
        s->sampler.reseed(seed);
    });
}

FFNSKIP_API ffnskip_status ffnskip_sampler_sample(ffnskip_sampler* sampler, const float* logits,
                                                  int32_t n_vocab, const int32_t* recent,
                                                  int32_t n_recent, int32_t* token) {
    return guarded(__func__, [&] {
        Lease<ffnskip_sampler> s(sampler, "sampler", Access::Exclusive);
        need(logits, "logits");
        need(token, "token");
        if (n_vocab < 1) {
            fail(FFNSKIP_ERR_INVALID_ARGUMENT,
                 "n_vocab must be >= 1, got " + std::to_string(n_vocab));
        }
        if (n_recent < 0) {
            fail(FFNSKIP_ERR_INVALID_ARGUMENT,
                 "n_recent must be >= 0, got " + std::to_string(n_recent));
        }
        if (n_recent > 0) need(recent, "recent");
        *token = s->sampler.sample(logits, static_cast<size_t>(n_vocab), s->params, recent,
                                   static_cast<size_t>(n_recent));
    });
}

}  // extern "C"
