// A fuzzed tiny-model GGUF that passes validation is run: two prompt tokens (all logits), then
// one generated token under a skip policy that fires on every hot layer (the file's own stored
// profile when it has a valid one). Catches validation gaps that only the forward pass reaches:
// a shape the loader accepted but a kernel indexes past, a scratch buffer sized from the wrong
// hparam. Seeds are tiny models of every weight type (fuzz/make_corpus.py).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "backend.h"
#include "ffn_skip.h"
#include "fuzz_common.h"

using namespace ffnskip;

namespace {

// Bounds the work per input: a file can claim up to 1024 layers of tiny matrices.
constexpr int64_t kMaxWeightBytes = 8 << 20;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::shared_ptr<Model> model;
    try {
        model = Model::from_file(gguf::File::parse(data, size, "<fuzz>"));
    } catch (const Error&) {
        return 0;
    }
    fuzz::check_model(*model);
    if (static_cast<int64_t>(model->bytes_per_token()) > kMaxWeightBytes) return 0;

    const Hparams& hp = model->hparams();
    std::unique_ptr<Backend> be = make_cpu_backend(model, 16, 1);
    const int32_t tokens[2] = {0, hp.n_vocab - 1};
    std::vector<float> logits(2 * static_cast<size_t>(hp.n_vocab));
    be->forward(tokens, 2, logits.data(), true, nullptr);
    FUZZ_CHECK(be->n_past() == 2);

    SkipConfig cfg;
    if (model->skip_profile()) {
        cfg = *model->skip_profile();
    } else {
        cfg.warmup = 0;
        cfg.cold_start = 0;
        cfg.cold_end = 0;
        cfg.threshold = {-1.0f};
        cfg.span = 1;
        // Exercise compensated skips and FFN recording too (a stored profile may carry its own).
        cfg.compensation.assign(static_cast<size_t>(hp.n_layer) * hp.n_embd, 0.25f);
        cfg.record_ffn = true;
    }
    SkipPolicy policy(cfg, hp.n_layer, hp.n_embd);
    SkipTrace trace;
    trace.resize(hp.n_layer);
    SkipRequest req;
    req.policy = &policy;
    req.gen_index = 100;
    req.trace = &trace;
    const int32_t next = hp.n_vocab / 2;
    be->forward(&next, 1, logits.data(), false, &req);
    be->kv_truncate(1);
    be->forward(&next, 1, logits.data(), false, nullptr);
    return 0;
}
