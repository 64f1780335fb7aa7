// pybind11 entry point of ffnskip_native._core. C++ errors become the Python classes defined in
// ffnskip_native/errors.py so that they can have two bases (e.g. ModelFormatError is a ValueError).
#include <pybind11/pybind11.h>

#include "bindings.h"
#include "ffnskip/ffnskip.h"

namespace py = pybind11;

namespace {

void raise_as(const char* cls, const std::exception& e) {
    py::object type = py::module_::import("ffnskip_native.errors").attr(cls);
    PyErr_SetString(type.ptr(), e.what());
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "ffnskip-native engine (C++)";
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const ffnskip::FormatError& e) {
            raise_as("ModelFormatError", e);
        } catch (const ffnskip::IoError& e) {
            raise_as("ModelFileError", e);
        } catch (const ffnskip::InvalidArgument& e) {
            raise_as("InvalidArgumentError", e);
        } catch (const ffnskip::ContextOverflow& e) {
            raise_as("ContextOverflowError", e);
        } catch (const ffnskip::BackendUnavailable& e) {
            raise_as("BackendUnavailableError", e);
        } catch (const ffnskip::ResourceError& e) {
            raise_as("ResourceError", e);
        } catch (const ffnskip::Cancelled& e) {
            raise_as("CancelledError", e);
        } catch (const ffnskip::Busy& e) {
            raise_as("BusyError", e);
        } catch (const ffnskip::Error& e) {
            raise_as("Error", e);
        }
    });
    ffnskip::bindings::bind_gguf(m);
    ffnskip::bindings::bind_tokenizer(m);
    ffnskip::bindings::bind_engine(m);
    ffnskip::bindings::bind_testing(m);
    ffnskip::bindings::bind_channel_testing(m);
    ffnskip::bindings::bind_sampler(m);
    ffnskip::bindings::bind_quality(m);
    ffnskip::bindings::bind_batch(m);
#if defined(FFNSKIP_WITH_CUDA)
    ffnskip::bindings::bind_cuda_testing(m);
#endif
}
