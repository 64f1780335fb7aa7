// Prompt-sized matmul on AVX2+FMA for F32/F16/BF16 weights: y[t][r] = sum_k x[t][k] * W[r][k] as
// an f32 GEMM (any weight type works; quantized ones are faster on the integer kernels).
//
// A panel of 16 weight rows x 256 columns is dequantized once and stored transposed (k-major,
// 16 floats per k, 16 KiB: stays in L1); the micro-kernel then holds a 6-token x 16-row output
// tile in 12 registers and does 12 FMAs per k against two panel loads and six broadcasts of x,
// so it runs at the FMA rate whatever the weight type.
#include <algorithm>
#include <vector>

#include "cpu/kernels_avx2.h"
#include "cpu/kernels_impl.h"
#include "ggml_types.h"

namespace ffnskip::cpu::avx2 {

namespace {

constexpr int kRows = 16;    // panel height (two ymm)
constexpr int kTok = 6;      // tokens per micro-tile
constexpr int64_t kK = 256;  // panel width: a multiple of every block size

// acc (NT x 16, in c) += x[t][k0 .. k0 + kc) . panel
template <int NT>
void micro(const float* panel, const float* const* xs, int64_t kc, float* c) {
    __m256 acc[NT][2];
    for (int t = 0; t < NT; ++t) {
        acc[t][0] = _mm256_load_ps(c + 16 * t);
        acc[t][1] = _mm256_load_ps(c + 16 * t + 8);
    }
    for (int64_t k = 0; k < kc; ++k) {
        const __m256 w0 = _mm256_load_ps(panel + 16 * k), w1 = _mm256_load_ps(panel + 16 * k + 8);
        for (int t = 0; t < NT; ++t) {
            const __m256 xb = _mm256_broadcast_ss(xs[t] + k);
            acc[t][0] = _mm256_fmadd_ps(w0, xb, acc[t][0]);
            acc[t][1] = _mm256_fmadd_ps(w1, xb, acc[t][1]);
        }
    }
    for (int t = 0; t < NT; ++t) {
        _mm256_store_ps(c + 16 * t, acc[t][0]);
        _mm256_store_ps(c + 16 * t + 8, acc[t][1]);
    }
}

using MicroFn = void (*)(const float*, const float* const*, int64_t, float*);
constexpr MicroFn kMicro[kTok + 1] = {nullptr,  micro<1>, micro<2>, micro<3>,
                                      micro<4>, micro<5>, micro<6>};

// Rows [r, r + nr) x columns [k0, k0 + kc) -> panel[k][i] (rows past nr are zero).
void pack_panel(const WeightView& w, int64_t r, int nr, int64_t k0, int64_t kc, int64_t bs,
                size_t bbytes, float* rowbuf, float* panel) {
    for (int i = 0; i < kRows; ++i) {
        float* dst = rowbuf + i * kK;
        if (i < nr) {
            const uint8_t* src = w.data + static_cast<size_t>(r + i) * w.row_bytes +
                                 static_cast<size_t>(k0 / bs) * bbytes;
            dequantize_row(w.type, src, dst, kc);
        } else {
            std::fill(dst, dst + kc, 0.0f);
        }
    }
    // 8x8 transposes: rowbuf[i][k] -> panel[k][i].
    for (int64_t k = 0; k + 8 <= kc; k += 8) {
        for (int i0 = 0; i0 < kRows; i0 += 8) {
            __m256 v[8];
            for (int j = 0; j < 8; ++j) v[j] = _mm256_loadu_ps(rowbuf + (i0 + j) * kK + k);
            const __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);
            const __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);
            const __m256 t4 = _mm256_unpacklo_ps(v[4], v[5]), t5 = _mm256_unpackhi_ps(v[4], v[5]);
            const __m256 t6 = _mm256_unpacklo_ps(v[6], v[7]), t7 = _mm256_unpackhi_ps(v[6], v[7]);
            const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
            const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
            const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
            const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            const __m256 o[8] = {
                _mm256_permute2f128_ps(s0, s4, 0x20), _mm256_permute2f128_ps(s1, s5, 0x20),
                _mm256_permute2f128_ps(s2, s6, 0x20), _mm256_permute2f128_ps(s3, s7, 0x20),
                _mm256_permute2f128_ps(s0, s4, 0x31), _mm256_permute2f128_ps(s1, s5, 0x31),
                _mm256_permute2f128_ps(s2, s6, 0x31), _mm256_permute2f128_ps(s3, s7, 0x31),
            };
            for (int j = 0; j < 8; ++j) _mm256_store_ps(panel + (k + j) * kRows + i0, o[j]);
        }
    }
    for (int64_t k = kc & ~int64_t{7}; k < kc; ++k) {
        for (int i = 0; i < kRows; ++i) panel[k * kRows + i] = rowbuf[i * kK + k];
    }
}

template <class T>
struct AlignedBuf {
    std::vector<T> v;
    T* get(size_t n) {
        v.resize(n + 32 / sizeof(T));
        auto p = reinterpret_cast<uintptr_t>(v.data());
        return reinterpret_cast<T*>((p + 31) & ~uintptr_t{31});
    }
};

}  // namespace

void gemm_f32(const WeightView& w, const float* x, int64_t n_tok, float* y, int64_t ldy, int64_t r0,
              int64_t r1) {
    const TypeInfo* ti = type_info(w.type);
    const int64_t bs = ti->block_size;
    // Per-thread scratch, reused across calls: the engine calls this from its pool threads.
    thread_local AlignedBuf<float> rowbuf_s, panel_s, c_s;
    float* rowbuf = rowbuf_s.get(kRows * kK);
    float* panel = panel_s.get(kRows * kK);
    float* c = c_s.get(static_cast<size_t>(n_tok) * kRows);
    for (int64_t r = r0; r < r1; r += kRows) {
        const int nr = static_cast<int>(std::min<int64_t>(kRows, r1 - r));
        std::fill(c, c + n_tok * kRows, 0.0f);
        for (int64_t k0 = 0; k0 < w.cols; k0 += kK) {
            const int64_t kc = std::min(kK, w.cols - k0);
            pack_panel(w, r, nr, k0, kc, bs, ti->block_bytes, rowbuf, panel);
            for (int64_t t = 0; t < n_tok; t += kTok) {
                const int nt = static_cast<int>(std::min<int64_t>(kTok, n_tok - t));
                const float* xs[kTok];
                for (int j = 0; j < nt; ++j) xs[j] = x + (t + j) * w.cols + k0;
                kMicro[nt](panel, xs, kc, c + t * kRows);
            }
        }
        for (int64_t t = 0; t < n_tok; ++t)
            std::copy(c + t * kRows, c + t * kRows + nr, y + t * ldy + r);
    }
}

}  // namespace ffnskip::cpu::avx2
