// _core.Sampler: numpy logits in, token id out; the draw runs without the GIL.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <memory>
#include <mutex>
#include <vector>

#include "bindings.h"
#include "ffnskip/ffnskip.h"
#include "sampler.h"

namespace py = pybind11;

namespace ffnskip::bindings {

namespace {

// The GIL is released while sampling, so two Python threads could otherwise enter the same
// Sampler (RNG state and scratch buffers) at once.
struct PySampler {
    Sampler sampler;
    std::mutex mu;
};

// Any Python int is a valid seed: it is reduced modulo 2**64 (negative values included).
uint64_t seed_from(const py::int_& seed) {
    const unsigned long long v = PyLong_AsUnsignedLongLongMask(seed.ptr());
    if (PyErr_Occurred()) throw py::error_already_set();
    return static_cast<uint64_t>(v);
}

}  // namespace

void bind_sampler(py::module_& m) {
    py::class_<PySampler>(m, "Sampler",
                          "Temperature / top-k / top-p / min-p / repetition-penalty sampling "
                          "with its own seeded RNG (see cpp/src/sampler.h for the filter order).")
        .def(py::init([](const py::int_& seed) {
                 auto s = std::make_unique<PySampler>();
                 s->sampler.reseed(seed_from(seed));
                 return s;
             }),
             py::arg("seed") = 0)
        .def(
            "reseed",
            [](PySampler& self, const py::int_& seed) {
                std::lock_guard<std::mutex> lock(self.mu);
                self.sampler.reseed(seed_from(seed));
            },
            py::arg("seed"))
        .def(
            "sample",
            [](PySampler& self,
               py::array_t<float, py::array::c_style | py::array::forcecast> logits,
               float temperature, int top_k, float top_p, float min_p, float repetition_penalty,
               const std::vector<int32_t>& recent) {
                if (logits.ndim() != 1)
                    throw InvalidArgument("sample: logits must be 1-D, got " +
                                          std::to_string(logits.ndim()) + " dimensions");
                SamplingParams p;
                p.temperature = temperature;
                p.top_k = top_k;
                p.top_p = top_p;
                p.min_p = min_p;
                p.repetition_penalty = repetition_penalty;
                const float* data = logits.data();
                const auto n = static_cast<size_t>(logits.shape(0));
                py::gil_scoped_release release;
                std::lock_guard<std::mutex> lock(self.mu);
                return self.sampler.sample(data, n, p, recent.data(), recent.size());
            },
            py::arg("logits"), py::arg("temperature") = 0.8f, py::arg("top_k") = 40,
            py::arg("top_p") = 0.95f, py::arg("min_p") = 0.05f,
            py::arg("repetition_penalty") = 1.0f, py::arg("recent") = std::vector<int32_t>{});
}

}  // namespace ffnskip::bindings
