// Skip configuration handles (keyed setters, so a new conditional-FFN kind adds keys rather than
// changing a struct) and the context's skip policy and statistics.
#include <cmath>
#include <cstddef>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "boundary.h"
#include "handles.h"

using namespace ffnskip;
using namespace ffnskip::capi;

namespace {

constexpr size_t kSkipStatsV1 = offsetof(ffnskip_skip_stats, skip_ratio) + sizeof(double);

// The config's array for `key` (const or not, following cfg).
template <class Cfg>
auto& array_of(Cfg& cfg, ffnskip_skip_array key) {
    switch (key) {
        case FFNSKIP_SKIP_THRESHOLD:
            return cfg.threshold;
        case FFNSKIP_SKIP_COMPENSATION:
            return cfg.compensation;
        case FFNSKIP_SKIP_CHANNEL_IN:
            return cfg.t_in;
        case FFNSKIP_SKIP_CHANNEL_GATE:
            return cfg.t_gate;
        case FFNSKIP_SKIP_CHANNEL_MID:
            return cfg.t_mid;
    }
    fail(FFNSKIP_ERR_INVALID_ARGUMENT,
         "unknown ffnskip_skip_array " + std::to_string(static_cast<int>(key)));
}

// The config's count for `key`; FFNSKIP_SKIP_ENABLED (a flag) is handled by the callers.
template <class Cfg>
auto& count_of(Cfg& cfg, ffnskip_skip_int key) {
    switch (key) {
        case FFNSKIP_SKIP_WARMUP:
            return cfg.warmup;
        case FFNSKIP_SKIP_COLD_START:
            return cfg.cold_start;
        case FFNSKIP_SKIP_COLD_END:
            return cfg.cold_end;
        case FFNSKIP_SKIP_SPAN:
            return cfg.span;
        case FFNSKIP_SKIP_ENABLED:
            break;
    }
    fail(FFNSKIP_ERR_INVALID_ARGUMENT,
         "unknown ffnskip_skip_int " + std::to_string(static_cast<int>(key)));
}

ffnskip_skip_config* new_config(const SkipConfig& cfg) {
    auto handle = std::make_unique<ffnskip_skip_config>();
    handle->cfg = cfg;
    return Registry::instance().adopt(std::move(handle));
}

}  // namespace

extern "C" {

FFNSKIP_API ffnskip_status ffnskip_skip_config_create(ffnskip_skip_config** config) {
    return guarded(__func__, [&] {
        need(config, "config");
        *config = new_config(SkipConfig{});
    });
}

FFNSKIP_API ffnskip_status ffnskip_skip_config_from_model(const ffnskip_model* model,
                                                          ffnskip_skip_config** config) {
    return guarded(__func__, [&] {
        Lease<const ffnskip_model> m(model, "model", Access::Shared);
        need(config, "config");
        const std::optional<SkipConfig>& profile = m->model->skip_profile();
        *config = profile ? new_config(*profile) : nullptr;
    });
}

FFNSKIP_API ffnskip_status ffnskip_skip_config_free(ffnskip_skip_config* config) {
    return guarded(__func__, [&] { free_handle(config, "config"); });
}

FFNSKIP_API ffnskip_status ffnskip_skip_config_set_int(ffnskip_skip_config* config,
                                                       ffnskip_skip_int key, int32_t value) {
    return guarded(__func__, [&] {
        Lease<ffnskip_skip_config> c(config, "config", Access::Exclusive);
        SkipConfig& cfg = c->cfg;
        if (key == FFNSKIP_SKIP_ENABLED) {
            if (value != 0 && value != 1) {
                fail(FFNSKIP_ERR_INVALID_ARGUMENT,
                     "FFNSKIP_SKIP_ENABLED must be 0 or 1, got " + std::to_string(value));
            }
            cfg.enabled = value == 1;
            return;
        }
        int& count = count_of(cfg, key);
        if (value < 0) {
            fail(FFNSKIP_ERR_INVALID_ARGUMENT, "ffnskip_skip_int " +
                                                   std::to_string(static_cast<int>(key)) +
                                                   " must be >= 0, got " + std::to_string(value));
        }
        count = value;
    });
}

FFNSKIP_API ffnskip_status ffnskip_skip_config_get_int(const ffnskip_skip_config* config,
                                                       ffnskip_skip_int key, int32_t* value) {
    return guarded(__func__, [&] {
        Lease<const ffnskip_skip_config> c(config, "config", Access::Shared);
        need(value, "value");
        if (key == FFNSKIP_SKIP_ENABLED) {
            *value = c->cfg.enabled ? 1 : 0;
        } else {
            *value = count_of(c->cfg, key);
        }
    });
}

FFNSKIP_API ffnskip_status ffnskip_skip_config_set_array(ffnskip_skip_config* config,
                                                         ffnskip_skip_array key,
                                                         const float* values, int32_t n) {
    return guarded(__func__, [&] {
        Lease<ffnskip_skip_config> c(config, "config", Access::Exclusive);
        std::vector<float>& dst = array_of(c->cfg, key);
        if (n < 0) fail(FFNSKIP_ERR_INVALID_ARGUMENT, "n must be >= 0, got " + std::to_string(n));
        if (n > 0) need(values, "values");
        if (key == FFNSKIP_SKIP_THRESHOLD) {
            if (n == 0) fail(FFNSKIP_ERR_INVALID_ARGUMENT, "the thresholds need at least 1 value");
            for (int32_t i = 0; i < n; ++i) {
                if (!std::isnan(values[i]) && !(values[i] >= -1.0f && values[i] <= 1.0f)) {
                    fail(FFNSKIP_ERR_INVALID_ARGUMENT,
                         "threshold[" + std::to_string(i) + "] = " + std::to_string(values[i]) +
                             " is outside [-1, 1] (NaN turns a layer's gate off)");
                }
            }
        }
        dst.assign(values, values + n);
    });
}

FFNSKIP_API ffnskip_status ffnskip_skip_config_get_array(const ffnskip_skip_config* config,
                                                         ffnskip_skip_array key, float* values,
                                                         int32_t capacity, int32_t* n) {
    return guarded(__func__, [&] {
        Lease<const ffnskip_skip_config> c(config, "config", Access::Shared);
        need(n, "n");
        const std::vector<float>& src = array_of(c->cfg, key);
        if (capacity < 0) {
            fail(FFNSKIP_ERR_INVALID_ARGUMENT,
                 "capacity must be >= 0, got " + std::to_string(capacity));
        }
        copy_out(src.data(), src.size(), values, static_cast<size_t>(capacity), n, "values");
    });
}

FFNSKIP_API ffnskip_status ffnskip_context_set_skip(ffnskip_context* ctx,
                                                    const ffnskip_skip_config* config) {
    return guarded(__func__, [&] {
        Lease<ffnskip_context> c(ctx, "ctx", Access::Exclusive);
        if (config == nullptr) {
            c->engine->set_skip(std::nullopt);
            return;
        }
        Lease<const ffnskip_skip_config> cfg(config, "config", Access::Shared);
        c->engine->set_skip(cfg->cfg);
    });
}

FFNSKIP_API ffnskip_status ffnskip_context_get_skip(ffnskip_context* ctx,
                                                    ffnskip_skip_config** config) {
    return guarded(__func__, [&] {
        Lease<ffnskip_context> c(ctx, "ctx", Access::Exclusive);
        need(config, "config");
        const std::optional<SkipConfig>& active = c->engine->skip_config();
        *config = active ? new_config(*active) : nullptr;
    });
}

FFNSKIP_API ffnskip_status ffnskip_context_skip_stats(ffnskip_context* ctx,
                                                      ffnskip_skip_stats* stats) {
    return guarded(__func__, [&] {
        Lease<ffnskip_context> c(ctx, "ctx", Access::Exclusive);
        const SkipStats& s = c->engine->skip_stats();
        ffnskip_skip_stats out{};
        out.tokens = s.tokens;
        out.ffn_evaluated = std::accumulate(s.evaluated.begin(), s.evaluated.end(), int64_t{0});
        out.ffn_skipped = s.total_skipped();
        out.skip_ratio = s.skip_ratio();
        out.ffn_bytes_read =
            std::accumulate(s.ffn_bytes_read.begin(), s.ffn_bytes_read.end(), int64_t{0});
        const int64_t dense_per_token =
            std::accumulate(s.ffn_bytes_dense.begin(), s.ffn_bytes_dense.end(), int64_t{0});
        out.ffn_bytes_dense = dense_per_token * s.tokens;
        out.ffn_bytes_saved = s.ffn_bytes_saved();
        write_struct(stats, out, kSkipStatsV1, "stats");
    });
}

FFNSKIP_API ffnskip_status ffnskip_context_skip_stats_layers(ffnskip_context* ctx,
                                                             int64_t* evaluated, int64_t* skipped,
                                                             int32_t n_layer) {
    return guarded(__func__, [&] {
        Lease<ffnskip_context> c(ctx, "ctx", Access::Exclusive);
        const SkipStats& s = c->engine->skip_stats();
        const int32_t expected = c->engine->model().hparams().n_layer;
        if (n_layer != expected) {
            fail(FFNSKIP_ERR_INVALID_ARGUMENT, "n_layer is " + std::to_string(n_layer) +
                                                   ", the model has " + std::to_string(expected));
        }
        // The statistics may be sized for the layers only once a policy has run.
        for (int32_t l = 0; l < n_layer; ++l) {
            const auto i = static_cast<size_t>(l);
            if (evaluated != nullptr) evaluated[l] = i < s.evaluated.size() ? s.evaluated[i] : 0;
            if (skipped != nullptr) skipped[l] = i < s.skipped.size() ? s.skipped[i] : 0;
        }
    });
}

FFNSKIP_API ffnskip_status ffnskip_context_reset_skip_stats(ffnskip_context* ctx) {
    return guarded(__func__, [&] {
        Lease<ffnskip_context> c(ctx, "ctx", Access::Exclusive);
        c->engine->reset_skip_stats();
    });
}

}  // extern "C"
