// Host-buffer wrappers that launch one kernel family alone (see kernel_harness.h).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cuda/attention.cuh"
#include "cuda/blocks.cuh"
#include "cuda/common.cuh"
#include "cuda/dequant.cuh"
#include "cuda/gemm.cuh"
#include "cuda/gemv.cuh"
#include "cuda/kernel_harness.h"
#include "cuda/norm_rope.cuh"
#include "cuda/skip_gate.cuh"
#include "cuda/swiglu.cuh"
#include "ggml_types.h"
#include "quants.h"

namespace ffnskip::cuda::harness {

namespace {

// Device memory that frees itself, so a failed check in the middle of a test leaks nothing.
template <typename T>
class DevBuf {
  public:
    explicit DevBuf(size_t n) : n_(n) {
        FFNSKIP_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p_), sizeof(T) * (n ? n : 1)));
        FFNSKIP_CUDA_CHECK(cudaMemset(p_, 0, sizeof(T) * (n ? n : 1)));
    }
    DevBuf(const T* src, size_t n) : DevBuf(n) {
        if (n) FFNSKIP_CUDA_CHECK(cudaMemcpy(p_, src, sizeof(T) * n, cudaMemcpyHostToDevice));
    }
    ~DevBuf() { cudaFree(p_); }
    DevBuf(const DevBuf&) = delete;
    DevBuf& operator=(const DevBuf&) = delete;
    T* get() const { return p_; }
    std::vector<T> to_host() const {
        std::vector<T> out(n_);
        if (n_)
            FFNSKIP_CUDA_CHECK(cudaMemcpy(out.data(), p_, sizeof(T) * n_, cudaMemcpyDeviceToHost));
        return out;
    }

  private:
    T* p_ = nullptr;
    size_t n_;
};

// The stream every launch of one call runs on; destroyed after the final synchronisation.
class Stream {
  public:
    Stream() { FFNSKIP_CUDA_CHECK(cudaStreamCreate(&s_)); }
    ~Stream() { cudaStreamDestroy(s_); }
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;
    cudaStream_t get() const { return s_; }
    void sync() const { FFNSKIP_CUDA_CHECK(cudaStreamSynchronize(s_)); }

  private:
    cudaStream_t s_ = nullptr;
};

size_t checked_row_bytes(const HostMatrix& w) {
    const size_t rb = row_bytes(w.type, w.cols);
    if (w.rows <= 0 || rb == 0) {
        throw InvalidArgument(std::string("harness: ") + type_name(w.type) + " matrix of " +
                              std::to_string(w.rows) + " x " + std::to_string(w.cols));
    }
    return rb;
}

// The weight on the device with rows padded to 16 bytes, as the backend's upload lays it out.
struct DevWeight {
    DevBuf<uint8_t> buf;
    DevMatrix m;
    explicit DevWeight(const HostMatrix& w)
        : buf(static_cast<size_t>(w.rows) * ((checked_row_bytes(w) + 15) / 16 * 16)) {
        m.type = w.type;
        m.rows = w.rows;
        m.cols = w.cols;
        m.row_bytes = checked_row_bytes(w);
        m.stride = (m.row_bytes + 15) / 16 * 16;
        m.data = buf.get();
        FFNSKIP_CUDA_CHECK(cudaMemcpy2D(buf.get(), m.stride, w.data, m.row_bytes, m.row_bytes,
                                        static_cast<size_t>(w.rows), cudaMemcpyHostToDevice));
    }
};

}  // namespace

std::vector<float> gemv(const HostMatrix& w, const float* x, const float* bias, const float* y0,
                        double* gate_sums) {
    Stream s;
    DevWeight dw(w);
    const size_t rows = static_cast<size_t>(w.rows), cols = static_cast<size_t>(w.cols);
    DevBuf<float> dx(x, cols), dy(rows);
    DevBuf<float> db(bias, bias ? rows : 0);
    if (y0)
        FFNSKIP_CUDA_CHECK(cudaMemcpy(dy.get(), y0, sizeof(float) * rows, cudaMemcpyHostToDevice));
    const unsigned ctas = gemv_ctas(w.rows);
    DevBuf<double> parts(3 * static_cast<size_t>(ctas));
    GemvArgs a;
    a.job[0].w = dw.m.data;
    a.job[0].stride = dw.m.stride;
    a.job[0].rows = static_cast<int>(w.rows);
    a.job[0].bias = bias ? db.get() : nullptr;
    a.job[0].y = dy.get();
    a.cols = static_cast<int>(w.cols);
    a.x = dx.get();
    a.accumulate = y0 != nullptr;
    a.gate_part = y0 && gate_sums ? parts.get() : nullptr;
    cuda::gemv(w.type, a, s.get());
    s.sync();
    if (a.gate_part) {
        const std::vector<double> p = parts.to_host();
        gate_sums[0] = gate_sums[1] = gate_sums[2] = 0.0;
        for (unsigned i = 0; i < ctas; ++i) {
            for (int k = 0; k < 3; ++k) gate_sums[k] += p[3 * i + k];
        }
    }
    return dy.to_host();
}

std::vector<float> gemv_swiglu(const HostMatrix& gate, const HostMatrix& up, const float* x) {
    Stream s;
    DevWeight dg(gate), du(up);
    DevBuf<float> dx(x, static_cast<size_t>(gate.cols)), out(static_cast<size_t>(gate.rows));
    cuda::gemv_swiglu(dg.m, du.m, dx.get(), out.get(), nullptr, s.get());
    s.sync();
    return out.to_host();
}

std::vector<float> gemm(const HostMatrix& w, const float* x, int n_tok, size_t slab_elems) {
    Stream s;
    DevWeight dw(w);
    const size_t nx = static_cast<size_t>(n_tok) * static_cast<size_t>(w.cols);
    DevBuf<float> dx(x, nx);
    DevBuf<__half> x16(nx);
    DevBuf<float> y(static_cast<size_t>(n_tok) * static_cast<size_t>(w.rows));
    Gemm g(s.get(), slab_elems);
    to_f16(dx.get(), x16.get(), static_cast<int64_t>(nx), s.get());
    g.matmul(dw.m, x16.get(), n_tok, y.get(), w.rows, 0.0f);
    s.sync();
    return y.to_host();
}

std::vector<float> embed_rows(const HostMatrix& w, const int32_t* tokens, int n) {
    Stream s;
    DevWeight dw(w);
    DevBuf<int32_t> dt(tokens, static_cast<size_t>(n));
    DevBuf<float> out(static_cast<size_t>(n) * static_cast<size_t>(w.cols));
    cuda::embed_rows(dw.m, dt.get(), n, out.get(), s.get());
    s.sync();
    return out.to_host();
}

std::vector<uint16_t> dequant_rows_f16(const HostMatrix& w, int64_t r0, int64_t r1) {
    if (r0 < 0 || r1 > w.rows || r1 < r0) throw InvalidArgument("harness: rows out of range");
    Stream s;
    DevWeight dw(w);
    DevBuf<__half> out(static_cast<size_t>(r1 - r0) * static_cast<size_t>(w.cols));
    cuda::dequant_rows_f16(dw.m, r0, r1, out.get(), s.get());
    s.sync();
    const std::vector<__half> h = out.to_host();
    std::vector<uint16_t> bits(h.size());
    std::memcpy(bits.data(), h.data(), sizeof(uint16_t) * h.size());
    return bits;
}

std::vector<float> decode_row_host(const HostMatrix& w, int64_t r) {
    const size_t rb = checked_row_bytes(w);
    if (r < 0 || r >= w.rows) throw InvalidArgument("harness: row out of range");
    // 16-byte aligned copy: the plain types are read with 16-byte vector loads.
    std::vector<uint4> row((rb + 15) / 16);
    std::memcpy(row.data(), w.data + static_cast<size_t>(r) * rb, rb);
    const auto* base = reinterpret_cast<const uint8_t*>(row.data());
    std::vector<float> out(static_cast<size_t>(w.cols));
    const bool ok = dispatch_type(w.type, [&](auto t) {
        using B = Blk<decltype(t)::value>;
        for (int64_t b = 0; b < w.cols / B::QK; ++b) {
            float* dst = out.data() + b * B::QK;
            for (int p = 0; p < B::LPB; ++p) {
                float v[8];
                B::decode(base + b * B::BYTES, p, v);
                for (int i = 0; i < 4; ++i) {
                    dst[B::off0(p) + i] = v[i];
                    dst[B::off1(p) + i] = v[4 + i];
                }
            }
        }
    });
    if (!ok) throw InvalidArgument(std::string("harness: no decoder for ") + type_name(w.type));
    return out;
}

std::vector<float> rmsnorm(const float* x, const float* w, int n_rows, int dim, float eps) {
    Stream s;
    const size_t n = static_cast<size_t>(n_rows) * static_cast<size_t>(dim);
    DevBuf<float> dx(x, n), dw(w, static_cast<size_t>(dim)), dy(n);
    cuda::rmsnorm(dx.get(), dw.get(), dy.get(), n_rows, dim, eps, s.get());
    s.sync();
    return dy.to_host();
}

RopeResult rope_store_kv(const float* q, const float* k, const float* v, int n_tok, int n_head,
                         int n_head_kv, int head_dim, int n_rot, bool neox, float base, int pos0,
                         int n_ctx) {
    if (pos0 < 0 || pos0 + n_tok > n_ctx) throw InvalidArgument("harness: positions past n_ctx");
    Stream s;
    const size_t qn = static_cast<size_t>(n_tok) * n_head * head_dim;
    const size_t kn = static_cast<size_t>(n_tok) * n_head_kv * head_dim;
    const size_t cn = static_cast<size_t>(n_ctx) * n_head_kv * head_dim;
    DevBuf<float> dq(q, qn), dk(k, kn), dv(v, kn);
    DevBuf<__half> kc(cn), vc(cn);
    RopeArgs a;
    a.q = dq.get();
    a.k = dk.get();
    a.v = dv.get();
    a.k_cache = kc.get();
    a.v_cache = vc.get();
    a.n_tok = n_tok;
    a.n_head = n_head;
    a.n_head_kv = n_head_kv;
    a.head_dim = head_dim;
    a.n_rot = n_rot;
    a.neox = neox;
    a.base = base;
    a.pos0 = pos0;
    cuda::rope_store_kv(a, s.get());
    s.sync();
    RopeResult r;
    r.q = dq.to_host();
    for (const auto* src : {&kc, &vc}) {
        const std::vector<__half> h = src->to_host();
        std::vector<uint16_t>& dst = src == &kc ? r.k_cache : r.v_cache;
        dst.resize(h.size());
        std::memcpy(dst.data(), h.data(), sizeof(uint16_t) * h.size());
    }
    return r;
}

std::vector<float> attention(const float* q, const uint16_t* k, const uint16_t* v, int n_tok,
                             int n_head, int n_head_kv, int head_dim, int pos0, int n_ctx,
                             int split_len) {
    if (pos0 < 0 || pos0 + n_tok > n_ctx || split_len <= 0 || head_dim > kAttnMaxHeadDim) {
        throw InvalidArgument("harness: attention shape out of range");
    }
    Stream s;
    const size_t qn = static_cast<size_t>(n_tok) * n_head * head_dim;
    const size_t cn = static_cast<size_t>(n_ctx) * n_head_kv * head_dim;
    DevBuf<float> dq(q, qn), out(qn);
    DevBuf<__half> kc(reinterpret_cast<const __half*>(k), cn);
    DevBuf<__half> vc(reinterpret_cast<const __half*>(v), cn);
    const int n_split = static_cast<int>(ceil_div(n_ctx, split_len));
    DevBuf<float> scratch(attn_scratch_floats(n_tok, n_head, n_split, head_dim));
    AttnArgs a;
    a.q = dq.get();
    a.out = out.get();
    a.k_cache = kc.get();
    a.v_cache = vc.get();
    a.n_tok = n_tok;
    a.n_head = n_head;
    a.n_head_kv = n_head_kv;
    a.head_dim = head_dim;
    a.pos0 = pos0;
    a.split_len = split_len;
    a.n_split = n_split;
    a.part_o = scratch.get();
    a.part_ml = scratch.get() + static_cast<size_t>(n_tok) * n_head * n_split * head_dim;
    cuda::attention(a, s.get());
    s.sync();
    return out.to_host();
}

std::vector<float> swiglu(const float* g, const float* u, int64_t n, bool skip) {
    Stream s;
    const size_t sz = static_cast<size_t>(n);
    DevBuf<float> dg(g, sz), du(u, sz), out(sz);
    const int32_t flag = skip ? 1 : 0;
    DevBuf<int32_t> dskip(&flag, 1);
    cuda::swiglu(dg.get(), du.get(), out.get(), n, dskip.get(), s.get());
    s.sync();
    return out.to_host();
}

SkipGateWalk skip_gate_walk(int mode, const int32_t* hot, const float* thr, const int32_t* grant,
                            int n_layer, const float* h0, const float* norm_w, const float* f,
                            const float* comp, int dim, float eps) {
    Stream s;
    const size_t L = static_cast<size_t>(n_layer), d = static_cast<size_t>(dim);
    // The per-token control block, laid out as token_ctl_bytes describes.
    std::vector<uint8_t> ctl(token_ctl_bytes(n_layer));
    const TokenCtl head{0, 0, mode, n_layer};
    std::memcpy(ctl.data(), &head, sizeof head);
    uint8_t* tables = ctl.data() + sizeof head;
    std::memcpy(tables, hot, sizeof(int32_t) * L);
    std::memcpy(tables + sizeof(int32_t) * L, thr, sizeof(float) * L);
    std::memcpy(tables + 2 * sizeof(int32_t) * L, grant, sizeof(int32_t) * L);
    // Kind 2's t_in, t_gate, t_mid: NaN, every channel filter off (this walk is the block gate's).
    const std::vector<float> off(3 * L, std::numeric_limits<float>::quiet_NaN());
    std::memcpy(tables + 3 * sizeof(int32_t) * L, off.data(), sizeof(float) * off.size());
    DevBuf<uint8_t> dctl(ctl.data(), ctl.size());
    DevBuf<int32_t> budget(1), skipped(L), drops(3 * L);
    DevBuf<float> gate(L), dcomp(comp, L * d), dh(h0, d), dw(norm_w, d), hn(d), df(f, L * d);
    SkipGateView g =
        skip_gate_view(dctl.get(), n_layer, budget.get(), skipped.get(), gate.get(), drops.get());
    g.comp = dcomp.get();

    // The FFN stand-in: an identity F32 matrix, so the GEMV adds f[l] exactly.
    std::vector<float> eye(d * d, 0.0f);
    for (size_t i = 0; i < d; ++i) eye[i * d + i] = 1.0f;
    DevWeight id(HostMatrix{GGML_F32, reinterpret_cast<const uint8_t*>(eye.data()), dim, dim});
    const unsigned ctas = gemv_ctas(dim);
    DevBuf<double> parts(3 * static_cast<size_t>(ctas));

    SkipGateWalk r;
    r.hn.assign(L * d, 0.0f);
    for (int l = 0; l < n_layer; ++l) {
        ffn_begin(g, l, dh.get(), dw.get(), hn.get(), dim, eps, s.get());
        GemvArgs a;
        a.job[0].w = id.m.data;
        a.job[0].stride = id.m.stride;
        a.job[0].rows = dim;
        a.job[0].y = dh.get();
        a.cols = dim;
        a.x = df.get() + static_cast<size_t>(l) * d;
        a.accumulate = true;
        a.skip = skipped.get() + l;
        a.gate_part = parts.get();
        cuda::gemv(GGML_F32, a, s.get());
        ffn_end(g, l, parts.get(), static_cast<int>(ctas), s.get());
        s.sync();
        const std::vector<float> row = hn.to_host();
        std::memcpy(r.hn.data() + static_cast<size_t>(l) * d, row.data(), sizeof(float) * d);
        FFNSKIP_CUDA_CHECK(cudaMemset(hn.get(), 0, sizeof(float) * d));
    }
    r.skipped = skipped.to_host();
    r.gate = gate.to_host();
    r.h = dh.to_host();
    return r;
}

}  // namespace ffnskip::cuda::harness
