// ffnskip_model_*: loading with progress and cancel, release, and model properties.
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <string>

#include "boundary.h"
#include "handles.h"

using namespace ffnskip;
using namespace ffnskip::capi;

namespace {

constexpr size_t kLoadParamsV1 = offsetof(ffnskip_load_params, progress_user_data) + sizeof(void*);

ffnskip_load_params default_load_params() {
    ffnskip_load_params p{};
    p.struct_size = sizeof p;
    return p;
}

void report(const ffnskip_load_params& p, float progress) {
    if (p.progress != nullptr && !p.progress(progress, p.progress_user_data)) {
        throw Cancelled("the load was cancelled by the progress callback");
    }
}

// Reads one byte of every page of the mapped file, in chunks with a progress report after each.
// The mapping is lazy: without this the first evaluation would wait for the disk instead, with
// no progress to show (and no way to cancel).
void read_pages(const gguf::File& file, const ffnskip_load_params& p) {
    constexpr size_t kChunk = size_t(16) << 20;
    const long page_size = ::sysconf(_SC_PAGESIZE);
    const size_t page = page_size > 0 ? static_cast<size_t>(page_size) : 4096;
    const auto* bytes = static_cast<const volatile uint8_t*>(file.bytes());
    const size_t size = file.size();
    for (size_t start = 0; start < size; start += kChunk) {
        const size_t end = std::min(size, start + kChunk);
        // Volatile reads: the compiler must perform them although the values are unused.
        for (size_t off = start; off < end; off += page) (void)bytes[off];
        report(p, static_cast<float>(static_cast<double>(end) / static_cast<double>(size)));
    }
}

}  // namespace

extern "C" {

FFNSKIP_API ffnskip_status ffnskip_load_params_init(ffnskip_load_params* params,
                                                    size_t struct_size) {
    return guarded(__func__, [&] {
        init_params(params, struct_size, default_load_params(), kLoadParamsV1, "params");
    });
}

FFNSKIP_API ffnskip_status ffnskip_model_load(const char* path, const ffnskip_load_params* params,
                                              ffnskip_model** model) {
    return guarded(__func__, [&] {
        need(path, "path");
        need(model, "model");
        const ffnskip_load_params p =
            read_params(params, default_load_params(), kLoadParamsV1, "params");
        report(p, 0.0f);
        auto handle = std::make_unique<ffnskip_model>();
        handle->model = Model::load(path);
        read_pages(handle->model->file(), p);
        *model = Registry::instance().adopt(std::move(handle));
    });
}

FFNSKIP_API ffnskip_status ffnskip_model_free(ffnskip_model* model) {
    return guarded(__func__, [&] { free_handle(model, "model"); });
}

FFNSKIP_API ffnskip_status ffnskip_model_info(const ffnskip_model* model, ffnskip_model_prop prop,
                                              int64_t* value) {
    return guarded(__func__, [&] {
        Lease<const ffnskip_model> m(model, "model", Access::Shared);
        need(value, "value");
        const Model& mdl = *m->model;
        const Hparams& hp = mdl.hparams();
        switch (prop) {
            case FFNSKIP_MODEL_N_VOCAB:
                *value = hp.n_vocab;
                return;
            case FFNSKIP_MODEL_N_LAYER:
                *value = hp.n_layer;
                return;
            case FFNSKIP_MODEL_N_EMBD:
                *value = hp.n_embd;
                return;
            case FFNSKIP_MODEL_N_CTX_TRAIN:
                *value = hp.n_ctx_train;
                return;
            case FFNSKIP_MODEL_BOS:
                *value = mdl.tokenizer().bos_id();
                return;
            case FFNSKIP_MODEL_EOS:
                *value = mdl.tokenizer().eos_id();
                return;
            case FFNSKIP_MODEL_HAS_SKIP_PROFILE:
                *value = mdl.skip_profile().has_value() ? 1 : 0;
                return;
        }
        fail(FFNSKIP_ERR_INVALID_ARGUMENT,
             "unknown ffnskip_model_prop " + std::to_string(static_cast<int>(prop)));
    });
}

FFNSKIP_API ffnskip_status ffnskip_model_is_eog(const ffnskip_model* model, int32_t token,
                                                bool* is_eog) {
    return guarded(__func__, [&] {
        Lease<const ffnskip_model> m(model, "model", Access::Shared);
        need(is_eog, "is_eog");
        const int32_t n_vocab = m->model->hparams().n_vocab;
        if (token < 0 || token >= n_vocab) {
            fail(FFNSKIP_ERR_INVALID_ARGUMENT, "token id " + std::to_string(token) +
                                                   " is outside [0, " + std::to_string(n_vocab) +
                                                   ")");
        }
        *is_eog = m->model->tokenizer().is_eog(token);
    });
}

}  // extern "C"
