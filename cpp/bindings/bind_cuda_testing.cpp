// `_core._cuda_testing`: each CUDA kernel family launched alone (cpp/src/cuda/kernel_harness.h)
// for tests/test_cuda_kernels.py. Compiled only when the CUDA backend is built (CMakeLists.txt);
// every function except decode_row_host needs a device.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "bindings.h"
#include "cuda/kernel_harness.h"
#include "ffnskip/ffnskip.h"
#include "ggml_types.h"
#include "quants.h"

namespace py = pybind11;

namespace ffnskip::bindings {

namespace {

namespace h = cuda::harness;

using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;
using U16Array = py::array_t<uint16_t, py::array::c_style | py::array::forcecast>;
using I32Array = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using U8Array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

template <typename T>
py::array_t<T> to_array(const std::vector<T>& v) {
    py::array_t<T> out(static_cast<py::ssize_t>(v.size()));
    std::copy(v.begin(), v.end(), out.mutable_data());
    return out;
}

// A packed weight matrix from its bytes; the byte count must match rows x row_bytes(cols).
h::HostMatrix matrix(uint32_t type, const U8Array& data, int64_t rows, int64_t cols) {
    const size_t rb = row_bytes(type, cols);
    if (rows <= 0 || cols <= 0 || rb == 0 ||
        static_cast<size_t>(data.size()) != rb * static_cast<size_t>(rows)) {
        throw InvalidArgument(std::string("cuda testing: ") + std::to_string(data.size()) +
                              " bytes are not a " + std::to_string(rows) + " x " +
                              std::to_string(cols) + " " + type_name(type) + " matrix");
    }
    return {type, data.data(), rows, cols};
}

void need(bool ok, const char* what) {
    if (!ok) throw InvalidArgument(std::string("cuda testing: ") + what);
}

}  // namespace

void bind_cuda_testing(py::module_& m) {
    py::module_ t = m.def_submodule(
        "_cuda_testing", "Each CUDA kernel family launched alone, for the per-kernel tests.");
    t.def(
        "gemv",
        [](uint32_t type, const U8Array& w, int64_t rows, int64_t cols, const F32Array& x,
           const std::optional<F32Array>& bias, const std::optional<F32Array>& y0) {
            const h::HostMatrix mat = matrix(type, w, rows, cols);
            need(x.size() == cols, "x must have cols values");
            need(!bias || bias->size() == rows, "bias must have rows values");
            need(!y0 || y0->size() == rows, "y0 must have rows values");
            double sums[3] = {0, 0, 0};
            std::vector<float> y;
            {
                py::gil_scoped_release nogil;
                y = h::gemv(mat, x.data(), bias ? bias->data() : nullptr, y0 ? y0->data() : nullptr,
                            y0 ? sums : nullptr);
            }
            return py::make_tuple(to_array(y), py::make_tuple(sums[0], sums[1], sums[2]));
        },
        py::arg("type"), py::arg("w"), py::arg("rows"), py::arg("cols"), py::arg("x"),
        py::arg("bias") = py::none(), py::arg("y0") = py::none(),
        "(y, (sum y0*y, sum y0^2, sum y^2)): y = W x (+ bias), or y0 + W x with the gate sums.");
    t.def(
        "gemv_swiglu",
        [](uint32_t type, const U8Array& wg, const U8Array& wu, int64_t rows, int64_t cols,
           const F32Array& x) {
            const h::HostMatrix g = matrix(type, wg, rows, cols), u = matrix(type, wu, rows, cols);
            need(x.size() == cols, "x must have cols values");
            py::gil_scoped_release nogil;
            return h::gemv_swiglu(g, u, x.data());
        },
        py::arg("type"), py::arg("wg"), py::arg("wu"), py::arg("rows"), py::arg("cols"),
        py::arg("x"));
    t.def(
        "gemm",
        [](uint32_t type, const U8Array& w, int64_t rows, int64_t cols, const F32Array& x,
           size_t slab_elems) {
            const h::HostMatrix mat = matrix(type, w, rows, cols);
            need(x.ndim() == 2 && x.shape(1) == cols, "x must be (n_tok, cols)");
            need(slab_elems >= static_cast<size_t>(cols), "slab_elems must hold one row");
            const int n_tok = static_cast<int>(x.shape(0));
            std::vector<float> y;
            {
                py::gil_scoped_release nogil;
                y = h::gemm(mat, x.data(), n_tok, slab_elems);
            }
            return to_array(y).reshape({static_cast<int64_t>(n_tok), rows});
        },
        py::arg("type"), py::arg("w"), py::arg("rows"), py::arg("cols"), py::arg("x"),
        py::arg("slab_elems"), "Y (n_tok, rows) = X W^T with f16 inputs, fp32 accumulation.");
    t.def(
        "embed_rows",
        [](uint32_t type, const U8Array& w, int64_t rows, int64_t cols, const I32Array& tokens) {
            const h::HostMatrix mat = matrix(type, w, rows, cols);
            const int n = static_cast<int>(tokens.size());
            std::vector<float> y;
            {
                py::gil_scoped_release nogil;
                y = h::embed_rows(mat, tokens.data(), n);
            }
            return to_array(y).reshape({static_cast<int64_t>(n), cols});
        },
        py::arg("type"), py::arg("w"), py::arg("rows"), py::arg("cols"), py::arg("tokens"));
    t.def(
        "dequant_rows_f16",
        [](uint32_t type, const U8Array& w, int64_t rows, int64_t cols, int64_t r0, int64_t r1) {
            const h::HostMatrix mat = matrix(type, w, rows, cols);
            std::vector<uint16_t> y;
            {
                py::gil_scoped_release nogil;
                y = h::dequant_rows_f16(mat, r0, r1);
            }
            return to_array(y).reshape({r1 - r0, cols});
        },
        py::arg("type"), py::arg("w"), py::arg("rows"), py::arg("cols"), py::arg("r0"),
        py::arg("r1"), "f16 bits of rows [r0, r1).");
    t.def(
        "decode_row_host",
        [](uint32_t type, const U8Array& w, int64_t rows, int64_t cols, int64_t r) {
            return to_array(h::decode_row_host(matrix(type, w, rows, cols), r));
        },
        py::arg("type"), py::arg("w"), py::arg("rows"), py::arg("cols"), py::arg("r"),
        "Row r through the device block decoders, run on the host (no device needed).");
    t.def(
        "rmsnorm",
        [](const F32Array& x, const F32Array& w, float eps) {
            need(x.ndim() == 2 && x.shape(1) == w.size(), "x must be (n_rows, len(w))");
            const int n_rows = static_cast<int>(x.shape(0)), dim = static_cast<int>(w.size());
            std::vector<float> y;
            {
                py::gil_scoped_release nogil;
                y = h::rmsnorm(x.data(), w.data(), n_rows, dim, eps);
            }
            return to_array(y).reshape({n_rows, dim});
        },
        py::arg("x"), py::arg("w"), py::arg("eps"));
    t.def(
        "rope_store_kv",
        [](const F32Array& q, const F32Array& k, const F32Array& v, int n_head, int n_head_kv,
           int n_rot, bool neox, float base, int pos0, int n_ctx) {
            need(q.ndim() == 2 && k.ndim() == 2 && v.ndim() == 2, "q, k, v must be 2-d");
            const int n_tok = static_cast<int>(q.shape(0));
            need(n_head > 0 && n_head_kv > 0 && q.shape(1) % n_head == 0, "bad head count");
            const int hd = static_cast<int>(q.shape(1) / n_head);
            need(k.shape(0) == n_tok && v.shape(0) == n_tok && k.shape(1) == n_head_kv * hd &&
                     v.shape(1) == n_head_kv * hd,
                 "k and v must be (n_tok, n_head_kv * head_dim)");
            need(n_rot >= 2 && n_rot % 2 == 0 && n_rot <= hd, "n_rot must be even, <= head_dim");
            h::RopeResult r;
            {
                py::gil_scoped_release nogil;
                r = h::rope_store_kv(q.data(), k.data(), v.data(), n_tok, n_head, n_head_kv, hd,
                                     n_rot, neox, base, pos0, n_ctx);
            }
            const int64_t kvd = static_cast<int64_t>(n_head_kv) * hd;
            return py::make_tuple(to_array(r.q).reshape({static_cast<int64_t>(n_tok), q.shape(1)}),
                                  to_array(r.k_cache).reshape({static_cast<int64_t>(n_ctx), kvd}),
                                  to_array(r.v_cache).reshape({static_cast<int64_t>(n_ctx), kvd}));
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("n_head"), py::arg("n_head_kv"),
        py::arg("n_rot"), py::arg("neox"), py::arg("base"), py::arg("pos0"), py::arg("n_ctx"),
        "(q rotated, k cache, v cache as f16 bits): tokens at positions pos0...");
    t.def(
        "attention",
        [](const F32Array& q, const U16Array& k, const U16Array& v, int n_head, int n_head_kv,
           int pos0, int split_len) {
            need(q.ndim() == 2 && k.ndim() == 2 && v.ndim() == 2, "q, k, v must be 2-d");
            need(n_head > 0 && n_head_kv > 0 && n_head % n_head_kv == 0 && q.shape(1) % n_head == 0,
                 "bad head counts");
            const int n_tok = static_cast<int>(q.shape(0));
            const int hd = static_cast<int>(q.shape(1) / n_head);
            const int n_ctx = static_cast<int>(k.shape(0));
            need(k.shape(1) == static_cast<int64_t>(n_head_kv) * hd && v.shape(0) == k.shape(0) &&
                     v.shape(1) == k.shape(1),
                 "k and v must be (n_ctx, n_head_kv * head_dim)");
            std::vector<float> y;
            {
                py::gil_scoped_release nogil;
                y = h::attention(q.data(), k.data(), v.data(), n_tok, n_head, n_head_kv, hd, pos0,
                                 n_ctx, split_len);
            }
            return to_array(y).reshape({static_cast<int64_t>(n_tok), q.shape(1)});
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("n_head"), py::arg("n_head_kv"),
        py::arg("pos0"), py::arg("split_len"));
    t.def(
        "swiglu",
        [](const F32Array& g, const F32Array& u, bool skip) {
            need(g.size() == u.size(), "g and u differ in length");
            py::gil_scoped_release nogil;
            return h::swiglu(g.data(), u.data(), g.size(), skip);
        },
        py::arg("g"), py::arg("u"), py::arg("skip") = false);
    t.def(
        "skip_gate_walk",
        [](int mode, const I32Array& hot, const F32Array& thr, const I32Array& grant,
           const F32Array& h0, const F32Array& norm_w, const F32Array& f, const F32Array& comp,
           float eps) {
            const int n_layer = static_cast<int>(hot.size());
            const int dim = static_cast<int>(h0.size());
            need(mode >= 0 && mode <= 2, "mode must be 0 (dense), 1 (observe) or 2 (active)");
            need(thr.size() == n_layer && grant.size() == n_layer, "one thr/grant per layer");
            need(norm_w.size() == dim, "norm_w must have len(h0) values");
            need(f.ndim() == 2 && f.shape(0) == n_layer && f.shape(1) == dim,
                 "f must be (n_layer, len(h0))");
            need(comp.ndim() == 2 && comp.shape(0) == n_layer && comp.shape(1) == dim,
                 "comp must be (n_layer, len(h0))");
            h::SkipGateWalk r;
            {
                py::gil_scoped_release nogil;
                r = h::skip_gate_walk(mode, hot.data(), thr.data(), grant.data(), n_layer,
                                      h0.data(), norm_w.data(), f.data(), comp.data(), dim, eps);
            }
            py::dict out;
            out["skipped"] = to_array(r.skipped);
            out["gate"] = to_array(r.gate);
            out["hn"] = to_array(r.hn).reshape({n_layer, dim});
            out["h"] = to_array(r.h);
            return out;
        },
        py::arg("mode"), py::arg("hot"), py::arg("thr"), py::arg("grant"), py::arg("h0"),
        py::arg("norm_w"), py::arg("f"), py::arg("comp"), py::arg("eps"),
        "One token through every layer's skip gate with FFN output f[l] (see kernel_harness.h).");
}

}  // namespace ffnskip::bindings
