// _core.Engine and _core.SkipConfig. Every call that computes releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cmath>
#include <memory>
#include <mutex>
#include <string>

#include "bindings.h"
#include "cpu/bandwidth.h"
#include "cpu/kernels.h"
#include "cpu/threadpool.h"
#include "engine.h"
#include "py_args.h"

namespace py = pybind11;

namespace ffnskip::bindings {

namespace {

// Owns the Engine. Calls that use its mutable state (KV cache, skip policy, statistics, cancel
// flag reset) run one at a time: a second one, from any thread, raises Busy at once instead of
// racing the first (issue 16: corrupted logits, crashes). close() instead cancels the running
// call and waits for it, then frees the engine. Everything else reads the immutable model.
//
// Lock order: a thread takes mutex_ only while holding the GIL and only with try_lock, then
// releases the GIL for the compute and takes it back before unlocking. So no thread ever blocks
// on mutex_ while holding the GIL, and close(), which blocks on mutex_ without the GIL, cannot
// deadlock with the call it waits for.
class PyEngine {
  public:
    PyEngine(const std::string& path, const std::string& backend, int n_ctx, int n_threads) {
        py::gil_scoped_release nogil;
        engine_ = std::make_unique<Engine>(path, backend, n_ctx, n_threads);
    }

    // Exclusive use of the engine for the lifetime of this object (one bound call).
    class Call {
      public:
        explicit Call(PyEngine& p) : lock_(p.mutex_, std::defer_lock) {
            if (p.closing_ || !p.engine_) throw Error("the engine is closed");
            if (!lock_.try_lock()) {
                throw Busy("the engine is busy: another thread is running a call on it");
            }
            engine_ = p.engine_.get();
        }
        Engine& engine() const { return *engine_; }

      private:
        std::unique_lock<std::mutex> lock_;
        Engine* engine_ = nullptr;
    };

    void close() {
        if (!engine_) return;
        closing_ = true;  // no new call starts
        engine_->cancel();
        std::unique_lock<std::mutex> lock(mutex_, std::defer_lock);
        {
            py::gil_scoped_release nogil;
            lock.lock();  // the running call, if any, stops at its next cancel check
        }
        // Detached with the GIL held: a reader holding the GIL sees the engine or nullptr.
        std::unique_ptr<Engine> doomed = std::move(engine_);
        py::gil_scoped_release nogil;
        doomed.reset();
    }
    // Lock-free, and a no-op once closed: cancel() must work from any thread at any time.
    void cancel() {
        if (engine_) engine_->cancel();
    }
    // For the immutable parts (model, tokenizer, sizes); the GIL must stay held while the
    // reference is used, since close() detaches the engine under the GIL.
    Engine& e() {
        if (!engine_) throw Error("the engine is closed");
        return *engine_;
    }

  private:
    std::unique_ptr<Engine> engine_;
    std::mutex mutex_;
    bool closing_ = false;  // guarded by the GIL
};

py::object metadata_value(const gguf::Value& v) {
    using T = gguf::ValueType;
    switch (v.type) {
        case T::STRING:
            return py::str(v.str);
        case T::BOOL:
            return py::bool_(v.u != 0);
        case T::FLOAT32:
        case T::FLOAT64:
            return py::float_(v.f);
        case T::UINT64:
            return py::int_(v.u);
        case T::ARRAY: {
            py::list out;
            if (v.array_type == T::STRING) {
                for (const auto& s : v.strings) out.append(py::str(s));
            } else if (v.array_type == T::FLOAT32 || v.array_type == T::FLOAT64) {
                for (double x : v.floats) out.append(x);
            } else {
                for (int64_t x : v.ints) out.append(x);
            }
            return std::move(out);
        }
        default:
            return py::int_(v.i);
    }
}

py::dict skip_stats_dict(const SkipStats& s) {
    py::dict d;
    d["tokens"] = s.tokens;
    d["n_layer"] = s.n_layer;
    d["evaluated"] = s.evaluated;
    d["skipped"] = s.skipped;
    d["skip_ratio"] = s.skip_ratio();
    if (!s.gates.empty()) {
        py::array_t<float> g(
            {static_cast<py::ssize_t>(s.tokens), static_cast<py::ssize_t>(s.n_layer)});
        std::copy(s.gates.begin(), s.gates.end(), g.mutable_data());
        d["gates"] = g;
    }
    d["ffn_bytes_read"] = s.ffn_bytes_read;
    d["ffn_bytes_dense"] = s.ffn_bytes_dense;
    d["ffn_bytes_saved"] = s.ffn_bytes_saved();
    d["channel_runs"] = s.channel_runs;
    d["dropped_in"] = s.dropped_in;
    d["dropped_gate"] = s.dropped_gate;
    d["dropped_mid"] = s.dropped_mid;
    const std::pair<const char*, const std::vector<int64_t>*> hists[] = {
        {"hist_h", &s.hist_h}, {"hist_g", &s.hist_g}, {"hist_m", &s.hist_m}};
    for (const auto& [key, h] : hists) {
        if (h->empty()) continue;
        py::array_t<int64_t> a(
            {static_cast<py::ssize_t>(s.n_layer), static_cast<py::ssize_t>(ChannelHist::kBins)});
        std::copy(h->begin(), h->end(), a.mutable_data());
        d[key] = a;
    }
    if (!s.drops.empty()) {
        py::array_t<int32_t> a({static_cast<py::ssize_t>(s.tokens),
                                static_cast<py::ssize_t>(s.n_layer), py::ssize_t{3}});
        std::copy(s.drops.begin(), s.drops.end(), a.mutable_data());
        d["drops"] = a;
    }
    if (!s.ffn_out.empty() && s.n_embd > 0) {
        py::array_t<float> f({static_cast<py::ssize_t>(s.tokens),
                              static_cast<py::ssize_t>(s.n_layer),
                              static_cast<py::ssize_t>(s.n_embd)});
        std::copy(s.ffn_out.begin(), s.ffn_out.end(), f.mutable_data());
        d["ffn_out"] = f;
    }
    return d;
}

}  // namespace

void bind_engine(py::module_& m) {
    m.def("cuda_available", [] { return cuda_available(nullptr); });
    m.def("cuda_unavailable_reason", [] {
        std::string why;
        return cuda_available(&why) ? std::string() : why;
    });
    m.def("simd_level", [] { return std::string(cpu::simd_level()); });
    m.def("sparse_lanes", &cpu::sparse_lanes,
          "The x86 channel-sparse product's lane width in bits (256 or 512; 0 elsewhere).");
    m.def("gemm_lanes", &cpu::gemm_lanes,
          "The x86 K-quant prompt matmul's lane width in bits (512: AVX-512 VNNI, 256: AVX2; 0 "
          "elsewhere).");
    m.def("gemm_amx", &cpu::gemm_amx,
          "Whether prompt matmuls of quantized weights run on AMX BF16 tiles.");
    m.def(
        "channel_hist_edges",
        [] {
            py::array_t<float> e(ChannelHist::kBins);
            for (int b = 0; b < ChannelHist::kBins; ++b)
                e.mutable_data()[b] = ChannelHist::lower_edge(b);
            return e;
        },
        "Lower edges of the bins of SkipStats' channel histograms (hist_h/hist_g/hist_m).");
    m.def("physical_cores", [] { return cpu::physical_cores(); });
    m.def(
        "measure_read_bandwidth",
        [](int n_threads, size_t bytes, int repeats) {
            py::gil_scoped_release nogil;
            return cpu::measure_read_bandwidth(n_threads, bytes, repeats);
        },
        py::arg("n_threads"), py::arg("bytes") = size_t(1) << 30, py::arg("repeats") = 5,
        "Memory read bandwidth in bytes/s (best of `repeats` passes over `bytes`).");

    py::class_<SkipConfig>(m, "SkipConfig")
        .def(py::init<>())
        .def_readwrite("enabled", &SkipConfig::enabled)
        .def_readwrite("warmup", &SkipConfig::warmup)
        .def_readwrite("cold_start", &SkipConfig::cold_start)
        .def_readwrite("cold_end", &SkipConfig::cold_end)
        .def_readwrite("threshold", &SkipConfig::threshold)
        .def_readwrite("span", &SkipConfig::span)
        .def_readwrite("t_in", &SkipConfig::t_in)
        .def_readwrite("t_gate", &SkipConfig::t_gate)
        .def_readwrite("t_mid", &SkipConfig::t_mid)
        .def_readwrite("record_gates", &SkipConfig::record_gates)
        .def_readwrite("record_ffn", &SkipConfig::record_ffn)
        .def_readwrite("record_channels", &SkipConfig::record_channels)
        .def_property(
            "compensation",
            [](const SkipConfig& c) {
                py::array_t<float> a(static_cast<py::ssize_t>(c.compensation.size()));
                std::copy(c.compensation.begin(), c.compensation.end(), a.mutable_data());
                return a;
            },
            [](SkipConfig& c,
               const py::array_t<float, py::array::c_style | py::array::forcecast>& a) {
                c.compensation.assign(a.data(), a.data() + a.size());
            },
            "Skip compensation, flat n_layer x n_embd float32 (empty: none).")
        .def("validate", &SkipConfig::validate, py::arg("n_layer"), py::arg("n_embd") = 0);

    py::class_<PyEngine>(m, "Engine")
        .def(py::init([](const py::object& path, const py::object& backend, const py::object& n_ctx,
                         const py::object& n_threads) {
                 return std::make_unique<PyEngine>(
                     path_arg(path, "path"), text_arg(backend, "backend"),
                     static_cast<int>(int_arg(n_ctx, "n_ctx", 1, INT32_MAX)),
                     static_cast<int>(int_arg(n_threads, "n_threads", 0, INT32_MAX)));
             }),
             py::arg("path"), py::arg("backend") = "auto", py::arg("n_ctx") = 4096,
             py::arg("n_threads") = 0)
        .def("close", &PyEngine::close)
        .def_property_readonly("backend", [](PyEngine& p) { return p.e().backend().name(); })
        .def_property_readonly("n_ctx", [](PyEngine& p) { return p.e().backend().n_ctx(); })
        .def_property_readonly(
            "n_past", [](PyEngine& p) { return PyEngine::Call(p).engine().backend().n_past(); })
        .def_property_readonly("n_vocab",
                               [](PyEngine& p) { return p.e().model().hparams().n_vocab; })
        .def_property_readonly("n_layer",
                               [](PyEngine& p) { return p.e().model().hparams().n_layer; })
        .def_property_readonly("n_threads", [](PyEngine& p) { return p.e().n_threads(); })
        .def_property_readonly("hparams",
                               [](PyEngine& p) {
                                   const Hparams& h = p.e().model().hparams();
                                   py::dict d;
                                   d["arch"] = h.arch_name;
                                   d["n_layer"] = h.n_layer;
                                   d["n_embd"] = h.n_embd;
                                   d["n_ff"] = h.n_ff;
                                   d["n_head"] = h.n_head;
                                   d["n_head_kv"] = h.n_head_kv;
                                   d["head_dim"] = h.head_dim;
                                   d["n_rot"] = h.n_rot;
                                   d["n_vocab"] = h.n_vocab;
                                   d["n_ctx_train"] = h.n_ctx_train;
                                   d["rope_base"] = h.rope_base;
                                   d["rms_eps"] = h.rms_eps;
                                   d["rope"] = h.rope == RopeStyle::Norm ? "norm" : "neox";
                                   d["ffn_act"] = h.ffn_act == FfnAct::Silu ? "silu" : "gelu_tanh";
                                   d["attn_scale"] = h.attn_scale;
                                   d["embd_scale"] = h.embd_scale;
                                   d["sliding_window"] = h.swa_window;  // 0: none
                                   d["swa_period"] = h.swa_period;
                                   d["rope_mscale"] = h.rope_mscale;
                                   d["tied_output"] = p.e().model().tied_output;
                                   return d;
                               })
        .def_property_readonly(
            "metadata",
            [](PyEngine& p) {
                // Large arrays (the vocabulary) are left out; gguf_read() has everything.
                py::dict d;
                for (const auto& [key, value] : p.e().model().file().kv()) {
                    if (value.type == gguf::ValueType::ARRAY && value.array_size() > 1024) continue;
                    d[py::str(key)] = metadata_value(value);
                }
                return d;
            })
        .def_property_readonly(
            "skip_profile",
            [](PyEngine& p) -> std::optional<SkipConfig> { return p.e().model().skip_profile(); })
        .def("bytes_per_token", [](PyEngine& p) { return p.e().model().bytes_per_token(); })
        .def("ffn_bytes", [](PyEngine& p) { return p.e().model().ffn_bytes(); })
        .def("layer_ffn_bytes",
             [](PyEngine& p) {
                 std::vector<size_t> out;
                 for (const LayerWeights& L : p.e().model().layers) out.push_back(L.ffn_bytes());
                 return out;
             })
        // Tokenizer of the loaded model.
        .def(
            "tokenize",
            [](PyEngine& p, const py::object& text, const py::object& add_special,
               const py::object& parse_special) {
                const std::string s = text_arg(text, "text");
                const bool add = flag_arg(add_special, "add_special");
                const bool parse = flag_arg(parse_special, "parse_special");
                // The tokenizer is immutable (const, per-call caches only): no engine lock, but
                // the model must outlive a close() from another thread while the GIL is off.
                const std::shared_ptr<const Model> m = p.e().shared_model();
                py::gil_scoped_release nogil;
                return m->tokenizer().encode(s, add, parse);
            },
            py::arg("text"), py::arg("add_special") = true, py::arg("parse_special") = false)
        .def(
            "detokenize",
            [](PyEngine& p, const py::object& ids, const py::object& special) {
                const std::vector<int32_t> v = token_ids_arg(ids);
                const bool sp = flag_arg(special, "special");
                const std::shared_ptr<const Model> m = p.e().shared_model();
                std::string s;
                {
                    py::gil_scoped_release nogil;
                    s = m->tokenizer().decode(v, sp);
                }
                return py::str(s);
            },
            py::arg("ids"), py::arg("special") = false)
        .def("token_to_bytes",
             [](PyEngine& p, const py::object& id) {
                 return py::bytes(p.e().model().tokenizer().token_to_bytes(token_id_arg(id)));
             })
        .def_property_readonly("eog_ids",
                               [](PyEngine& p) { return p.e().model().tokenizer().eog_ids(); })
        .def_property_readonly("bos_id",
                               [](PyEngine& p) { return p.e().model().tokenizer().bos_id(); })
        .def_property_readonly("eos_id",
                               [](PyEngine& p) { return p.e().model().tokenizer().eos_id(); })
        .def_property_readonly("add_bos",
                               [](PyEngine& p) { return p.e().model().tokenizer().add_bos(); })
        .def("token_text",
             [](PyEngine& p, const py::object& id) {
                 return py::bytes(p.e().model().tokenizer().token_text(token_id_arg(id)));
             })
        .def("is_eog",
             [](PyEngine& p, const py::object& id) {
                 return p.e().model().tokenizer().is_eog(token_id_arg(id));
             })
        .def_property_readonly("tokenizer_warnings",
                               [](PyEngine& p) { return p.e().model().tokenizer().warnings(); })
        // Compute.
        .def(
            "eval",
            [](PyEngine& p, const py::object& tokens, const py::object& all_logits_obj) {
                const PyEngine::Call call(p);
                Engine& e = call.engine();
                const std::vector<int32_t> ids = token_ids_arg(tokens);
                const bool all_logits = flag_arg(all_logits_obj, "all_logits");
                if (ids.empty()) throw InvalidArgument("eval: no tokens");
                const int nv = e.model().hparams().n_vocab;
                py::array_t<float> out =
                    all_logits ? py::array_t<float>({static_cast<py::ssize_t>(ids.size()),
                                                     static_cast<py::ssize_t>(nv)})
                               : py::array_t<float>(nv);
                float* dst = out.mutable_data();
                {
                    py::gil_scoped_release nogil;
                    e.eval(ids.data(), static_cast<int>(ids.size()), all_logits, dst);
                }
                return out;
            },
            py::arg("tokens"), py::arg("all_logits") = false)
        .def(
            "eval_generated",
            [](PyEngine& p, const py::object& token, int64_t gen_index) {
                const PyEngine::Call call(p);
                Engine& e = call.engine();
                const int32_t id = token_id_arg(token);
                py::array_t<float> out(e.model().hparams().n_vocab);
                float* dst = out.mutable_data();
                {
                    py::gil_scoped_release nogil;
                    e.eval_generated(id, gen_index, dst);
                }
                return out;
            },
            py::arg("token"), py::arg("gen_index"))
        .def("kv_truncate", [](PyEngine& p, int n) { PyEngine::Call(p).engine().kv_truncate(n); })
        .def("reset", [](PyEngine& p) { PyEngine::Call(p).engine().kv_truncate(0); })
        .def(
            "logits",
            [](PyEngine& p, const py::object& tokens, const py::object& all_positions_obj,
               std::optional<SkipConfig> skip, const py::object& prompt_len_obj) {
                const PyEngine::Call call(p);
                Engine& e = call.engine();
                const std::vector<int32_t> ids = token_ids_arg(tokens);
                const bool all_positions = flag_arg(all_positions_obj, "all_positions");
                if (ids.empty()) throw InvalidArgument("logits: no tokens");
                std::optional<int> prompt_len;
                if (!prompt_len_obj.is_none()) {
                    prompt_len =
                        static_cast<int>(int_arg(prompt_len_obj, "prompt_len", 0, INT32_MAX));
                }
                const int nv = e.model().hparams().n_vocab;
                py::array_t<float> out =
                    all_positions ? py::array_t<float>({static_cast<py::ssize_t>(ids.size()),
                                                        static_cast<py::ssize_t>(nv)})
                                  : py::array_t<float>(nv);
                float* dst = out.mutable_data();
                {
                    py::gil_scoped_release nogil;
                    e.logits(ids.data(), static_cast<int>(ids.size()), all_positions,
                             skip ? &*skip : nullptr, prompt_len ? *prompt_len : -1, dst);
                }
                return out;
            },
            py::arg("tokens"), py::arg("all_positions") = false, py::arg("skip") = py::none(),
            py::arg("prompt_len") = py::none())
        .def("set_skip",
             [](PyEngine& p, std::optional<SkipConfig> cfg) {
                 PyEngine::Call(p).engine().set_skip(cfg);
             })
        .def("skip_stats",
             [](PyEngine& p) {
                 const PyEngine::Call call(p);
                 return skip_stats_dict(call.engine().skip_stats());
             })
        .def("reset_skip_stats", [](PyEngine& p) { PyEngine::Call(p).engine().reset_skip_stats(); })
        .def("cancel", &PyEngine::cancel)
        .def("clear_cancel", [](PyEngine& p) { PyEngine::Call(p).engine().clear_cancel(); });
}

}  // namespace ffnskip::bindings
