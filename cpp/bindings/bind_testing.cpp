// `_core._testing`: direct access to the weight formats and CPU kernels, for the tests (against
// numpy/gguf references) and bench/bench_kernels.py. Also the top-level `_core.simd_level()`.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include "bindings.h"
#include "cpu/attention.h"
#include "cpu/kernels.h"
#include "cpu/ops.h"
#include "cpu/repack.h"
#include "cpu/threadpool.h"
#include "ffnskip/ffnskip.h"
#include "ggml_types.h"
#include "quants.h"

namespace py = pybind11;

namespace ffnskip::bindings {

namespace {

using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;
using U16Array = py::array_t<uint16_t, py::array::c_style | py::array::forcecast>;

// Raw bytes of a `bytes` object or any contiguous buffer (e.g. a uint8 numpy array).
struct Bytes {
    py::buffer_info info;
    const uint8_t* ptr() const { return static_cast<const uint8_t*>(info.ptr); }
    size_t size() const { return static_cast<size_t>(info.size * info.itemsize); }
};

Bytes get_bytes(const py::buffer& b) {
    Bytes out{b.request()};
    const bool contiguous =
        out.info.ndim <= 1 && (out.info.ndim == 0 || out.info.strides[0] == out.info.itemsize);
    if (!contiguous) throw InvalidArgument("expected bytes or a contiguous 1-d buffer");
    return out;
}

size_t checked_row_bytes(uint32_t type, int64_t n) {
    const TypeInfo* t = type_info(type);
    if (t == nullptr || !t->weight_ok) {
        throw InvalidArgument(std::string("unsupported weight type ") + type_name(type));
    }
    const size_t rb = row_bytes(type, n);
    if (n <= 0 || rb == 0) {
        throw InvalidArgument(std::to_string(n) + " elements is not a positive multiple of the " +
                              t->name + " block size " + std::to_string(t->block_size));
    }
    return rb;
}

py::array_t<float> dequantize(uint32_t type, const py::buffer& data, int64_t n, bool reference) {
    const size_t rb = checked_row_bytes(type, n);
    Bytes src = get_bytes(data);
    if (src.size() != rb) {
        throw InvalidArgument(std::to_string(n) + " " + type_name(type) + " elements need " +
                              std::to_string(rb) + " bytes, got " + std::to_string(src.size()));
    }
    py::array_t<float> out(n);
    float* dst = out.mutable_data();
    if (reference) {
        dequantize_row_ref(type, src.ptr(), dst, n);
    } else {
        cpu::dequantize_row(type, src.ptr(), dst, n);
    }
    return out;
}

// A spin barrier: the benchmark splits every matmul over threads the way the engine's pool does.
class Barrier {
  public:
    explicit Barrier(int n) : n_(n) {}
    void wait() {
        const int gen = gen_.load();
        if (count_.fetch_add(1) + 1 == n_) {
            count_.store(0);
            gen_.fetch_add(1);
        } else {
            while (gen_.load() == gen) std::this_thread::yield();
        }
    }

  private:
    const int n_;
    std::atomic<int> count_{0}, gen_{0};
};

// Runs `reps` rounds; in each round every thread prepares its share of the token rows, then
// computes its share of the output rows of each weight matrix in turn. Returns best seconds per
// matmul (one matrix) over the rounds.
double thread_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// cpu_time: measure thread CPU time instead of wall time (less disturbed on a shared machine;
// meaningful for one thread, as waiting threads spin).
double run_matmuls(const std::vector<WeightView>& ws, const float* x, int64_t n_tok, float* y,
                   int n_threads, int reps, bool cpu_time = false) {
    const WeightView& w0 = ws[0];
    const size_t arb = cpu::act_row_bytes(w0.type, w0.cols);
    std::vector<uint8_t> acts(arb * static_cast<size_t>(n_tok) + 64);
    Barrier barrier(n_threads);
    std::vector<double> best(static_cast<size_t>(n_threads), 1e30);
    std::vector<std::exception_ptr> errors(static_cast<size_t>(n_threads));
    auto work = [&](int id) {
        try {
            const int64_t t0 = n_tok * id / n_threads, t1 = n_tok * (id + 1) / n_threads;
            const int64_t r0 = w0.rows * id / n_threads, r1 = w0.rows * (id + 1) / n_threads;
            for (int rep = 0; rep < reps; ++rep) {
                barrier.wait();
                const auto start = std::chrono::steady_clock::now();
                const double cpu_start = thread_seconds();
                for (const WeightView& w : ws) {
                    cpu::prepare_acts(w.type, x, w.cols, t0, t1, acts.data());
                    barrier.wait();
                    cpu::matmul(w, x, arb ? acts.data() : nullptr, n_tok, y, w.rows, r0, r1);
                    barrier.wait();
                }
                const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - start;
                const double sec = cpu_time ? thread_seconds() - cpu_start : dt.count();
                best[static_cast<size_t>(id)] =
                    std::min(best[static_cast<size_t>(id)], sec / ws.size());
            }
        } catch (...) {
            errors[static_cast<size_t>(id)] = std::current_exception();
        }
    };
    {
        py::gil_scoped_release release;
        std::vector<std::thread> pool;
        for (int i = 1; i < n_threads; ++i) pool.emplace_back(work, i);
        work(0);
        for (auto& t : pool) t.join();
    }
    for (auto& e : errors) {
        if (e) std::rethrow_exception(e);
    }
    return *std::max_element(best.begin(), best.end());
}

std::vector<WeightView> weight_views(uint32_t type, const std::vector<Bytes>& bufs, int64_t rows,
                                     int64_t cols) {
    const size_t rb = checked_row_bytes(type, cols);
    if (rows <= 0) throw InvalidArgument("rows must be positive");
    std::vector<WeightView> ws;
    for (const Bytes& b : bufs) {
        if (b.size() != rb * static_cast<size_t>(rows)) {
            throw InvalidArgument(std::to_string(rows) + "x" + std::to_string(cols) + " " +
                                  type_name(type) + " weights need " + std::to_string(rb * rows) +
                                  " bytes, got " + std::to_string(b.size()));
        }
        ws.push_back(WeightView{type, b.ptr(), rows, cols, rb});
    }
    return ws;
}

F32Array check_x(const F32Array& x, int64_t cols) {
    if (x.ndim() != 2 || x.shape(1) != cols) {
        throw InvalidArgument("x must have shape (n_tok, " + std::to_string(cols) + ")");
    }
    return x;
}

void check_threads(int n_threads) {
    if (n_threads < 1 || n_threads > 256) throw InvalidArgument("n_threads must be in 1..256");
}

// grouped: run on copies in the grouped layout of cpu/repack.h (Q4_0 / Q4_1 only).
std::vector<WeightView> maybe_grouped(std::vector<WeightView> ws, bool grouped,
                                      std::vector<std::vector<uint8_t>>& store) {
    if (!grouped) return ws;
    for (WeightView& w : ws) {
        store.emplace_back(w.bytes());
        w = cpu::group_weight(w, store.back().data());
    }
    return ws;
}

py::array_t<float> matmul(uint32_t type, const py::buffer& weight, int64_t rows, int64_t cols,
                          const F32Array& x, int n_threads, bool grouped) {
    check_threads(n_threads);
    std::vector<Bytes> bufs;
    bufs.push_back(get_bytes(weight));
    std::vector<std::vector<uint8_t>> store;
    const auto ws = maybe_grouped(weight_views(type, bufs, rows, cols), grouped, store);
    check_x(x, cols);
    const int64_t n_tok = x.shape(0);
    py::array_t<float> y({n_tok, rows});
    if (n_tok > 0) run_matmuls(ws, x.data(), n_tok, y.mutable_data(), n_threads, 1);
    return y;
}

// Rows [r0, r1) of y (n_tok, rows; the rest zero) by cpu::matmul_each_token, or (one_by_one) by
// one cpu::matmul call per token over the same rows: the serving step's invariance says the two
// are bitwise equal.
py::array_t<float> matmul_each_token(uint32_t type, const py::buffer& weight, int64_t rows,
                                     int64_t cols, const F32Array& x, int64_t r0, int64_t r1,
                                     bool grouped, bool one_by_one) {
    std::vector<Bytes> bufs;
    bufs.push_back(get_bytes(weight));
    std::vector<std::vector<uint8_t>> store;
    const WeightView w = maybe_grouped(weight_views(type, bufs, rows, cols), grouped, store)[0];
    check_x(x, cols);
    const int64_t n_tok = x.shape(0);
    const size_t arb = cpu::act_row_bytes(w.type, w.cols);
    std::vector<uint8_t> acts(arb * static_cast<size_t>(n_tok) + 64);
    cpu::prepare_acts(w.type, x.data(), cols, 0, n_tok, acts.data());
    const uint8_t* a = arb ? acts.data() : nullptr;
    py::array_t<float> y({n_tok, rows});
    float* out = y.mutable_data();
    std::fill(out, out + n_tok * rows, 0.0f);
    if (!one_by_one) {
        cpu::matmul_each_token(w, x.data(), a, n_tok, out, rows, r0, r1);
        return y;
    }
    for (int64_t t = 0; t < n_tok; ++t) {
        cpu::matmul(w, x.data() + t * cols, a ? a + static_cast<size_t>(t) * arb : nullptr, 1,
                    out + t * rows, rows, r0, r1);
    }
    return y;
}

double bench_matmul(uint32_t type, const std::vector<py::buffer>& weights, int64_t rows,
                    int64_t cols, const F32Array& x, int n_threads, int reps, bool cpu_time,
                    bool grouped) {
    check_threads(n_threads);
    if (weights.empty() || reps < 1)
        throw InvalidArgument("need at least one weight matrix and one rep");
    std::vector<Bytes> bufs;
    for (const auto& w : weights) bufs.push_back(get_bytes(w));
    std::vector<std::vector<uint8_t>> store;
    const auto ws = maybe_grouped(weight_views(type, bufs, rows, cols), grouped, store);
    check_x(x, cols);
    if (x.shape(0) == 0) throw InvalidArgument("x has no tokens");
    std::vector<float> y(static_cast<size_t>(x.shape(0) * rows));
    return run_matmuls(ws, x.data(), x.shape(0), y.data(), n_threads, reps, cpu_time);
}

// Best-of-reps read bandwidth (GB/s) over `nbytes` with n_threads: the floor decode compares to.
double read_bandwidth(int64_t nbytes, int n_threads, int reps) {
    check_threads(n_threads);
    if (nbytes < 1 << 20 || reps < 1)
        throw InvalidArgument("nbytes >= 1 MiB and reps >= 1 required");
    const size_t n = static_cast<size_t>(nbytes) / 8;
    std::vector<uint64_t> buf(n, 1);
    std::atomic<uint64_t> sink{0};
    double best = 1e30;
    py::gil_scoped_release release;
    for (int rep = 0; rep < reps; ++rep) {
        const auto start = std::chrono::steady_clock::now();
        std::vector<std::thread> pool;
        for (int id = 0; id < n_threads; ++id) {
            pool.emplace_back([&, id] {
                const size_t i0 = n * id / n_threads, i1 = n * (id + 1) / n_threads;
                uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                size_t i = i0;
                for (; i + 4 <= i1; i += 4)
                    s0 += buf[i], s1 += buf[i + 1], s2 += buf[i + 2], s3 += buf[i + 3];
                for (; i < i1; ++i) s0 += buf[i];
                sink += s0 + s1 + s2 + s3;
            });
        }
        for (auto& t : pool) t.join();
        const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - start;
        best = std::min(best, dt.count());
    }
    return static_cast<double>(n * 8) / best / 1e9;
}

// Causal attention of q (n_tok, n_head * head_dim) at positions pos0.. over the f16 cache
// k, v (n_pos, n_head_kv * head_dim), n_pos >= pos0 + n_tok, on a pool of n_threads.
py::array_t<float> attention(const F32Array& q, const U16Array& k, const U16Array& v, int pos0,
                             int n_head, int n_head_kv, int key_splits, int n_threads) {
    check_threads(n_threads);
    if (q.ndim() != 2 || k.ndim() != 2 || v.ndim() != 2 || k.shape(0) != v.shape(0) ||
        k.shape(1) != v.shape(1)) {
        throw InvalidArgument("attention: q, k, v must be 2-d and k, v of one shape");
    }
    if (n_head < 1 || n_head_kv < 1 || n_head % n_head_kv != 0 || q.shape(1) % n_head != 0) {
        throw InvalidArgument(
            "attention: n_head must be a multiple of n_head_kv and divide q's row");
    }
    const int64_t hd = q.shape(1) / n_head;
    if (k.shape(1) != n_head_kv * hd)
        throw InvalidArgument("attention: k rows must be n_head_kv * head_dim");
    if (pos0 < 0 || pos0 + q.shape(0) > k.shape(0) || key_splits < 0) {
        throw InvalidArgument("attention: the cache must hold positions 0 .. pos0 + n_tok");
    }
    py::array_t<float> out({q.shape(0), q.shape(1)});
    cpu::AttnArgs a{q.data(),
                    q.shape(1),
                    k.data(),
                    v.data(),
                    k.shape(1),
                    out.mutable_data(),
                    q.shape(1),
                    static_cast<int>(q.shape(0)),
                    pos0,
                    n_head,
                    n_head_kv,
                    static_cast<int>(hd),
                    static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)))};
    std::vector<float> workspace;
    py::gil_scoped_release release;
    cpu::ThreadPool pool(n_threads);
    cpu::attention(a, pool, workspace, key_splits);
    return out;
}

}  // namespace

void bind_testing(py::module_& m) {
    m.def("simd_level", &cpu::simd_level,
          "The CPU kernel level in use: 'avx2', 'neon' or 'scalar'.");

    py::module_ t = m.def_submodule("_testing", "Kernel-level access for tests and benchmarks.");
    t.def(
        "set_simd_level",
        [](const std::string& level) { return cpu::set_simd_level(level.c_str()); },
        py::arg("level"), "Force 'scalar', 'avx2', 'neon' or 'auto'; False when this CPU cannot.");
    t.def("set_sparse_lanes", &cpu::set_sparse_lanes, py::arg("bits"),
          "Force the x86 channel-sparse product's lane width, 256 or 512; False when this CPU "
          "cannot.");
    t.def("set_gemm_lanes", &cpu::set_gemm_lanes, py::arg("bits"),
          "Force the x86 K-quant prompt matmul's lane width, 256 or 512; False when this CPU "
          "cannot.");
    t.def("set_gemm_amx", &cpu::set_gemm_amx, py::arg("on"),
          "Switch the AMX BF16 prompt matmul on or off; False when this CPU cannot run it.");
    t.def(
        "row_bytes", [](uint32_t type, int64_t n) { return checked_row_bytes(type, n); },
        py::arg("type"), py::arg("n"));
    t.def(
        "dequantize_ref",
        [](uint32_t type, const py::buffer& d, int64_t n) { return dequantize(type, d, n, true); },
        py::arg("type"), py::arg("data"), py::arg("n"));
    t.def(
        "dequantize",
        [](uint32_t type, const py::buffer& d, int64_t n) { return dequantize(type, d, n, false); },
        py::arg("type"), py::arg("data"), py::arg("n"));
    t.def("matmul", &matmul, py::arg("type"), py::arg("weight"), py::arg("rows"), py::arg("cols"),
          py::arg("x"), py::arg("n_threads") = 1, py::arg("grouped") = false,
          "y (n_tok, rows) = x @ W.T with the dispatched CPU kernels (grouped: on a copy in the\n"
          "grouped layout of cpu/repack.h, Q4_0/Q4_1 only).");
    t.def("matmul_each_token", &matmul_each_token, py::arg("type"), py::arg("weight"),
          py::arg("rows"), py::arg("cols"), py::arg("x"), py::arg("r0"), py::arg("r1"),
          py::arg("grouped") = false, py::arg("one_by_one") = false,
          "Rows [r0, r1) of y (n_tok, rows) = x @ W.T by cpu::matmul_each_token, or by one\n"
          "one-token cpu::matmul per token (one_by_one); the other rows are zero.");
    t.def("bench_matmul", &bench_matmul, py::arg("type"), py::arg("weights"), py::arg("rows"),
          py::arg("cols"), py::arg("x"), py::arg("n_threads") = 1, py::arg("reps") = 5,
          py::arg("cpu_time") = false, py::arg("grouped") = false,
          "Best seconds per matmul (activation preparation included), cycling through `weights`;\n"
          "cpu_time: thread CPU seconds instead of wall time.");
    t.def("read_bandwidth", &read_bandwidth, py::arg("nbytes"), py::arg("n_threads") = 1,
          py::arg("reps") = 5, "Best read bandwidth in GB/s of a streaming sum over nbytes.");
    t.def("dot_f16_f32", [](const U16Array& a, const F32Array& b) {
        if (a.size() != b.size()) throw InvalidArgument("dot_f16_f32: a and b differ in length");
        return cpu::dot_f16_f32(a.data(), b.data(), a.size());
    });
    t.def(
        "axpy_f16",
        [](float a, const U16Array& x, const F32Array& y) {
            if (x.size() != y.size()) throw InvalidArgument("axpy_f16: x and y differ in length");
            py::array_t<float> out(y.size());
            std::memcpy(out.mutable_data(), y.data(), sizeof(float) * y.size());
            cpu::axpy_f16(a, x.data(), out.mutable_data(), x.size());
            return out;
        },
        "Returns y + a * x (y is not modified).");
    t.def("f32_to_f16", [](const F32Array& x) {
        py::array_t<uint16_t> out(x.size());
        cpu::f32_to_f16(x.data(), out.mutable_data(), x.size());
        return out;
    });
    t.def("attention", &attention, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("pos0"),
          py::arg("n_head"), py::arg("n_head_kv"), py::arg("key_splits") = 0,
          py::arg("n_threads") = 1,
          "Causal attention of q (n_tok, n_head * head_dim) at positions pos0.. over the f16\n"
          "cache k, v (n_pos, n_head_kv * head_dim); scale 1/sqrt(head_dim). key_splits: key\n"
          "ranges per task, merged by log-sum-exp (0: chosen from n_threads).");
    t.def(
        "rmsnorm",
        [](const F32Array& x, const F32Array& w, float eps) {
            if (x.size() != w.size()) throw InvalidArgument("rmsnorm: x and w differ in length");
            py::array_t<float> out(x.size());
            cpu::rmsnorm(x.data(), w.data(), out.mutable_data(), static_cast<int>(x.size()), eps);
            return out;
        },
        py::arg("x"), py::arg("w"), py::arg("eps"));
    t.def(
        "swiglu",
        [](const F32Array& g, const F32Array& u) {
            if (g.size() != u.size()) throw InvalidArgument("swiglu: g and u differ in length");
            py::array_t<float> out(g.size());
            std::memcpy(out.mutable_data(), g.data(), sizeof(float) * g.size());
            cpu::swiglu(out.mutable_data(), u.data(), g.size());
            return out;
        },
        py::arg("g"), py::arg("u"), "silu(g) * u.");
    t.def(
        "geglu",
        [](const F32Array& g, const F32Array& u) {
            if (g.size() != u.size()) throw InvalidArgument("geglu: g and u differ in length");
            py::array_t<float> out(g.size());
            std::memcpy(out.mutable_data(), g.data(), sizeof(float) * g.size());
            cpu::geglu(out.mutable_data(), u.data(), g.size());
            return out;
        },
        py::arg("g"), py::arg("u"), "gelu_tanh(g) * u.");
    t.def(
        "rope",
        [](const F32Array& x, int n_rot, int pos, float base, bool neox) {
            if (x.ndim() != 2 || n_rot < 2 || n_rot % 2 != 0 || n_rot > x.shape(1)) {
                throw InvalidArgument(
                    "rope: x must be (n_heads, head_dim), n_rot even <= head_dim");
            }
            std::vector<float> c(static_cast<size_t>(n_rot / 2)), s(c.size());
            cpu::rope_table(pos, n_rot, base, c.data(), s.data());
            py::array_t<float> out({x.shape(0), x.shape(1)});
            std::memcpy(out.mutable_data(), x.data(), sizeof(float) * x.size());
            cpu::rope_apply(out.mutable_data(), static_cast<int>(x.shape(0)),
                            static_cast<int>(x.shape(1)), n_rot,
                            neox ? RopeStyle::Neox : RopeStyle::Norm, c.data(), s.data());
            return out;
        },
        py::arg("x"), py::arg("n_rot"), py::arg("pos"), py::arg("base"), py::arg("neox"),
        "Rotates the first n_rot dims of each row (head) of x for position pos.");
}

}  // namespace ffnskip::bindings
