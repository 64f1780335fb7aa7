// One kernel call between two marker functions, for bench/neon_insn_counts.py: run under
// qemu-aarch64 with instruction tracing, the instructions executed between the markers are the
// kernel's (the inputs are prepared, and per-thread scratch allocated by a first call, before).
//
//     neon_insn_counts LEVEL KERNEL        LEVEL: neon | scalar
//     KERNEL: matmul:TYPE:N_TOK[:grouped] | rmsnorm | rope | swiglu | attention
//
// Prints the number of work units of the call (32-weight blocks x tokens for matmul, elements
// for the row ops, keys x query heads for attention).
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cpu/attention.h"
#include "cpu/kernels.h"
#include "cpu/ops.h"
#include "cpu/repack.h"
#include "cpu/threadpool.h"
#include "fp16.h"
#include "ggml_types.h"
#include "quants.h"

using namespace ffnskip;

extern "C" __attribute__((noinline)) void insn_mark_begin() {
    asm volatile("" ::: "memory");
}
extern "C" __attribute__((noinline)) void insn_mark_end() {
    asm volatile("" ::: "memory");
}

namespace {

std::mt19937 rng(1);

std::vector<float> gaussian(size_t n) {
    std::normal_distribution<float> g;
    std::vector<float> v(n);
    for (float& x : v) x = g(rng);
    return v;
}

uint32_t type_by_name(const std::string& name) {
    for (uint32_t t = 0; t < 40; ++t) {
        const TypeInfo* ti = type_info(t);
        if (ti != nullptr && ti->weight_ok && name == ti->name) return t;
    }
    std::fprintf(stderr, "unknown weight type %s\n", name.c_str());
    std::exit(2);
}

// Random blocks with finite f16 scales (every scale/min field set to 2^-6).
std::vector<uint8_t> random_weights(uint32_t type, int64_t rows, int64_t cols) {
    const TypeInfo* t = type_info(type);
    std::vector<uint8_t> w(static_cast<size_t>(rows * cols / t->block_size) * t->block_bytes);
    for (uint8_t& b : w) b = static_cast<uint8_t>(rng());
    if (type == GGML_F32 || type == GGML_F16 || type == GGML_BF16) {
        const std::vector<float> v = gaussian(static_cast<size_t>(rows * cols));
        for (size_t i = 0; i < v.size(); ++i) {
            if (type == GGML_F32) std::memcpy(&w[4 * i], &v[i], 4);
            const uint16_t h = type == GGML_F16 ? fp32_to_fp16(v[i]) : fp32_to_bits(v[i]) >> 16;
            if (type != GGML_F32) std::memcpy(&w[2 * i], &h, 2);
        }
        return w;
    }
    const uint16_t scale = fp32_to_fp16(1.0f / 64);
    for (size_t at = 0; at < w.size(); at += t->block_bytes) {
        std::memcpy(&w[at + (type == GGML_Q6_K ? 208 : 0)], &scale, 2);
        if (type == GGML_Q4_1 || type == GGML_Q5_1 || type == GGML_Q4_K || type == GGML_Q5_K)
            std::memcpy(&w[at + 2], &scale, 2);
    }
    return w;
}

// Calls fn once unmeasured (scratch buffers, lazy symbol binding), then once between the markers.
void measure(const std::function<void()>& fn) {
    fn();
    insn_mark_begin();
    fn();
    insn_mark_end();
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3 || !cpu::set_simd_level(argv[1])) {
        std::fprintf(stderr, "usage: %s neon|scalar KERNEL\n", argv[0]);
        return 2;
    }
    const std::string kernel = argv[2];
    long long units = 0;
    if (kernel.rfind("matmul:", 0) == 0) {
        char tname[16] = {};
        int n_tok = 1;
        char grouped[16] = {};
        std::sscanf(kernel.c_str(), "matmul:%15[^:]:%d:%15s", tname, &n_tok, grouped);
        const uint32_t type = type_by_name(tname);
        // Decode: 64 x 4096; prompt: 16 x 1024 (keeps the scalar trace of 16 tokens small).
        const int64_t rows = n_tok == 1 ? 64 : 16, cols = n_tok == 1 ? 4096 : 1024;
        const std::vector<uint8_t> data = random_weights(type, rows, cols);
        WeightView w{type, data.data(), rows, cols, row_bytes(type, cols)};
        std::vector<uint8_t> gdata(std::strcmp(grouped, "grouped") == 0 ? data.size() : 0);
        if (!gdata.empty()) w = cpu::group_weight(w, gdata.data());
        const std::vector<float> x = gaussian(static_cast<size_t>(n_tok * cols));
        std::vector<uint8_t> acts(cpu::act_row_bytes(type, cols) * n_tok);
        cpu::prepare_acts(type, x.data(), cols, 0, n_tok, acts.data());
        std::vector<float> y(static_cast<size_t>(n_tok * rows));
        measure([&] { cpu::matmul(w, x.data(), acts.data(), n_tok, y.data(), rows, 0, rows); });
        units = rows * cols / 32 * n_tok;
    } else if (kernel == "rmsnorm" || kernel == "swiglu") {
        const int n = 4096;
        std::vector<float> a = gaussian(n), b = gaussian(n), out(n);
        if (kernel == "rmsnorm")
            measure([&] { cpu::rmsnorm(a.data(), b.data(), out.data(), n, 1e-5f); });
        else
            measure([&] { cpu::swiglu(a.data(), b.data(), n); });
        units = n;
    } else if (kernel == "rope") {
        const int n_heads = 32, hd = 64;
        std::vector<float> x = gaussian(n_heads * hd), c(hd / 2), s(hd / 2);
        cpu::rope_table(100, hd, 10000.0f, c.data(), s.data());
        measure([&] {
            cpu::rope_apply(x.data(), n_heads, hd, hd, RopeStyle::Norm, c.data(), s.data());
        });
        units = n_heads * hd;
    } else if (kernel == "attention") {  // one decode step over 512 keys
        const int n_head = 8, n_kv = 2, hd = 64, n_pos = 512;
        const std::vector<float> q = gaussian(n_head * hd);
        std::vector<uint16_t> k(static_cast<size_t>(n_pos) * n_kv * hd), v(k.size());
        for (size_t i = 0; i < k.size(); ++i) k[i] = fp32_to_fp16(0.1f * (i % 7)), v[i] = k[i];
        std::vector<float> out(q.size()), ws;
        cpu::ThreadPool pool(1);
        cpu::AttnArgs a{q.data(),   n_head * hd, k.data(), v.data(),  n_kv * hd,
                        out.data(), n_head * hd, 1,        n_pos - 1, n_head,
                        n_kv,       hd,          0.125f};
        measure([&] { cpu::attention(a, pool, ws); });
        units = static_cast<long long>(n_head) * n_pos;
    } else {
        std::fprintf(stderr, "unknown kernel %s\n", kernel.c_str());
        return 2;
    }
    std::printf("units %lld\n", units);
    return 0;
}
