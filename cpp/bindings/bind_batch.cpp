// _core.BatchEngine: one model, a KV cache with n_slots sequences and the batched step that the
// serving scheduler drives (python/ffnskip_native/batch.py). Each slot remembers the tokens in
// its cache, so a new prompt that shares a prefix with them evaluates only the rest. The GIL is
// released while a step computes; one step runs at a time (the mutex).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "backend.h"
#include "bindings.h"
#include "cpu/threadpool.h"
#include "ffn_skip.h"
#include "model.h"

namespace py = pybind11;

namespace ffnskip::bindings {

namespace {

class BatchEngine {
  public:
    BatchEngine(const std::string& path, const std::string& backend, int n_ctx, int n_slots,
                int n_threads) {
        if (backend != "cpu" && backend != "cuda" && backend != "auto") {
            throw InvalidArgument("backend must be 'auto', 'cpu' or 'cuda', got '" + backend + "'");
        }
        if (n_slots < 1)
            throw InvalidArgument("n_slots must be >= 1, got " + std::to_string(n_slots));
        if (backend == "cuda") {
            // The CUDA backend has one KV sequence and no batched step yet.
            throw BackendUnavailable(
                "the cuda backend cannot serve several sequences yet; use "
                "backend='cpu'");
        }
        model_ = Model::load(path);
        backend_ = make_cpu_backend(model_, n_ctx,
                                    n_threads > 0 ? n_threads : cpu::physical_cores(), n_slots);
        cached_.resize(static_cast<size_t>(n_slots));
        set_skip(model_->skip_profile());
    }

    int n_slots() const { return backend_->n_slots(); }
    int n_ctx() const { return backend_->n_ctx(); }
    int n_vocab() const { return model_->hparams().n_vocab; }
    int max_step_tokens() const { return backend_->max_batch_rows(); }
    int64_t tokens_evaluated() const { return evaluated_; }

    const std::vector<int32_t>& cached(int slot) const {
        backend_->slot_past(slot);  // range check
        return cached_[static_cast<size_t>(slot)];
    }

    // Keeps the longest common prefix of the slot's cache and `prompt`, but at most
    // prompt.size() - 1 tokens (the last prompt token must be evaluated for its logits).
    int reuse_prefix(int slot, const std::vector<int32_t>& prompt) {
        std::vector<int32_t>& c = cached_[static_cast<size_t>(backend_->slot_past(slot), slot)];
        const size_t limit = prompt.empty() ? 0 : prompt.size() - 1;
        size_t k = 0;
        while (k < c.size() && k < limit && c[k] == prompt[k]) ++k;
        truncate(slot, static_cast<int>(k));
        return static_cast<int>(k);
    }

    void truncate(int slot, int n_keep) {
        backend_->slot_truncate(slot, n_keep);
        cached_[static_cast<size_t>(slot)].resize(static_cast<size_t>(n_keep));
    }

    void set_skip(const std::optional<SkipConfig>& cfg) {
        policy_.reset();
        if (cfg) {
            policy_ = std::make_unique<SkipPolicy>(*cfg, model_->hparams().n_layer,
                                                   model_->hparams().n_embd);
        }
        skip_cfg_ = cfg;
    }
    const std::optional<SkipConfig>& skip() const { return skip_cfg_; }

    // One step: per sequence (slot, tokens, gen_index, want_logits). Returns the wanted logits,
    // one row per sequence that asked, in order, and the FFN blocks skipped per sequence.
    std::vector<int64_t> step(const std::vector<BatchSeq>& seqs, float* logits) {
        std::lock_guard<std::mutex> lock(mu_);
        std::vector<BatchSeq> run = seqs;
        float* out = logits;
        for (BatchSeq& s : run) {
            if (s.logits) {
                s.logits = out;
                out += n_vocab();
            }
        }
        backend_->forward_batch(run.data(), static_cast<int>(run.size()), policy_.get(), &trace_);
        std::vector<int64_t> skipped(run.size(), 0);
        size_t row = 0;
        for (size_t i = 0; i < run.size(); ++i) {
            std::vector<int32_t>& c = cached_[static_cast<size_t>(run[i].slot)];
            c.insert(c.end(), run[i].tokens, run[i].tokens + run[i].n);
            evaluated_ += run[i].n;
            if (policy_) {
                const size_t L = static_cast<size_t>(model_->hparams().n_layer);
                for (size_t k = row * L; k < (row + static_cast<size_t>(run[i].n)) * L; ++k)
                    skipped[i] += trace_.skipped[k];
            }
            row += static_cast<size_t>(run[i].n);
        }
        return skipped;
    }

  private:
    std::shared_ptr<Model> model_;
    std::unique_ptr<Backend> backend_;
    std::vector<std::vector<int32_t>> cached_;  // per slot: the tokens its cache holds
    std::optional<SkipConfig> skip_cfg_;
    std::unique_ptr<SkipPolicy> policy_;
    SkipTrace trace_;
    int64_t evaluated_ = 0;
    std::mutex mu_;
};

std::vector<int32_t> ids_of(const std::vector<int64_t>& ids) {
    std::vector<int32_t> out(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] < INT32_MIN || ids[i] > INT32_MAX) {
            throw InvalidArgument("token id " + std::to_string(ids[i]) + " is out of range");
        }
        out[i] = static_cast<int32_t>(ids[i]);
    }
    return out;
}

}  // namespace

void bind_batch(py::module_& m) {
    using Seq = std::tuple<int, std::vector<int64_t>, int64_t, bool>;
    py::class_<BatchEngine>(m, "BatchEngine",
                            "Several sequences in one engine: KV slots and a batched, "
                            "batch-invariant step (see ffnskip_native.batch).")
        .def(py::init([](const std::string& path, const std::string& backend, int n_ctx,
                         int n_slots, int n_threads) {
                 py::gil_scoped_release nogil;
                 return std::make_unique<BatchEngine>(path, backend, n_ctx, n_slots, n_threads);
             }),
             py::arg("path"), py::arg("backend") = "cpu", py::arg("n_ctx") = 2048,
             py::arg("n_slots") = 4, py::arg("n_threads") = 0)
        .def_property_readonly("n_slots", &BatchEngine::n_slots)
        .def_property_readonly("n_ctx", &BatchEngine::n_ctx)
        .def_property_readonly("n_vocab", &BatchEngine::n_vocab)
        .def_property_readonly("max_step_tokens", &BatchEngine::max_step_tokens)
        .def_property_readonly("tokens_evaluated", &BatchEngine::tokens_evaluated)
        .def_property("skip", &BatchEngine::skip, &BatchEngine::set_skip)
        .def("cached", &BatchEngine::cached, py::arg("slot"))
        .def(
            "reuse_prefix",
            [](BatchEngine& self, int slot, const std::vector<int64_t>& prompt) {
                return self.reuse_prefix(slot, ids_of(prompt));
            },
            py::arg("slot"), py::arg("prompt"))
        .def("truncate", &BatchEngine::truncate, py::arg("slot"), py::arg("n_keep"))
        .def(
            "step",
            [](BatchEngine& self, const std::vector<Seq>& seqs) {
                std::vector<std::vector<int32_t>> toks;
                toks.reserve(seqs.size());
                std::vector<BatchSeq> run(seqs.size());
                py::ssize_t n_out = 0;
                for (size_t i = 0; i < seqs.size(); ++i) {
                    toks.push_back(ids_of(std::get<1>(seqs[i])));
                    run[i].slot = std::get<0>(seqs[i]);
                    run[i].tokens = toks.back().data();
                    run[i].n = static_cast<int>(toks.back().size());
                    run[i].gen_index = std::get<2>(seqs[i]);
                    // Non-null marks "wanted"; the step points it into the output array.
                    run[i].logits = std::get<3>(seqs[i]) ? reinterpret_cast<float*>(1) : nullptr;
                    n_out += std::get<3>(seqs[i]) ? 1 : 0;
                }
                py::array_t<float> out({n_out, static_cast<py::ssize_t>(self.n_vocab())});
                float* data = out.mutable_data();
                std::vector<int64_t> skipped;
                {
                    py::gil_scoped_release nogil;
                    skipped = self.step(run, data);
                }
                return py::make_tuple(out, skipped);
            },
            py::arg("seqs"),
            "seqs: [(slot, tokens, gen_index, want_logits)]; gen_index < 0 marks prompt "
            "tokens (dense). Returns (logits of the sequences that want them, in order, "
            "FFN blocks skipped per sequence).");
}

}  // namespace ffnskip::bindings
