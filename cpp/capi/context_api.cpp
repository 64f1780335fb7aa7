// ffnskip_context_*: a KV cache on a backend, evaluation, logits and cancellation.
#include <algorithm>
#include <cstddef>
#include <string>

#include "boundary.h"
#include "handles.h"

using namespace ffnskip;
using namespace ffnskip::capi;

namespace {

constexpr size_t kContextParamsV1 =
    offsetof(ffnskip_context_params, backend) + sizeof(ffnskip_backend);

ffnskip_context_params default_context_params() {
    ffnskip_context_params p{};
    p.struct_size = sizeof p;
    p.n_ctx = 4096;
    p.n_threads = 0;
    p.backend = FFNSKIP_BACKEND_AUTO;
    return p;
}

std::string backend_name(ffnskip_backend b) {
    switch (b) {
        case FFNSKIP_BACKEND_AUTO:
            return "auto";
        case FFNSKIP_BACKEND_CPU:
            return "cpu";
        case FFNSKIP_BACKEND_CUDA:
            return "cuda";
    }
    fail(FFNSKIP_ERR_INVALID_ARGUMENT,
         "unknown ffnskip_backend " + std::to_string(static_cast<int>(b)));
}

}  // namespace

extern "C" {

FFNSKIP_API ffnskip_status ffnskip_context_params_init(ffnskip_context_params* params,
                                                       size_t struct_size) {
    return guarded(__func__, [&] {
        init_params(params, struct_size, default_context_params(), kContextParamsV1, "params");
    });
}

FFNSKIP_API ffnskip_status ffnskip_context_create(const ffnskip_model* model,
                                                  const ffnskip_context_params* params,
                                                  ffnskip_context** ctx) {
    return guarded(__func__, [&] {
        Lease<const ffnskip_model> m(model, "model", Access::Shared);
        need(ctx, "ctx");
        const ffnskip_context_params p =
            read_params(params, default_context_params(), kContextParamsV1, "params");
        if (p.n_threads < 0) {
            fail(FFNSKIP_ERR_INVALID_ARGUMENT,
                 "params->n_threads must be >= 0, got " + std::to_string(p.n_threads));
        }
        auto handle = std::make_unique<ffnskip_context>();
        handle->engine =
            std::make_unique<Engine>(m->model, backend_name(p.backend), p.n_ctx, p.n_threads);
        handle->logits.resize(static_cast<size_t>(m->model->hparams().n_vocab));
        *ctx = Registry::instance().adopt(std::move(handle));
    });
}

FFNSKIP_API ffnskip_status ffnskip_context_free(ffnskip_context* ctx) {
    return guarded(__func__, [&] { free_handle(ctx, "ctx"); });
}

FFNSKIP_API ffnskip_status ffnskip_context_info(ffnskip_context* ctx, ffnskip_context_prop prop,
                                                int64_t* value) {
    return guarded(__func__, [&] {
        Lease<ffnskip_context> c(ctx, "ctx", Access::Exclusive);
        need(value, "value");
        const Engine& e = *c->engine;
        switch (prop) {
            case FFNSKIP_CONTEXT_N_CTX:
                *value = e.backend().n_ctx();
                return;
            case FFNSKIP_CONTEXT_N_PAST:
                *value = e.backend().n_past();
                return;
            case FFNSKIP_CONTEXT_N_THREADS:
                *value = e.n_threads();
                return;
            case FFNSKIP_CONTEXT_BACKEND:
                *value = std::string(e.backend().name()) == "cuda" ? FFNSKIP_BACKEND_CUDA
                                                                   : FFNSKIP_BACKEND_CPU;
                return;
            case FFNSKIP_CONTEXT_N_VOCAB:
                *value = e.model().hparams().n_vocab;
                return;
        }
        fail(FFNSKIP_ERR_INVALID_ARGUMENT,
             "unknown ffnskip_context_prop " + std::to_string(static_cast<int>(prop)));
    });
}

FFNSKIP_API ffnskip_status ffnskip_context_kv_truncate(ffnskip_context* ctx, int32_t n_keep) {
    return guarded(__func__, [&] {
        Lease<ffnskip_context> c(ctx, "ctx", Access::Exclusive);
        c->engine->kv_truncate(n_keep);
        c->has_logits = false;
    });
}

FFNSKIP_API ffnskip_status ffnskip_context_cancel(ffnskip_context* ctx) {
    return guarded(__func__, [&] {
        // Not a lease: cancelling is exactly what a second thread does while a call runs.
        Registry::instance().with_live(ctx, "ctx", [](ffnskip_context& c) {
            c.cancel.store(true);
            c.engine->cancel();
        });
    });
}

FFNSKIP_API ffnskip_status ffnskip_eval(ffnskip_context* ctx, const int32_t* tokens,
                                        int32_t n_tokens) {
    return guarded(__func__, [&] {
        Lease<ffnskip_context> c(ctx, "ctx", Access::Exclusive);
        if (n_tokens < 1) {
            fail(FFNSKIP_ERR_INVALID_ARGUMENT,
                 "n_tokens must be >= 1, got " + std::to_string(n_tokens));
        }
        need(tokens, "tokens");
        c->begin_call();
        c->has_logits = false;
        c->engine->eval(tokens, n_tokens, false, c->logits.data());
        c->has_logits = true;
    });
}

FFNSKIP_API ffnskip_status ffnskip_eval_generated(ffnskip_context* ctx, int32_t token,
                                                  int64_t gen_index) {
    return guarded(__func__, [&] {
        Lease<ffnskip_context> c(ctx, "ctx", Access::Exclusive);
        c->begin_call();
        c->has_logits = false;
        c->engine->eval_generated(token, gen_index, c->logits.data());
        c->has_logits = true;
    });
}

FFNSKIP_API ffnskip_status ffnskip_get_logits(ffnskip_context* ctx, float* logits,
                                              int32_t capacity) {
    return guarded(__func__, [&] {
        Lease<ffnskip_context> c(ctx, "ctx", Access::Exclusive);
        need(logits, "logits");
        if (!c->has_logits) {
            fail(FFNSKIP_ERR_INVALID_STATE,
                 "no logits: nothing was evaluated since the context was created, its cache "
                 "truncated, or the last evaluation failed");
        }
        const size_t n = c->logits.size();
        if (capacity < 0 || static_cast<size_t>(capacity) < n) {
            fail(FFNSKIP_ERR_BUFFER_TOO_SMALL, "logits has room for " + std::to_string(capacity) +
                                                   " floats, n_vocab = " + std::to_string(n));
        }
        std::copy(c->logits.begin(), c->logits.end(), logits);
    });
}

}  // extern "C"
