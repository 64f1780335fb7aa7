// Each part of the `_core` module is bound in its own file; module.cpp calls them in order.
#pragma once

#include <pybind11/pybind11.h>

namespace ffnskip::bindings {
void bind_gguf(pybind11::module_& m);       // bind_gguf.cpp: GGUF inspection (info, tests)
void bind_tokenizer(pybind11::module_& m);  // bind_tokenizer.cpp: Tokenizer
void bind_engine(pybind11::module_& m);     // bind_engine.cpp: Engine, SkipConfig, stats
void bind_testing(pybind11::module_& m);    // bind_testing.cpp: `_testing` kernels for the tests
void bind_channel_testing(pybind11::module_& m);  // bind_channel_testing.cpp: sparse kernels
void bind_sampler(pybind11::module_& m);          // bind_sampler.cpp: Sampler
void bind_quality(pybind11::module_& m);          // bind_quality.cpp: log-softmax row statistics
void bind_batch(pybind11::module_& m);            // bind_batch.cpp: BatchEngine (serving)
#if defined(FFNSKIP_WITH_CUDA)
void bind_cuda_testing(pybind11::module_& m);  // bind_cuda_testing.cpp: CUDA kernels alone
#endif
}  // namespace ffnskip::bindings
