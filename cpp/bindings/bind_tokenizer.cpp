#include "bindings.h"

namespace ffnskip::bindings {
void bind_tokenizer(pybind11::module_& m) { (void)m; }
}  // namespace ffnskip::bindings
