// Every SIMD kernel family against the scalar reference, through the dispatching entry points of
// cpu/kernels.h, ops.h and attention.h with the level forced (cpu::set_simd_level), on random
// data of every weight type, odd sizes and tails. Prints one line per family; exits 1 if any
// fails. Built for AArch64 by tools/test_arm64.sh (level "neon", run under qemu-user); also runs
// natively ("avx2" on x86-64).
//
//     simd_kernels_test [LEVEL]        LEVEL: the level to check (default: what "auto" picks)
//
// Tolerances, relative to the scalar result at the same inputs:
// - activation quantization and dequantization: bit-exact (the SIMD code keeps the scalar
//   rounding order; the core is built with -ffp-contract=off on AArch64);
// - quantized matmul: the integer block sums are exact, only the float summation order differs:
//   relative L2 <= 1e-6 (the bound the Python suite uses for AVX2; measured <= 3.6e-7);
// - float-weight matmul: the scalar path sums up to 520 f32 products in one sequence, the SIMD
//   paths in lanes: measured up to 6.5e-7 (NEON and AVX2), tested at 2e-6;
// - the f16 dot product: error relative to sum |a b|, <= 1e-6;
// - rmsnorm, rope: a few float32 ulps (rope fuses its multiply-adds), <= 1e-6;
// - swiglu: the vector 2^x polynomial against std::exp, <= 3e-6 per element (as the Python suite);
// - attention: the polynomial 2^x and online-softmax rescaling, <= 1e-5 relative per output row
//   (the Python suite's bound against float64).
#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "cpu/attention.h"
#include "cpu/kernels.h"
#include "cpu/ops.h"
#include "cpu/repack.h"
#include "cpu/threadpool.h"
#include "fp16.h"
#include "ggml_types.h"
#include "quants.h"

using namespace ffnskip;
using test::fmt;
using test::rel_l2;

namespace {

std::mt19937 rng(20261231);

float gauss() {
    return std::normal_distribution<float>(0.0f, 1.0f)(rng);
}
float uniform(float lo, float hi) {
    return std::uniform_real_distribution<float>(lo, hi)(rng);
}

std::vector<float> gaussian(size_t n, float scale = 1.0f) {
    std::vector<float> v(n);
    for (float& x : v) x = scale * gauss();
    return v;
}

// Runs fn with the kernel level set to `level`, then restores "auto".
template <class Fn>
void at_level(const char* level, Fn fn) {
    if (!cpu::set_simd_level(level)) {
        std::fprintf(stderr, "cannot set SIMD level %s\n", level);
        std::exit(2);
    }
    fn();
    cpu::set_simd_level("auto");
}

void put_half(uint8_t* p, float v) {
    const uint16_t h = fp32_to_fp16(v);
    std::memcpy(p, &h, 2);
}

// `rows` rows of random weights. Block types: random code bytes (every bit pattern, Q6_K's int8
// scales over their whole range) with f16 scales of either sign set to normal values.
std::vector<uint8_t> random_rows(uint32_t type, int64_t rows, int64_t cols) {
    const TypeInfo* t = type_info(type);
    const size_t nbytes = static_cast<size_t>(rows * cols / t->block_size) * t->block_bytes;
    std::vector<uint8_t> out(nbytes);
    if (type == GGML_F32 || type == GGML_F16 || type == GGML_BF16) {
        for (size_t i = 0; i < static_cast<size_t>(rows * cols); ++i) {
            const float v = gauss();
            uint16_t h = type == GGML_F16 ? fp32_to_fp16(v) : fp32_to_bits(v) >> 16;
            if (type == GGML_F32)
                std::memcpy(&out[4 * i], &v, 4);
            else
                std::memcpy(&out[2 * i], &h, 2);
        }
        return out;
    }
    for (uint8_t& b : out) b = static_cast<uint8_t>(rng());
    auto sign = [] { return (rng() & 1) ? 1.0f : -1.0f; };
    for (size_t at = 0; at < nbytes; at += t->block_bytes) {
        uint8_t* blk = &out[at];
        const size_t d_at = type == GGML_Q6_K ? 208 : 0;
        put_half(blk + d_at, sign() * uniform(0.5f, 1.5f) / 64);
        if (type == GGML_Q4_1 || type == GGML_Q5_1 || type == GGML_Q4_K || type == GGML_Q5_K)
            put_half(blk + 2, sign() * uniform(0.5f, 1.5f) / 8);
    }
    return out;
}

WeightView view(uint32_t type, const std::vector<uint8_t>& data, int64_t rows, int64_t cols) {
    WeightView w;
    w.type = type;
    w.data = data.data();
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = row_bytes(type, cols);
    return w;
}

// n_tok activation rows of `cols` values: Gaussian with 30x outliers, as in real hidden states.
std::vector<float> activations(int64_t n_tok, int64_t cols) {
    std::vector<float> x = gaussian(static_cast<size_t>(n_tok * cols));
    for (size_t i = 3; i < x.size(); i += 97) x[i] *= 30.0f;
    return x;
}

// y = W x at `level` over the rows split in two ranges (as two threads would), from activations
// prepared at the scalar level (prepare_acts is checked on its own).
std::vector<float> matmul_at(const char* level, const WeightView& w, const std::vector<float>& x,
                             int64_t n_tok) {
    std::vector<uint8_t> acts(cpu::act_row_bytes(w.type, w.cols) * n_tok);
    at_level("scalar", [&] { cpu::prepare_acts(w.type, x.data(), w.cols, 0, n_tok, acts.data()); });
    std::vector<float> y(static_cast<size_t>(n_tok * w.rows));
    const int64_t split = w.rows / 2 - 1;
    at_level(level, [&] {
        cpu::matmul(w, x.data(), acts.data(), n_tok, y.data(), w.rows, 0, split);
        cpu::matmul(w, x.data(), acts.data(), n_tok, y.data(), w.rows, split, w.rows);
    });
    return y;
}

// Both scale groupings: one scale per block of 32 (Q8_0) and per super-block of 256 (Q4_K).
void check_prepare_acts(const char* level, test::Report& rep) {
    bool ok = true;
    int cases = 0;
    for (uint32_t type : {GGML_Q8_0, GGML_Q4_K}) {
        const int64_t step = type == GGML_Q4_K ? 8 : 1;
        for (int64_t nb : {1, 3, 75}) {
            const int64_t cols = 32 * nb * step;
            std::vector<float> x = activations(2, cols);
            // A zero group, a group below the smallest scale, an Inf group and a NaN group.
            const int64_t g = 32 * step;
            if (nb >= 3) {
                std::fill(x.begin(), x.begin() + g, 0.0f);
                std::fill(x.begin() + g, x.begin() + 2 * g, 1e-35f);
                x[cols + 5] = INFINITY;
                x[cols + g + 70] = NAN;
            }
            std::vector<uint8_t> want(cpu::act_row_bytes(type, cols) * 2), got(want.size());
            at_level("scalar", [&] { cpu::prepare_acts(type, x.data(), cols, 0, 2, want.data()); });
            at_level(level, [&] { cpu::prepare_acts(type, x.data(), cols, 0, 2, got.data()); });
            ok = ok && want == got;
            ++cases;
        }
    }
    rep.line(ok, "activation quantization (prepare_acts)",
             std::to_string(cases) +
                 " cases of 1-75 scale groups (32 and 256 values) with zero/tiny/Inf/NaN groups, " +
                 (ok ? "bit-exact" : "bytes differ"));
}

void check_matmul(const char* level, uint32_t type, bool grouped, test::Report& rep) {
    const int64_t bs = type_info(type)->block_size;
    std::vector<int64_t> col_set;
    if (bs == 1)
        col_set = {7, 69, 520};  // float weights: vector tails
    else if (bs == 256)
        col_set = {256, 768};
    else
        col_set = {32, 96, 32 * 19, 32 * 75};  // 19 = 2 groups of 8 + 3 plain; 75 > one chunk
    const int64_t rows = 13;                   // odd: remainder rows of every tile shape
    double worst = 0;
    int cases = 0;
    for (int64_t cols : col_set) {
        const std::vector<uint8_t> data = random_rows(type, rows, cols);
        const WeightView plain = view(type, data, rows, cols);
        std::vector<uint8_t> gdata(grouped ? data.size() : 0);
        const WeightView w = grouped ? cpu::group_weight(plain, gdata.data()) : plain;
        // Decode; few tokens; a prompt; the float GEMM (>= 16); more than one chunk of 64 tokens.
        for (int64_t n_tok : {1, 2, 5, 17, 70}) {
            const std::vector<float> x = activations(n_tok, cols);
            const std::vector<float> want = matmul_at("scalar", plain, x, n_tok);
            const std::vector<float> got = matmul_at(level, w, x, n_tok);
            const double err = rel_l2(got, want);
            worst = std::isnan(err) ? err : std::max(worst, err);
            ++cases;
        }
    }
    const double tol = bs == 1 ? 2e-6 : 1e-6;
    const std::string name = std::string("matmul ") + type_name(type) + (grouped ? " grouped" : "");
    rep.line(worst <= tol, name,
             std::to_string(cases) + " cases (13 rows, " + std::to_string(col_set.front()) + ".." +
                 std::to_string(col_set.back()) + " cols, 1/2/5/17/70 tokens), max rel L2 " +
                 fmt("%.2e", worst) + " <= " + fmt("%.0e", tol));
}

// The AMX BF16 prompt matmul (32 tokens or more) against the scalar integer path: weights and
// activations split into two BF16 halves (~4e-6 from exact, tests/test_kernels.py), so the
// difference is the integer path's own 16-bit rounding with 30x outliers (up to ~1.4e-4).
void check_amx(const char* level, test::Report& rep) {
    double worst = 0;
    int cases = 0;
    for (uint32_t type :
         {GGML_Q4_0, GGML_Q4_1, GGML_Q5_0, GGML_Q5_1, GGML_Q8_0, GGML_Q4_K, GGML_Q5_K, GGML_Q6_K}) {
        const int64_t rows = 37, cols = 768;
        const std::vector<uint8_t> data = random_rows(type, rows, cols);
        const WeightView w = view(type, data, rows, cols);
        for (int64_t n_tok : {32, 70}) {
            const std::vector<float> x = activations(n_tok, cols);
            const double err =
                rel_l2(matmul_at(level, w, x, n_tok), matmul_at("scalar", w, x, n_tok));
            worst = std::isnan(err) ? err : std::max(worst, err);
            ++cases;
        }
    }
    const double tol = 3e-4;
    rep.line(worst <= tol, "matmul on AMX BF16 tiles",
             std::to_string(cases) +
                 " cases (8 quantized types, 37 rows, 768 cols, 32/70 tokens), " + "max rel L2 " +
                 fmt("%.2e", worst) + " <= " + fmt("%.0e", tol));
}

// The channel-sparse FFN's two kernels at `level` against scalar: listed rows of a quantized
// matrix (gate-first W_up) and the sparse product on the layout by input channel (W_down). Both
// are dispatched through the level's kernel table, so a level without its own version must still
// fill the entry (the scalar one): a null entry would crash here.
void check_channel_kernels(const char* level, test::Report& rep) {
    double worst = 0;
    int cases = 0;
    for (uint32_t type : {GGML_F16, GGML_Q4_0, GGML_Q4_1, GGML_Q8_0, GGML_Q4_K, GGML_Q6_K}) {
        const int64_t cols = type_info(type)->block_size == 256 ? 512 : 96, rows = 70;
        const std::vector<uint8_t> data = random_rows(type, rows, cols);
        const WeightView w = view(type, data, rows, cols);
        const std::vector<float> x = activations(1, cols);
        std::vector<uint8_t> acts(cpu::act_row_bytes(type, cols));
        at_level("scalar", [&] { cpu::prepare_acts(type, x.data(), cols, 0, 1, acts.data()); });
        const std::vector<int32_t> listed = {0, 3, 4, 17, 31, 32, 33, 64, 69};
        std::vector<float> want(rows, 0.0f), got(rows, 0.0f);
        at_level("scalar", [&] {
            cpu::matvec_rows(w, x.data(), acts.data(), listed.data(), 9, want.data());
        });
        at_level(level,
                 [&] { cpu::matvec_rows(w, x.data(), acts.data(), listed.data(), 9, got.data()); });
        worst = std::max(worst, rel_l2(got, want));
        ++cases;

        // W^T layout; every third input channel active.
        cpu::TransposedView t = cpu::plan_transposed(w);
        std::vector<uint8_t> base(t.bytes());
        cpu::fill_transposed(w, t, base.data(), 0, t.n_pad);
        t = cpu::bind_transposed(t, base.data());
        std::vector<int32_t> active;
        for (int32_t i = 0; i < cols; i += 3) active.push_back(i);
        cpu::SparseInput in;
        in.prepare(t, x.data(), active.data(), static_cast<int64_t>(active.size()));
        std::vector<float> ws(rows), gs(rows);
        at_level("scalar", [&] { cpu::sparse_matvec(t, in, ws.data(), 0, in.units()); });
        at_level(level, [&] { cpu::sparse_matvec(t, in, gs.data(), 0, in.units()); });
        worst = std::max(worst, rel_l2(gs, ws));
        ++cases;
    }
    rep.line(worst <= 1e-6, "channel-sparse kernels (matvec_rows, sparse_matvec)",
             std::to_string(cases) + " cases (F16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K), max rel L2 " +
                 fmt("%.2e", worst) + " <= 1e-06");
}

void check_dequantize(const char* level, test::Report& rep) {
    bool ok = true;
    std::string types;
    for (uint32_t type : {GGML_F16, GGML_BF16, GGML_Q4_0, GGML_Q4_1, GGML_Q5_0, GGML_Q5_1,
                          GGML_Q8_0, GGML_Q4_K, GGML_Q5_K, GGML_Q6_K}) {
        const int64_t bs = type_info(type)->block_size;
        const int64_t n = bs == 256 ? 512 : bs == 32 ? 160 : 163;  // f16/bf16: a vector tail
        const std::vector<uint8_t> data = random_rows(type, 1, n);
        std::vector<float> want(n), got(n);
        at_level("scalar", [&] { cpu::dequantize_row(type, data.data(), want.data(), n); });
        at_level(level, [&] { cpu::dequantize_row(type, data.data(), got.data(), n); });
        const bool same = std::memcmp(want.data(), got.data(), n * sizeof(float)) == 0;
        ok = ok && same;
        if (!same) types += std::string(" ") + type_name(type);
    }
    rep.line(ok, "dequantize_row", ok ? "10 types, bit-exact" : "differs for" + types);
}

void check_f16(const char* level, test::Report& rep) {
    double dot_err = 0, axpy_err = 0;
    bool cvt_ok = true;
    for (int64_t n : {1, 3, 4, 7, 8, 100, 1003}) {
        const std::vector<float> b = gaussian(n), y0 = gaussian(n);
        std::vector<float> src = gaussian(n, 100.0f);
        src[0] = 65519.0f;  // rounds to the largest half
        if (n > 4)
            src[1] = 1e-6f, src[2] = INFINITY, src[3] = 70000.0f;  // subnormal, Inf, overflow
        std::vector<uint16_t> want_h(n), got_h(n);
        at_level("scalar", [&] { cpu::f32_to_f16(src.data(), want_h.data(), n); });
        at_level(level, [&] { cpu::f32_to_f16(src.data(), got_h.data(), n); });
        cvt_ok = cvt_ok && want_h == got_h;
        std::vector<uint16_t> a(n);
        for (int64_t i = 0; i < n; ++i) a[i] = fp32_to_fp16(gauss());
        float want_d = 0, got_d = 0, mag = 0;
        for (int64_t i = 0; i < n; ++i) mag += std::fabs(fp16_to_fp32(a[i]) * b[i]);
        at_level("scalar", [&] { want_d = cpu::dot_f16_f32(a.data(), b.data(), n); });
        at_level(level, [&] { got_d = cpu::dot_f16_f32(a.data(), b.data(), n); });
        dot_err = std::max(dot_err, static_cast<double>(std::fabs(got_d - want_d) / mag));
        std::vector<float> want_y = y0, got_y = y0;
        at_level("scalar", [&] { cpu::axpy_f16(0.7f, a.data(), want_y.data(), n); });
        at_level(level, [&] { cpu::axpy_f16(0.7f, a.data(), got_y.data(), n); });
        axpy_err = std::max(axpy_err, rel_l2(got_y, want_y));
    }
    const bool ok = cvt_ok && dot_err <= 1e-6 && axpy_err <= 1e-6;
    rep.line(ok, "f16 helpers (KV cache)",
             std::string("f32_to_f16 ") + (cvt_ok ? "bit-exact" : "DIFFERS") + ", dot_f16_f32 " +
                 fmt("%.2e", dot_err) + " of sum|a b|, axpy_f16 rel L2 " + fmt("%.2e", axpy_err) +
                 " (<= 1e-06), n = 1..1003");
}

void check_rmsnorm(const char* level, test::Report& rep) {
    double worst = 0;
    for (int n : {1, 13, 576, 1003}) {
        const std::vector<float> x = gaussian(n, 5.0f), w = gaussian(n);
        std::vector<float> want(n), got(n);
        at_level("scalar", [&] { cpu::rmsnorm(x.data(), w.data(), want.data(), n, 1e-5f); });
        at_level(level, [&] { cpu::rmsnorm(x.data(), w.data(), got.data(), n, 1e-5f); });
        worst = std::max(worst, rel_l2(got, want));
    }
    rep.line(worst <= 1e-6, "rmsnorm",
             "n = 1..1003, max rel L2 " + fmt("%.2e", worst) + " <= 1e-06");
}

void check_rope(const char* level, test::Report& rep) {
    double worst = 0;
    int cases = 0;
    for (RopeStyle style : {RopeStyle::Norm, RopeStyle::Neox}) {
        for (std::pair<int, int> shape :
             {std::pair{64, 64}, {128, 128}, {64, 32}, {24, 12}, {10, 10}}) {
            const int hd = shape.first, n_rot = shape.second;  // head_dim, rotated dims
            const int n_heads = 3;
            std::vector<float> cs(n_rot / 2), sn(n_rot / 2);
            cpu::rope_table(777, n_rot, 10000.0f, cs.data(), sn.data());
            const std::vector<float> x = gaussian(static_cast<size_t>(n_heads) * hd);
            std::vector<float> want = x, got = x;
            at_level("scalar", [&] {
                cpu::rope_apply(want.data(), n_heads, hd, n_rot, style, cs.data(), sn.data());
            });
            at_level(level, [&] {
                cpu::rope_apply(got.data(), n_heads, hd, n_rot, style, cs.data(), sn.data());
            });
            worst = std::max(worst, rel_l2(got, want));
            ++cases;
        }
    }
    rep.line(worst <= 1e-6, "rope (NORM and NEOX)",
             std::to_string(cases) + " cases, head_dim 10..128, partial rotation, max rel L2 " +
                 fmt("%.2e", worst) + " <= 1e-06");
}

void check_swiglu(const char* level, test::Report& rep) {
    double worst = 0;
    bool position_free = true;
    for (int64_t n : {1, 7, 8, 100, 1003}) {
        std::vector<float> g = gaussian(n, 6.0f);
        const std::vector<float> u = gaussian(n);
        g[0] = n > 2 ? -100.0f : g[0];
        if (n > 2) g[1] = 100.0f, g[2] = 0.0f;
        std::vector<float> want = g, got = g, shifted(g.begin() + 1, g.end());
        at_level("scalar", [&] { cpu::swiglu(want.data(), u.data(), n); });
        at_level(level, [&] {
            cpu::swiglu(got.data(), u.data(), n);
            cpu::swiglu(shifted.data(), u.data() + 1, n - 1);
        });
        for (int64_t i = 0; i < n; ++i) {  // relative, past an absolute 1e-30 (silu(-100) ~ 0)
            const double excess = std::max(0.0, std::fabs(got[i] - want[i]) - 1e-30);
            worst =
                std::max(worst, excess / std::max(std::fabs(static_cast<double>(want[i])), 1e-300));
        }
        position_free =
            position_free && std::equal(shifted.begin(), shifted.end(), got.begin() + 1);
    }
    rep.line(
        worst <= 3e-6 && position_free, "swiglu",
        "n = 1..1003 incl. +-100 and 0, max rel err " + fmt("%.2e", worst) +
            " <= 3e-06, same value in vector body and tail: " + (position_free ? "yes" : "NO"));
}

void check_attention(const char* level, test::Report& rep) {
    cpu::ThreadPool pool(2);
    double worst = 0;
    int cases = 0;
    struct Case {
        int n_tok, pos0, head_dim;
    };
    for (Case c : {Case{1, 300, 64}, Case{20, 0, 64}, Case{7, 70, 80}, Case{5, 3, 12}}) {
        const int n_head = 4, n_head_kv = 2, hd = c.head_dim;
        const int n_pos = c.pos0 + c.n_tok, kvd = n_head_kv * hd;
        const std::vector<float> q = gaussian(static_cast<size_t>(c.n_tok) * n_head * hd, 2.0f);
        std::vector<uint16_t> k(static_cast<size_t>(n_pos) * kvd), v(k.size());
        for (size_t i = 0; i < k.size(); ++i)
            k[i] = fp32_to_fp16(gauss()), v[i] = fp32_to_fp16(gauss());
        auto run = [&](const char* lv) {
            std::vector<float> out(q.size());
            std::vector<float> ws;
            cpu::AttnArgs a{};
            a.q = q.data();
            a.q_stride = n_head * hd;
            a.k = k.data();
            a.v = v.data();
            a.kv_stride = kvd;
            a.out = out.data();
            a.out_stride = n_head * hd;
            a.n_tok = c.n_tok;
            a.pos0 = c.pos0;
            a.n_head = n_head;
            a.n_head_kv = n_head_kv;
            a.head_dim = hd;
            a.scale = 1.0f / std::sqrt(static_cast<float>(hd));
            at_level(lv, [&] { cpu::attention(a, pool, ws); });
            return out;
        };
        const std::vector<float> want = run("scalar"), got = run(level);
        for (size_t row = 0; row < want.size() / hd; ++row)
            worst = std::max(worst, rel_l2(&got[row * hd], &want[row * hd], hd));
        ++cases;
    }
    rep.line(worst <= 1e-5, "attention (f16 KV cache, GQA)",
             std::to_string(cases) + " cases (decode at 300 keys, prompts, head_dim 12/64/80), " +
                 "max rel err per row " + fmt("%.2e", worst) + " <= 1e-05");
}

}  // namespace

int main(int argc, char** argv) {
    const std::string level = argc > 1 ? argv[1] : cpu::simd_level();
    if (level == "scalar" || !cpu::set_simd_level(level.c_str())) {
        std::fprintf(stderr, "no SIMD level '%s' to check against scalar on this CPU\n",
                     level.c_str());
        return 2;
    }
    std::printf("SIMD kernels at level '%s' against the scalar reference\n", level.c_str());
    test::Report rep;
    const char* lv = level.c_str();
    // The integer kernels first; the AMX prompt path (BF16) is checked on its own below.
    const bool amx = cpu::gemm_amx();
    cpu::set_gemm_amx(false);
    check_prepare_acts(lv, rep);
    for (uint32_t type : {GGML_F32, GGML_F16, GGML_BF16, GGML_Q4_0, GGML_Q4_1, GGML_Q5_0, GGML_Q5_1,
                          GGML_Q8_0, GGML_Q4_K, GGML_Q5_K, GGML_Q6_K})
        check_matmul(lv, type, false, rep);
    check_matmul(lv, GGML_Q4_0, true, rep);
    check_matmul(lv, GGML_Q4_1, true, rep);
    check_matmul(lv, GGML_Q4_K, true, rep);
    // The K-quant prompt tiles at the other x86 lane width too (AVX2 vs AVX-512 VNNI).
    const int lanes = cpu::gemm_lanes();
    for (int other : {256, 512}) {
        if (other == lanes || !cpu::set_gemm_lanes(other)) continue;
        std::printf("K-quant prompt tiles at %d-bit lanes:\n", other);
        for (uint32_t type : {GGML_Q4_K, GGML_Q5_K, GGML_Q6_K}) check_matmul(lv, type, false, rep);
        check_matmul(lv, GGML_Q4_K, true, rep);
        cpu::set_gemm_lanes(lanes);
    }
    if (amx) {
        cpu::set_gemm_amx(true);
        check_amx(lv, rep);
    }
    check_channel_kernels(lv, rep);
    check_dequantize(lv, rep);
    check_f16(lv, rep);
    check_rmsnorm(lv, rep);
    check_rope(lv, rep);
    check_swiglu(lv, rep);
    check_attention(lv, rep);
    std::printf("%s: %d failed\n", rep.failures ? "FAILED" : "ALL PASSED", rep.failures);
    return rep.failures ? 1 : 0;
}
