#include "bindings.h"

namespace ffnskip::bindings {
void bind_gguf(pybind11::module_& m) { (void)m; }
}  // namespace ffnskip::bindings
