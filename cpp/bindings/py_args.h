// Python arguments to C++ values for the bindings. Each helper takes any Python object and
// returns the value or throws InvalidArgument naming the argument and the problem, where
// pybind11's casters would raise a bare TypeError listing signatures (an int beyond 32 bits, a
// str holding a lone surrogate, a float where an int belongs). Call them with the GIL held.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ffnskip::bindings {

// An int (or any object with __index__, e.g. a numpy integer; not a bool) in [lo, hi].
int64_t int_arg(pybind11::handle value, const char* name, int64_t lo, int64_t hi);
// A flag: what pybind11 converts to bool (bool, None, numpy.bool_, numbers).
bool flag_arg(pybind11::handle value, const char* name);
// A str as UTF-8. A lone surrogate, which has no UTF-8 form, is named with its index.
std::string text_arg(pybind11::handle value, const char* name);
// A file path: str, bytes or os.PathLike. A NUL character is refused (C would stop at it and
// open another file).
std::string path_arg(pybind11::handle value, const char* name);
// A token id / an iterable of them: ints that fit int32 (the tokenizer or the engine checks
// them against the vocabulary).
int32_t token_id_arg(pybind11::handle value);
std::vector<int32_t> token_ids_arg(pybind11::handle value);

}  // namespace ffnskip::bindings
