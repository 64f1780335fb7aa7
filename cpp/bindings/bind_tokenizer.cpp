// ffnskip_native._core.Tokenizer: the tokenizer of a GGUF file (vocab-only files work: only the
// metadata is read). encode/decode release the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "bindings.h"
#include "gguf.h"
#include "py_args.h"
#include "tokenizer/tokenizer.h"

namespace py = pybind11;

namespace ffnskip::bindings {

namespace {

std::unique_ptr<Tokenizer> open_tokenizer(const std::string& path) {
    // The tokenizer copies what it needs, so the mapping can go away with the File.
    const auto file = gguf::File::open(path);
    return Tokenizer::from_gguf(*file);
}

}  // namespace

void bind_tokenizer(py::module_& m) {
    py::class_<Tokenizer>(m, "Tokenizer")
        .def(
            py::init([](const py::object& path) { return open_tokenizer(path_arg(path, "path")); }),
            py::arg("path"))
        .def(
            "encode",
            [](const Tokenizer& t, const py::object& text, const py::object& add_special,
               const py::object& parse_special) {
                const std::string s = text_arg(text, "text");
                const bool add = flag_arg(add_special, "add_special");
                const bool parse = flag_arg(parse_special, "parse_special");
                py::gil_scoped_release release;
                return t.encode(s, add, parse);
            },
            py::arg("text"), py::arg("add_special") = true, py::arg("parse_special") = false)
        .def(
            "decode",
            [](const Tokenizer& t, const py::object& ids, const py::object& special) {
                const std::vector<int32_t> v = token_ids_arg(ids);
                const bool sp = flag_arg(special, "special");
                std::string s;
                {
                    py::gil_scoped_release release;
                    s = t.decode(v, sp);
                }
                return py::str(s);
            },
            py::arg("ids"), py::arg("special") = false)
        .def(
            "token_to_bytes",
            [](const Tokenizer& t, const py::object& id) {
                return py::bytes(t.token_to_bytes(token_id_arg(id)));
            },
            py::arg("id"))
        .def_property_readonly("n_vocab", &Tokenizer::n_vocab)
        .def_property_readonly("bos_id", &Tokenizer::bos_id)
        .def_property_readonly("eos_id", &Tokenizer::eos_id)
        .def_property_readonly("add_bos", &Tokenizer::add_bos)
        .def_property_readonly("eog_ids", &Tokenizer::eog_ids)
        .def_property_readonly("model", &Tokenizer::model_name)
        .def_property_readonly("pre", &Tokenizer::pre_name)
        .def_property_readonly("warnings", &Tokenizer::warnings);
}

}  // namespace ffnskip::bindings
