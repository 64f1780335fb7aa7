#include "engine.h"

#include <string>
#include <utility>

#include "cpu/threadpool.h"

namespace ffnskip {

namespace {

void check_engine_args(const std::string& backend, int n_ctx, int n_threads) {
    if (backend != "auto" && backend != "cpu" && backend != "cuda") {
        throw InvalidArgument("backend must be 'auto', 'cpu' or 'cuda', got '" + backend + "'");
    }
    if (n_ctx < 1) throw InvalidArgument("n_ctx must be >= 1, got " + std::to_string(n_ctx));
    if (n_threads > cpu::max_threads()) {
        throw InvalidArgument("n_threads = " + std::to_string(n_threads) + " is more than " +
                              std::to_string(cpu::kThreadsPerCpu) + " per logical CPU (at most " +
                              std::to_string(cpu::max_threads()) + " on this machine)");
    }
}

// What the CUDA backend's shape checks (cuda/backend_cuda.cu) do not look at yet: its attention
// has no sliding window (mistral's, phi3's; gemma3 it refuses itself) and ignores
// Hparams::attn_scale, where the rope magnitude of yarn and phi3's attn_factor is folded. Both
// would give wrong logits, so they are refused here (to move into check_shapes there).
void check_cuda_can_compute(const Model& model, int n_ctx) {
    const Hparams hp = model.hparams().for_context(n_ctx);
    auto refuse = [](const std::string& what) {
        throw BackendUnavailable("CUDA backend: unsupported model shape: " + what);
    };
    if (hp.slides_every_layer()) refuse("sliding-window attention on every layer");
    if (hp.rope_mscale != 1.0f) refuse("rope attn_factor (a magnitude on cos and sin)");
}

// The arguments are checked before the file is read, so a bad argument is reported as such
// rather than as whatever is wrong with the file.
std::shared_ptr<Model> load_checked(const std::string& path, const std::string& backend, int n_ctx,
                                    int n_threads) {
    check_engine_args(backend, n_ctx, n_threads);
    return Model::load(path);
}

}  // namespace

Engine::Engine(const std::string& path, const std::string& backend, int n_ctx, int n_threads)
    : Engine(load_checked(path, backend, n_ctx, n_threads), backend, n_ctx, n_threads) {}

Engine::Engine(std::shared_ptr<Model> model, const std::string& backend, int n_ctx, int n_threads) {
    check_engine_args(backend, n_ctx, n_threads);
    if (!model) throw InvalidArgument("no model");
    model_ = std::move(model);
    n_threads_ = n_threads > 0 ? n_threads : cpu::physical_cores();
    std::lock_guard<std::mutex> building(model_->build_mutex());
    std::string why;
    if (backend == "cuda" || (backend == "auto" && cuda_available(&why))) {
        check_cuda_can_compute(*model_, n_ctx);
        backend_ = make_cuda_backend(model_, n_ctx);
    } else {
        backend_ = make_cpu_backend(model_, n_ctx, n_threads_);
    }
    // From here on a file truncated under the process cannot crash it (Model::detach_weights).
    model_->detach_weights(backend_->unread_weights());
    backend_->set_cancel_flag(&cancel_);
    set_skip(model_->skip_profile());
}

void Engine::set_skip(const std::optional<SkipConfig>& cfg) {
    if (cfg) {
        policy_ =
            std::make_unique<SkipPolicy>(*cfg, model_->hparams().n_layer, model_->hparams().n_embd);
    } else {
        policy_.reset();
    }
    backend_->prepare_skip(policy_.get());
    skip_cfg_ = cfg;
    reset_skip_stats();
}

void Engine::reset_skip_stats() {
    stats_.ffn_bytes_dense.clear();
    for (const LayerWeights& L : model_->layers) {
        stats_.ffn_bytes_dense.push_back(static_cast<int64_t>(L.ffn_bytes()));
    }
    stats_.reset(model_->hparams().n_layer);
}

void Engine::eval(const int32_t* tokens, int n, bool all_logits, float* out) {
    backend_->forward(tokens, n, out, all_logits, nullptr);
}

void Engine::decode_one(int32_t token, int64_t gen_index, const SkipPolicy* policy, bool record,
                        float* out) {
    if (!policy) {
        backend_->forward(&token, 1, out, false, nullptr);
        return;
    }
    SkipRequest req;
    req.policy = policy;
    req.gen_index = gen_index;
    req.trace = &trace_;
    backend_->forward(&token, 1, out, false, &req);
    accumulate(stats_, trace_, record, policy->config().record_ffn);
}

void Engine::eval_generated(int32_t token, int64_t gen_index, float* out) {
    if (gen_index < 0) throw InvalidArgument("gen_index must be >= 0");
    decode_one(token, gen_index, policy_.get(), skip_cfg_ && skip_cfg_->record_gates, out);
}

void Engine::logits(const int32_t* tokens, int n, bool all_positions, const SkipConfig* skip,
                    int prompt_len, float* out) {
    if (n <= 0) throw InvalidArgument("logits: no tokens");
    if (prompt_len > n) {
        throw InvalidArgument("prompt_len " + std::to_string(prompt_len) + " > " +
                              std::to_string(n) + " tokens");
    }
    const int n_vocab = model_->hparams().n_vocab;
    std::unique_ptr<SkipPolicy> policy;
    if (skip) {
        policy = std::make_unique<SkipPolicy>(*skip, model_->hparams().n_layer,
                                              model_->hparams().n_embd);
    }
    if (skip && prompt_len < 0) prompt_len = n;  // no generated part: the whole input is prompt
    backend_->reset();
    reset_skip_stats();
    if (prompt_len < 0) {
        backend_->forward(tokens, n, out, all_positions, nullptr);
        return;
    }
    // With all_positions each row lands in place; otherwise only the last row is written.
    auto row = [&](int i) -> float* {
        if (all_positions) return out + static_cast<int64_t>(i) * n_vocab;
        return i == n - 1 ? out : nullptr;
    };
    std::vector<float> scratch;
    if (prompt_len > 0) {
        float* dst = all_positions ? out : nullptr;
        if (!all_positions) {
            scratch.resize(static_cast<size_t>(n_vocab));
            dst = prompt_len == n ? out : scratch.data();
        }
        backend_->forward(tokens, prompt_len, dst, all_positions, nullptr);
    }
    const int n_gen = n - prompt_len;
    if (n_gen == 0) return;
    if (backend_->batched_skip()) {
        // All generated tokens in one batch, each with its own skip state (see batched_skip()).
        float* dst = all_positions ? out + static_cast<int64_t>(prompt_len) * n_vocab : out;
        if (!policy) {
            backend_->forward(tokens + prompt_len, n_gen, dst, all_positions, nullptr);
            return;
        }
        SkipRequest req;
        req.policy = policy.get();
        req.gen_index = 0;
        req.trace = &trace_;
        backend_->forward(tokens + prompt_len, n_gen, dst, all_positions, &req);
        accumulate(stats_, trace_, skip->record_gates, skip->record_ffn);
        return;
    }
    if (scratch.empty()) scratch.resize(static_cast<size_t>(n_vocab));
    for (int i = prompt_len; i < n; ++i) {
        if (cancel_.load()) throw Cancelled("cancelled during teacher-forced evaluation");
        float* dst = row(i);
        decode_one(tokens[i], i - prompt_len, policy.get(), skip && skip->record_gates,
                   dst ? dst : scratch.data());
    }
}

#ifndef FFNSKIP_WITH_CUDA
std::unique_ptr<Backend> make_cuda_backend(std::shared_ptr<const Model>, int) {
    throw BackendUnavailable(
        "the CUDA backend is not available: this build of ffnskip-native was compiled without "
        "CUDA (nvcc was not found at build time; rebuild with FFNSKIP_CUDA=ON)");
}

bool cuda_available(std::string* why) {
    if (why) *why = "this build of ffnskip-native was compiled without CUDA";
    return false;
}
#endif

}  // namespace ffnskip
