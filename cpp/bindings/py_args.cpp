#include "py_args.h"

#include <algorithm>
#include <cstdio>
#include <limits>

#include "ffnskip/ffnskip.h"

namespace py = pybind11;

namespace ffnskip::bindings {

namespace {

std::string type_name(py::handle value) {
    return Py_TYPE(value.ptr())->tp_name;
}

// repr() cut to a readable length; a repr that itself fails (an int beyond Python's digit limit
// for str conversion) is replaced by the type name.
std::string short_repr(py::handle value) {
    PyObject* r = PyObject_Repr(value.ptr());
    if (r == nullptr) {
        PyErr_Clear();
        return "<" + type_name(value) + ">";
    }
    const py::str s = py::reinterpret_steal<py::str>(r);
    std::string out = s.cast<std::string>();
    constexpr size_t kMax = 60;
    if (out.size() > kMax) out = out.substr(0, kMax) + "...";
    return out;
}

// The value of an int-like object, or false if it does not fit int64 (or is not int-like).
bool as_int64(py::handle value, int64_t& out) {
    if (PyBool_Check(value.ptr()) || !PyIndex_Check(value.ptr())) return false;
    PyObject* index = PyNumber_Index(value.ptr());
    if (index == nullptr) throw py::error_already_set();  // __index__ itself failed
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(index, &overflow);
    Py_DECREF(index);
    if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
    if (overflow != 0) return false;
    out = v;
    return true;
}

}  // namespace

int64_t int_arg(py::handle value, const char* name, int64_t lo, int64_t hi) {
    int64_t v = 0;
    if (!as_int64(value, v) || v < lo || v > hi) {
        throw InvalidArgument(std::string(name) + " must be an int in [" + std::to_string(lo) +
                              ", " + std::to_string(hi) + "], got " + short_repr(value));
    }
    return v;
}

bool flag_arg(py::handle value, const char* name) {
    py::detail::make_caster<bool> caster;
    if (!caster.load(value, true)) {
        throw InvalidArgument(std::string(name) + " must be a bool, got " + type_name(value));
    }
    return py::detail::cast_op<bool>(caster);
}

std::string text_arg(py::handle value, const char* name) {
    if (!PyUnicode_Check(value.ptr())) {
        throw InvalidArgument(std::string(name) + " must be a str, got " + type_name(value));
    }
    Py_ssize_t n = 0;
    const char* s = PyUnicode_AsUTF8AndSize(value.ptr(), &n);
    if (s != nullptr) return std::string(s, static_cast<size_t>(n));
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) throw py::error_already_set();
    PyErr_Clear();
    const Py_ssize_t len = PyUnicode_GetLength(value.ptr());
    for (Py_ssize_t i = 0; i < len; ++i) {
        const Py_UCS4 c = PyUnicode_ReadChar(value.ptr(), i);
        if (c >= 0xD800 && c <= 0xDFFF) {
            char code[16];
            std::snprintf(code, sizeof code, "U+%04X", static_cast<unsigned>(c));
            throw InvalidArgument(std::string(name) + " contains a lone surrogate " + code +
                                  " at index " + std::to_string(i) +
                                  ", which is not valid Unicode text (it has no UTF-8 form)");
        }
    }
    throw InvalidArgument(std::string(name) + " cannot be encoded as UTF-8");
}

std::string path_arg(py::handle value, const char* name) {
    PyObject* encoded = nullptr;
    // os.fspath() then os.fsencode(): str, bytes and os.PathLike, NUL characters refused.
    if (PyUnicode_FSConverter(value.ptr(), &encoded) == 0) {
        const bool nul = PyErr_ExceptionMatches(PyExc_ValueError);
        PyErr_Clear();
        if (nul) throw InvalidArgument(std::string(name) + " contains a NUL character");
        throw InvalidArgument(std::string(name) + " must be a path (str or os.PathLike), got " +
                              type_name(value));
    }
    const py::bytes bytes = py::reinterpret_steal<py::bytes>(encoded);
    return bytes.cast<std::string>();
}

int32_t token_id_arg(py::handle value) {
    int64_t v = 0;
    if (PyBool_Check(value.ptr()) || !PyIndex_Check(value.ptr())) {
        throw InvalidArgument("token ids must be ints, got " + type_name(value) + " " +
                              short_repr(value));
    }
    if (!as_int64(value, v) || v < std::numeric_limits<int32_t>::min() ||
        v > std::numeric_limits<int32_t>::max()) {
        throw InvalidArgument("token id " + short_repr(value) + " is out of range");
    }
    return static_cast<int32_t>(v);
}

std::vector<int32_t> token_ids_arg(py::handle value) {
    // A str iterates characters and bytes iterates byte values: neither is a list of ids.
    if (PyUnicode_Check(value.ptr()) || PyBytes_Check(value.ptr())) {
        throw InvalidArgument("token ids must be a sequence of ints, got " + type_name(value));
    }
    PyObject* it = PyObject_GetIter(value.ptr());
    if (it == nullptr) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError)) throw py::error_already_set();
        PyErr_Clear();
        throw InvalidArgument("token ids must be a sequence of ints, got " + type_name(value));
    }
    const py::object iter = py::reinterpret_steal<py::object>(it);
    std::vector<int32_t> out;
    // A hint only: capped, as a hostile __length_hint__ could ask for any size.
    const Py_ssize_t hint = PyObject_LengthHint(value.ptr(), 0);
    if (hint < 0) PyErr_Clear();
    out.reserve(static_cast<size_t>(std::clamp<Py_ssize_t>(hint, 0, Py_ssize_t{1} << 20)));
    while (PyObject* item = PyIter_Next(iter.ptr())) {
        const py::object owned = py::reinterpret_steal<py::object>(item);
        out.push_back(token_id_arg(owned));
    }
    if (PyErr_Occurred()) throw py::error_already_set();
    return out;
}

}  // namespace ffnskip::bindings
