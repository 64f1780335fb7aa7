// `_core._testing` entries for the channel-sparse kernels (cpu/transposed.h, cpu/kernels.h):
// the weight layout by input channel, the sparse matvec on it and the listed-rows matvec, for the
// tests against numpy and for benchmarks.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <chrono>
#include <ctime>
#include <limits>
#include <string>
#include <vector>

#include "bindings.h"
#include "cpu/channel_ffn.h"
#include "cpu/kernels.h"
#include "cpu/repack.h"
#include "cpu/threadpool.h"
#include "cpu/transposed.h"
#include "ffnskip/ffnskip.h"
#include "quants.h"

namespace py = pybind11;

namespace ffnskip::bindings {

namespace {

using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;
using I32Array = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

WeightView view_of(uint32_t type, const py::buffer& weight, int64_t rows, int64_t cols,
                   py::buffer_info& keep) {
    keep = weight.request();
    const size_t rb = row_bytes(type, cols);
    const TypeInfo* ti = type_info(type);
    if (ti == nullptr || !ti->weight_ok || rb == 0 || rows <= 0 || cols <= 0) {
        throw InvalidArgument("bad weight type or shape");
    }
    if (static_cast<size_t>(keep.size * keep.itemsize) != rb * static_cast<size_t>(rows)) {
        throw InvalidArgument("weight buffer size does not match rows x cols");
    }
    return WeightView{type, static_cast<const uint8_t*>(keep.ptr), rows, cols, rb};
}

// A matrix laid out by input channel, with its own bytes.
struct Transposed {
    std::vector<uint8_t> bytes;
    cpu::TransposedView view;
};

Transposed transpose(const WeightView& w) {
    Transposed t;
    t.view = cpu::plan_transposed(w);
    t.bytes.assign(t.view.bytes(), 0);
    cpu::fill_transposed(w, t.view, t.bytes.data(), 0, t.view.n_pad);
    t.view = cpu::bind_transposed(t.view, t.bytes.data());
    return t;
}

std::vector<int32_t> active_list(const I32Array& active, int64_t n_in) {
    std::vector<int32_t> a(active.data(), active.data() + active.size());
    for (size_t k = 0; k < a.size(); ++k) {
        if (a[k] < 0 || a[k] >= n_in || (k > 0 && a[k] <= a[k - 1])) {
            throw InvalidArgument("active channels must be ascending and in [0, n_in)");
        }
    }
    return a;
}

py::tuple sparse_matvec(uint32_t type, const py::buffer& weight, int64_t rows, int64_t cols,
                        const F32Array& x, const I32Array& active, int n_threads) {
    py::buffer_info keep;
    const WeightView w = view_of(type, weight, rows, cols, keep);
    if (x.ndim() != 1 || x.shape(0) != cols) throw InvalidArgument("x must have shape (cols,)");
    if (n_threads < 1 || n_threads > 64) throw InvalidArgument("n_threads must be in 1..64");
    const std::vector<int32_t> a = active_list(active, cols);
    py::array_t<float> y(rows);
    size_t bytes_read = 0, layout_bytes = 0;
    {
        py::gil_scoped_release nogil;
        const Transposed t = transpose(w);
        cpu::SparseInput in;
        // As the engine: planned here, terms filled by the product's threads.
        in.plan(t.view, x.data(), a.data(), static_cast<int64_t>(a.size()));
        cpu::ThreadPool pool(n_threads);
        std::vector<float> parts;
        cpu::pooled_sparse_matvec(pool, t.view, in, y.mutable_data(), nullptr, nullptr, parts,
                                  true);
        bytes_read = in.bytes_read(t.view);
        layout_bytes = t.view.bytes();
    }
    return py::make_tuple(y, bytes_read, layout_bytes);
}

py::dict transposed_shape(uint32_t type, int64_t rows, int64_t cols) {
    const size_t rb = row_bytes(type, cols);
    if (rb == 0) throw InvalidArgument("bad weight type or shape");
    const cpu::TransposedView t = cpu::plan_transposed(WeightView{type, nullptr, rows, cols, rb});
    py::dict d;
    d["n_pad"] = t.n_pad;
    d["blk"] = t.blk;
    d["super"] = t.super;
    d["code_row"] = t.code_row();
    d["scale_row"] = t.scale_row();
    d["super_row"] = t.super_row();
    d["bytes"] = t.bytes();
    return d;
}

py::array_t<float> matvec_rows(uint32_t type, const py::buffer& weight, int64_t rows, int64_t cols,
                               const F32Array& x, const I32Array& list, bool grouped) {
    py::buffer_info keep;
    WeightView w = view_of(type, weight, rows, cols, keep);
    if (x.ndim() != 1 || x.shape(0) != cols) throw InvalidArgument("x must have shape (cols,)");
    std::vector<uint8_t> store;
    if (grouped) {
        store.resize(w.bytes());
        w = cpu::group_weight(w, store.data());
    }
    py::array_t<float> y(rows);
    float* out = y.mutable_data();
    std::fill(out, out + rows, std::numeric_limits<float>::quiet_NaN());
    std::vector<uint8_t> acts(cpu::act_row_bytes(w.type, cols) + 64);
    cpu::prepare_acts(w.type, x.data(), cols, 0, 1, acts.data());
    cpu::matvec_rows(w, x.data(), acts.data(), list.data(), list.size(), out);
    return y;
}

// Best seconds of `reps` sparse products over each of `weights` in turn (layouts built first),
// n_threads slicing the outputs as the engine does.
double thread_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// cpu_time (one thread only): thread CPU seconds, less disturbed on a shared machine.
double bench_sparse(uint32_t type, const std::vector<py::buffer>& weights, int64_t rows,
                    int64_t cols, const F32Array& x, const I32Array& active, int n_threads,
                    int reps, bool cpu_time) {
    if (weights.empty() || reps < 1 || n_threads < 1 || n_threads > 64) {
        throw InvalidArgument("need weights, reps >= 1 and n_threads in 1..64");
    }
    if (x.ndim() != 1 || x.shape(0) != cols) throw InvalidArgument("x must have shape (cols,)");
    std::vector<py::buffer_info> keep(weights.size());
    std::vector<Transposed> ts;
    for (size_t i = 0; i < weights.size(); ++i) {
        ts.push_back(transpose(view_of(type, weights[i], rows, cols, keep[i])));
    }
    const std::vector<int32_t> a = active_list(active, cols);
    std::vector<float> y(static_cast<size_t>(rows));
    py::gil_scoped_release nogil;
    cpu::SparseInput in;
    in.prepare(ts[0].view, x.data(), a.data(), static_cast<int64_t>(a.size()));
    cpu::ThreadPool pool(n_threads);
    std::vector<float> parts;
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
        const auto start = std::chrono::steady_clock::now();
        const double cpu_start = thread_seconds();
        for (const Transposed& t : ts) {
            if (cpu_time) {
                cpu::sparse_matvec(t.view, in, y.data(), 0, in.units());
                continue;
            }
            cpu::pooled_sparse_matvec(pool, t.view, in, y.data(), nullptr, nullptr, parts);
        }
        const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - start;
        const double sec = cpu_time ? thread_seconds() - cpu_start : dt.count();
        best = std::min(best, sec / static_cast<double>(ts.size()));
    }
    return best;
}

}  // namespace

void bind_channel_testing(py::module_& m) {
    py::module_ t = m.attr("_testing").cast<py::module_>();
    t.def("sparse_matvec", &sparse_matvec, py::arg("type"), py::arg("weight"), py::arg("rows"),
          py::arg("cols"), py::arg("x"), py::arg("active"), py::arg("n_threads") = 1,
          "(y, bytes_read, layout_bytes): y (rows,) = W[:, active] @ x[active] on the layout by\n"
          "input channel (cpu/transposed.h), built from W's file rows.");
    t.def("transposed_shape", &transposed_shape, py::arg("type"), py::arg("rows"), py::arg("cols"),
          "Row sizes of the layout by input channel of a rows x cols matrix.");
    t.def("matvec_rows", &matvec_rows, py::arg("type"), py::arg("weight"), py::arg("rows"),
          py::arg("cols"), py::arg("x"), py::arg("rows_list"), py::arg("grouped") = false,
          "y (rows,): W[r] @ x for the listed rows r, NaN elsewhere (one-token kernels).");
    t.def("bench_sparse", &bench_sparse, py::arg("type"), py::arg("weights"), py::arg("rows"),
          py::arg("cols"), py::arg("x"), py::arg("active"), py::arg("n_threads") = 1,
          py::arg("reps") = 5, py::arg("cpu_time") = false,
          "Best wall (cpu_time: this thread's CPU) seconds per sparse product, cycling through\n"
          "weights.");
}

}  // namespace ffnskip::bindings
