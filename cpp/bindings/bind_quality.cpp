// Log-softmax statistics of logit rows for ffnskip_native.quality (perplexity, top-1, KL).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "bindings.h"
#include "cpu/logprob.h"
#include "ffnskip/ffnskip.h"

namespace py = pybind11;

namespace ffnskip::bindings {

namespace {

using Rows = py::array_t<float, py::array::c_style | py::array::forcecast>;
using Lse = py::array_t<double, py::array::c_style | py::array::forcecast>;

void check_rows(const Rows& a, const char* name) {
    if (a.ndim() != 2) {
        throw InvalidArgument(std::string(name) + " must be 2-D (rows, vocab), got " +
                              std::to_string(a.ndim()) + " dimensions");
    }
}

}  // namespace

void bind_quality(py::module_& m) {
    m.def(
        "logsumexp_rows",
        [](const Rows& x) {
            check_rows(x, "logits");
            const py::ssize_t rows = x.shape(0), n = x.shape(1);
            py::array_t<double> lse(rows);
            py::array_t<int64_t> arg(rows);
            {
                const float* src = x.data();
                double* l = lse.mutable_data();
                int64_t* a = arg.mutable_data();
                py::gil_scoped_release nogil;
                for (py::ssize_t r = 0; r < rows; ++r) l[r] = cpu::logsumexp(src + r * n, n, &a[r]);
            }
            return py::make_tuple(lse, arg);
        },
        py::arg("logits"),
        "Per row of a (rows, vocab) array: (log-sum-exp as float64, index of the first maximum).");
    m.def(
        "kl_rows",
        [](const Rows& p, const Lse& lse_p, const Rows& q, const Lse& lse_q) {
            check_rows(p, "p");
            check_rows(q, "q");
            const py::ssize_t rows = p.shape(0), n = p.shape(1);
            if (q.shape(0) != rows || q.shape(1) != n)
                throw InvalidArgument("kl_rows: p and q must have the same shape");
            if (lse_p.ndim() != 1 || lse_q.ndim() != 1 || lse_p.shape(0) != rows ||
                lse_q.shape(0) != rows)
                throw InvalidArgument("kl_rows: lse_p and lse_q need one value per row");
            py::array_t<double> out(rows);
            {
                const float *a = p.data(), *b = q.data();
                const double *la = lse_p.data(), *lb = lse_q.data();
                double* o = out.mutable_data();
                py::gil_scoped_release nogil;
                for (py::ssize_t r = 0; r < rows; ++r)
                    o[r] = cpu::kl_divergence(a + r * n, la[r], b + r * n, lb[r], n);
            }
            return out;
        },
        py::arg("p"), py::arg("lse_p"), py::arg("q"), py::arg("lse_q"),
        "Per row: KL(softmax(p) || softmax(q)) from the logits and their log-sum-exps.");
}

}  // namespace ffnskip::bindings
