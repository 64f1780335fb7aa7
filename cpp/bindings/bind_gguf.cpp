// GGUF inspection from Python: the parsed header as plain dicts, for tests and tools.
#include <pybind11/pybind11.h>

#include <memory>
#include <string>

#include "bindings.h"
#include "ggml_types.h"
#include "gguf.h"
#include "py_args.h"

namespace py = pybind11;

namespace ffnskip::bindings {

namespace {

using gguf::ValueType;

// Metadata strings are not guaranteed to be UTF-8 (byte-level vocabularies); surrogateescape
// keeps such bytes recoverable instead of failing the whole read.
py::str to_str(const std::string& s) {
    PyObject* o =
        PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogateescape");
    if (o == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(o);
}

py::object scalar_to_py(ValueType t, const gguf::Value& v) {
    switch (t) {
        case ValueType::BOOL:
            return py::bool_(v.u != 0);
        case ValueType::UINT8:
        case ValueType::UINT16:
        case ValueType::UINT32:
        case ValueType::UINT64:
            return py::int_(v.u);
        case ValueType::INT8:
        case ValueType::INT16:
        case ValueType::INT32:
        case ValueType::INT64:
            return py::int_(v.i);
        case ValueType::FLOAT32:
        case ValueType::FLOAT64:
            return py::float_(v.f);
        case ValueType::STRING:
            return to_str(v.str);
        case ValueType::ARRAY:
            break;
    }
    return py::none();
}

py::object value_to_py(const gguf::Value& v) {
    if (v.type != ValueType::ARRAY) return scalar_to_py(v.type, v);
    py::list out(v.array_size());
    const ValueType et = v.array_type;
    for (size_t k = 0; k < v.array_size(); ++k) {
        py::object e;
        if (et == ValueType::STRING) {
            e = to_str(v.strings[k]);
        } else if (et == ValueType::FLOAT32 || et == ValueType::FLOAT64) {
            e = py::float_(v.floats[k]);
        } else if (et == ValueType::BOOL) {
            e = py::bool_(v.ints[k] != 0);
        } else if (et == ValueType::UINT64) {
            // Stored as the bit pattern in an int64 slot; read it back unsigned.
            e = py::int_(static_cast<uint64_t>(v.ints[k]));
        } else {
            e = py::int_(v.ints[k]);
        }
        out[k] = std::move(e);
    }
    return std::move(out);
}

py::dict file_to_dict(const gguf::File& f) {
    py::dict meta;
    for (const auto& [key, value] : f.kv()) meta[to_str(key)] = value_to_py(value);
    py::list tensors;
    for (const gguf::TensorInfo& t : f.tensors()) {
        py::list shape;
        for (int d = 0; d < t.n_dims; ++d) shape.append(t.ne[d]);
        py::dict d;
        d["name"] = to_str(t.name);
        d["type"] = t.type;
        d["type_name"] = type_name(t.type);
        d["shape"] = shape;
        d["offset"] = t.offset;
        d["nbytes"] = t.nbytes;
        tensors.append(d);
    }
    py::dict out;
    out["version"] = f.version();
    out["alignment"] = f.alignment();
    out["data_offset"] = f.data_offset();
    out["metadata"] = meta;
    out["tensors"] = tensors;
    return out;
}

}  // namespace

void bind_gguf(py::module_& m) {
    m.def(
        "gguf_read",
        [](const py::object& path_obj) {
            const std::string path = path_arg(path_obj, "path");
            std::unique_ptr<gguf::File> f;
            {
                py::gil_scoped_release nogil;
                f = gguf::File::open(path);
            }
            return file_to_dict(*f);
        },
        py::arg("path"), "Parse a GGUF file and return its header, metadata and tensor table.");
    m.def(
        "gguf_parse_bytes",
        [](const py::bytes& data) {
            char* p = nullptr;
            Py_ssize_t n = 0;
            if (PyBytes_AsStringAndSize(data.ptr(), &p, &n) != 0) throw py::error_already_set();
            std::unique_ptr<gguf::File> f;
            {
                // `data` is immutable and referenced by the caller's frame while we parse.
                py::gil_scoped_release nogil;
                f = gguf::File::parse(reinterpret_cast<const uint8_t*>(p), static_cast<size_t>(n),
                                      "<bytes>");
            }
            return file_to_dict(*f);
        },
        py::arg("data"),
        "Parse GGUF bytes held in memory (tests, fuzzing); same result as gguf_read.");
}

}  // namespace ffnskip::bindings
