// Each CUDA kernel family launched alone, host buffers in and out, for the per-kernel tests
// (tests/test_cuda_kernels.py, bound in cpp/bindings/bind_cuda_testing.cpp). A call copies its
// inputs into fresh device memory laid out as the backend lays it out (weight rows padded to 16
// bytes), launches the family's launcher from cpp/src/cuda/*.cuh on its own stream, waits and
// copies the result back. A test then compares it with the CPU scalar reference, so a wrong
// result names one kernel instead of a whole forward pass. Plain C++ header: no CUDA types.
#pragma once

#include <cstdint>
#include <vector>

namespace ffnskip::cuda::harness {

// A weight matrix in host memory: `rows` GGUF rows of `cols` values of `type`, packed.
struct HostMatrix {
    uint32_t type = 0;
    const uint8_t* data = nullptr;
    int64_t rows = 0;
    int64_t cols = 0;
};

// gemv.cuh, one job: y = W x (+ bias) or, with y0, y = y0 + W x; then gate_sums (3 doubles:
// sum y0*y, sum y0*y0, sum y*y over all rows, reduced on the host from the per-CTA parts).
std::vector<float> gemv(const HostMatrix& w, const float* x, const float* bias, const float* y0,
                        double* gate_sums);
// gemv.cuh: out[r] = silu(Wg[r] x) * (Wu[r] x).
std::vector<float> gemv_swiglu(const HostMatrix& gate, const HostMatrix& up, const float* x);
// gemm.cuh: Y[t, r] = sum_c W[r, c] f16(X[t, c]) with the weights staged through an f16 slab of
// slab_elems values (smaller than the matrix: several slabs).
std::vector<float> gemm(const HostMatrix& w, const float* x, int n_tok, size_t slab_elems);
// dequant.cuh: the embedding lookup (f32) and the f16 staging of rows [r0, r1).
std::vector<float> embed_rows(const HostMatrix& w, const int32_t* tokens, int n);
std::vector<uint16_t> dequant_rows_f16(const HostMatrix& w, int64_t r0, int64_t r1);
// blocks.cuh's decoders run on the host (they are __host__ __device__): row r of w, dequantized
// part by part as the device reads it. Needs no device.
std::vector<float> decode_row_host(const HostMatrix& w, int64_t r);

// norm_rope.cuh.
std::vector<float> rmsnorm(const float* x, const float* w, int n_rows, int dim, float eps);
struct RopeResult {
    std::vector<float> q;                    // [n_tok, n_head * head_dim], rotated
    std::vector<uint16_t> k_cache, v_cache;  // [n_ctx, n_head_kv * head_dim], f16 bits
};
RopeResult rope_store_kv(const float* q, const float* k, const float* v, int n_tok, int n_head,
                         int n_head_kv, int head_dim, int n_rot, bool neox, float base, int pos0,
                         int n_ctx);

// attention.cuh: causal attention of n_tok queries at positions pos0.. over an f16 cache of
// n_ctx positions (n_ctx >= pos0 + n_tok), keys split every split_len.
std::vector<float> attention(const float* q, const uint16_t* k, const uint16_t* v, int n_tok,
                             int n_head, int n_head_kv, int head_dim, int pos0, int n_ctx,
                             int split_len);

// swiglu.cuh: out = silu(g) * u, or untouched zeros when skip.
std::vector<float> swiglu(const float* g, const float* u, int64_t n, bool skip);

// skip_gate.cuh: one token through n_layer skip gates, as the decode graph runs them. Per layer:
// ffn_begin (skip decision, compensation or hn = rmsnorm(h) * norm_w), then the FFN stand-in
// "h += f[l]" as a GEMV with an identity F32 matrix (accumulate, skip flag, gate parts: the
// backend's down projection epilogue), then ffn_end (gate value, budget update).
struct SkipGateWalk {
    std::vector<int32_t> skipped;  // [n_layer]
    std::vector<float> gate;       // [n_layer], NaN where no gate value exists
    std::vector<float> hn;         // [n_layer, dim]: the FFN input of layers that ran
    std::vector<float> h;          // [dim]: the residual after the last layer
};
SkipGateWalk skip_gate_walk(int mode, const int32_t* hot, const float* thr, const int32_t* grant,
                            int n_layer, const float* h0, const float* norm_w, const float* f,
                            const float* comp, int dim, float eps);

}  // namespace ffnskip::cuda::harness
