// AVX2 + FMA + F16C kernels: float-weight matmul at few tokens, fast dequantization, activation
// quantization, f16 helpers, and the dispatch table. The quantized matmul lives in
// kernels_matvec_quant_avx2.cpp (one token) and kernels_gemm_quant_avx2.cpp (prompts), the
// prompt-sized float GEMM in kernels_gemm_f32_avx2.cpp.
#include "cpu/kernels_avx2.h"

#include <algorithm>
#include <atomic>

#include "cpu/kernels_impl.h"
#include "env_flag.h"
#include "fp16.h"
#include "ggml_types.h"

namespace ffnskip::cpu {
namespace avx2 {
namespace {

// ---- float weights (F32 / F16 / BF16) against f32 x ----------------------------------------
template <int kType>
inline __m256 load8(const uint8_t* row, int64_t k) {
    if constexpr (kType == GGML_F16) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k)));
    } else if constexpr (kType == GGML_BF16) {
        const __m256i v =
            _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    } else {
        return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + k);
    }
}

template <int kType>
inline float load1(const uint8_t* row, int64_t k) {
    const auto* h = reinterpret_cast<const uint16_t*>(row);
    if constexpr (kType == GGML_F16) return fp16_to_fp32(h[k]);
    if constexpr (kType == GGML_BF16) return bf16_to_fp32(h[k]);
    return reinterpret_cast<const float*>(row)[k];
}

template <int kType, int R, int NT>
void tile_float(const uint8_t* const* rows, const float* const* xs, int64_t cols, float* y,
                int64_t ldy, int64_t r, int64_t t0) {
    __m256 acc[R][NT];
    for (int i = 0; i < R; ++i)
        for (int j = 0; j < NT; ++j) acc[i][j] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= cols; k += 8) {
        for (int i = 0; i < R; ++i) {
            const __m256 wv = load8<kType>(rows[i], k);
            for (int j = 0; j < NT; ++j)
                acc[i][j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xs[j] + k), acc[i][j]);
        }
    }
    for (int i = 0; i < R; ++i) {
        for (int j = 0; j < NT; ++j) {
            float s = hsum(acc[i][j]);
            for (int64_t kk = k; kk < cols; ++kk) s += load1<kType>(rows[i], kk) * xs[j][kk];
            y[(t0 + j) * ldy + r + i] = s;
        }
    }
}

template <int kType>
void matmul_float(const WeightView& w, const float* x, int64_t n_tok, float* y, int64_t ldy,
                  int64_t r0, int64_t r1) {
    using Fn = void (*)(const uint8_t* const*, const float* const*, int64_t, float*, int64_t,
                        int64_t, int64_t);
    constexpr Fn kTiles[5][5] = {
        {},
        {nullptr, tile_float<kType, 1, 1>, tile_float<kType, 1, 2>, tile_float<kType, 1, 3>,
         tile_float<kType, 1, 4>},
        {nullptr, tile_float<kType, 2, 1>, tile_float<kType, 2, 2>, tile_float<kType, 2, 3>,
         tile_float<kType, 2, 4>},
        {},
        {nullptr, tile_float<kType, 4, 1>, nullptr, nullptr, nullptr},
    };
    const int rstep = n_tok == 1 ? 4 : 2;
    for (int64_t r = r0; r < r1;) {
        const int nr = r1 - r >= rstep ? rstep : 1;
        const uint8_t* rows[4];
        for (int i = 0; i < nr; ++i) rows[i] = w.data + static_cast<size_t>(r + i) * w.row_bytes;
        for (int64_t t = 0; t < n_tok;) {
            const int nt = static_cast<int>(std::min<int64_t>(n_tok - t, nr == 4 ? 1 : 4));
            const float* xs[4];
            for (int j = 0; j < nt; ++j) xs[j] = x + (t + j) * w.cols;
            kTiles[nr][nt](rows, xs, w.cols, y, ldy, r, t);
            t += nt;
        }
        r += nr;
    }
}

namespace {
// kernels.h gemm_amx: on from the start where the CPU can, unless FFNSKIP_AMX=0. The variable is
// read first, so that with it the process never asks Linux for the tile state (which also makes
// the kernel refuse later sigaltstack() stacks too small for that state).
bool amx_at_start() {
    return !env_set_to_zero("FFNSKIP_AMX") && cpu_has_amx_bf16();
}
std::atomic<bool> g_gemm_amx{amx_at_start()};
}  // namespace

void matmul(const WeightView& w, const float* x, const uint8_t* acts, int64_t n_tok, float* y,
            int64_t ldy, int64_t r0, int64_t r1) {
    const bool float_weights = act_kind(w.type) == ActKind::kF32;
    if (float_weights && n_tok >= kGemmMinTokens) return gemm_f32(w, x, n_tok, y, ldy, r0, r1);
    switch (w.type) {
        case GGML_F32:
            return matmul_float<GGML_F32>(w, x, n_tok, y, ldy, r0, r1);
        case GGML_F16:
            return matmul_float<GGML_F16>(w, x, n_tok, y, ldy, r0, r1);
        case GGML_BF16:
            return matmul_float<GGML_BF16>(w, x, n_tok, y, ldy, r0, r1);
        default:
            if (n_tok == 1) return matvec_quant(w, acts, y, r0, r1);
            if (n_tok >= kAmxMinTokens && x != nullptr &&
                g_gemm_amx.load(std::memory_order_relaxed))
                return amx::gemm(w, x, n_tok, y, ldy, r0, r1);
            return gemm_quant(w, acts, n_tok, y, ldy, r0, r1);
    }
}

// ---- dequantization ------------------------------------------------------------------------
// The reference rounds twice (d * q, then + m); an opaque register stops the compiler from fusing
// the two into one FMA, which would round once and differ in the last bit.
inline __m256 opaque(__m256 v) {
    __asm__("" : "+x"(v));
    return v;
}

// 32 signed byte codes -> dst[i] = scale * code (+ add, when kAdd).
template <bool kAdd>
inline void store_codes(__m256i codes, __m256 scale, __m256 add, float* dst) {
    const __m128i halves[2] = {_mm256_castsi256_si128(codes), _mm256_extracti128_si256(codes, 1)};
    for (int h = 0; h < 2; ++h) {
        for (int q = 0; q < 2; ++q) {
            const __m128i part = q ? _mm_unpackhi_epi64(halves[h], halves[h]) : halves[h];
            __m256 v = opaque(_mm256_mul_ps(scale, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part))));
            if (kAdd) v = _mm256_add_ps(v, add);
            _mm256_storeu_ps(dst + 16 * h + 8 * q, v);
        }
    }
}

template <class T>
void deq32(const void* src, float* dst, int64_t nb) {
    const auto* b = static_cast<const typename T::Block*>(src);
    for (int64_t i = 0; i < nb; ++i, dst += 32) {
        store_codes<T::kMin>(T::codes(b[i]), _mm256_set1_ps(half(b[i].d)),
                             _mm256_set1_ps(T::min(b[i])), dst);
    }
}

template <class Block>
void deq_q45k(const void* src, float* dst, int64_t nsb) {
    const auto* b = static_cast<const Block*>(src);
    for (int64_t i = 0; i < nsb; ++i) {
        uint8_t sc[8], mn[8];
        scale_min_k4(b[i].scales, sc, mn);
        const float d = half(b[i].d), dmin = half(b[i].dmin);
        for (int j = 0; j < 8; ++j, dst += 32) {
            __m256i codes;
            if constexpr (sizeof(Block) == sizeof(block_q5_K)) {
                codes = q5k_codes(b[i].qs, reinterpret_cast<const block_q5_K&>(b[i]).qh, j);
            } else {
                codes = q4k_codes(b[i].qs, j);
            }
            const float dl = d * static_cast<float>(sc[j]), ml = dmin * static_cast<float>(mn[j]);
            store_codes<true>(codes, _mm256_set1_ps(dl), _mm256_set1_ps(-ml), dst);
        }
    }
}

void deq_q6k(const void* src, float* dst, int64_t nsb) {
    const auto* b = static_cast<const block_q6_K*>(src);
    for (int64_t i = 0; i < nsb; ++i) {
        const float d = half(b[i].d);
        for (int g = 0; g < 8; ++g) {
            const __m256i codes = _mm256_sub_epi8(q6k_codes(b[i], g), _mm256_set1_epi8(32));
            const __m128i c[2] = {_mm256_castsi256_si128(codes),
                                  _mm256_extracti128_si256(codes, 1)};
            for (int h = 0; h < 2; ++h, dst += 16) {
                const __m256 dl = _mm256_set1_ps(d * static_cast<float>(b[i].scales[2 * g + h]));
                const __m128i hi8 = _mm_unpackhi_epi64(c[h], c[h]);
                _mm256_storeu_ps(dst,
                                 _mm256_mul_ps(dl, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c[h]))));
                _mm256_storeu_ps(dst + 8,
                                 _mm256_mul_ps(dl, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi8))));
            }
        }
    }
}

void deq_half(const uint16_t* src, float* dst, int64_t n, bool bf16) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
        const __m256 v = bf16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
                              : _mm256_cvtph_ps(h);
        _mm256_storeu_ps(dst + i, v);
    }
    for (; i < n; ++i) dst[i] = bf16 ? bf16_to_fp32(src[i]) : fp16_to_fp32(src[i]);
}

}  // namespace

void dequantize_row(uint32_t type, const void* src, float* dst, int64_t n) {
    switch (type) {
        case GGML_F16:
            return deq_half(static_cast<const uint16_t*>(src), dst, n, false);
        case GGML_BF16:
            return deq_half(static_cast<const uint16_t*>(src), dst, n, true);
        case GGML_Q4_0:
            return deq32<Q4_0>(src, dst, n / 32);
        case GGML_Q4_1:
            return deq32<Q4_1>(src, dst, n / 32);
        case GGML_Q5_0:
            return deq32<Q5_0>(src, dst, n / 32);
        case GGML_Q5_1:
            return deq32<Q5_1>(src, dst, n / 32);
        case GGML_Q8_0:
            return deq32<Q8_0>(src, dst, n / 32);
        case GGML_Q4_K:
            return deq_q45k<block_q4_K>(src, dst, n / 256);
        case GGML_Q5_K:
            return deq_q45k<block_q5_K>(src, dst, n / 256);
        case GGML_Q6_K:
            return deq_q6k(src, dst, n / 256);
        default:
            return dequantize_row_ref(type, src, dst, n);  // F32: a copy
    }
}

// ---- activation quantization ---------------------------------------------------------------
void prepare_row(const float* x, int64_t cols, int group, uint8_t* out) {
    const int64_t nb = cols / kActBlock;
    auto* qs = reinterpret_cast<int16_t*>(out);
    auto* d = reinterpret_cast<float*>(out + nb * kActBlock * sizeof(int16_t));
    float* s = d + nb;
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256 zero = _mm256_setzero_ps();
    for (int64_t g0 = 0; g0 < nb; g0 += group) {
        const int64_t g1 = std::min<int64_t>(nb, g0 + group);
        // x * 0 is NaN exactly for Inf/NaN inputs; such a group is marked NaN, as in the scalar
        // path (max_ps would silently drop NaN from amax).
        __m256 m = zero, z = zero;
        for (const float* p = x + g0 * kActBlock; p < x + g1 * kActBlock; p += 8) {
            const __m256 v = _mm256_loadu_ps(p);
            m = _mm256_max_ps(m, _mm256_and_ps(v, abs_mask));
            z = _mm256_add_ps(z, _mm256_mul_ps(v, zero));
        }
        if (_mm256_movemask_ps(_mm256_cmp_ps(z, z, _CMP_UNORD_Q)) != 0) {
            for (int64_t b = g0; b < g1; ++b) set_nonfinite_block(qs + b * kActBlock, d + b, s + b);
            continue;
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const __m256 id = _mm256_set1_ps(amax > kActMinMax ? kActMax / amax : 0.0f);
        for (int64_t b = g0; b < g1; ++b) {
            const float* xb = x + b * kActBlock;
            __m256i q[4];
            // cvtps rounds to nearest even (the default MXCSR mode), as nearbyint in the scalar
            // path.
            for (int i = 0; i < 4; ++i)
                q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 8 * i), id));
            // packs works per lane: (0-7, 8-15) gives 64-bit groups 0-3, 8-11, 4-7, 12-15.
            const __m256i lo = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[0], q[1]), 0xD8);
            const __m256i hi = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[2], q[3]), 0xD8);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs + b * kActBlock), lo);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs + b * kActBlock + 16), hi);
            const __m256i sum8 =
                _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            __m128i s4 =
                _mm_add_epi32(_mm256_castsi256_si128(sum8), _mm256_extracti128_si256(sum8, 1));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
            d[b] = amax / kActMax;
            s[b] = d[b] * static_cast<float>(_mm_cvtsi128_si32(s4));
        }
    }
}

namespace {

// ---- f16 helpers -------------------------------------------------------------------------------
float dot_f16_f32(const uint16_t* a, const float* b, int64_t n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(
            _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i))),
            _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(
            _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i + 8))),
            _mm256_loadu_ps(b + i + 8), acc1);
    }
    for (; i + 8 <= n; i += 8) {
        acc0 = _mm256_fmadd_ps(
            _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i))),
            _mm256_loadu_ps(b + i), acc0);
    }
    float s = hsum(_mm256_add_ps(acc0, acc1));
    for (; i < n; ++i) s += fp16_to_fp32(a[i]) * b[i];
    return s;
}

void axpy_f16(float a, const uint16_t* x, float* y, int64_t n) {
    const __m256 av = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 xv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, xv, _mm256_loadu_ps(y + i)));
    }
    for (; i < n; ++i) y[i] += a * fp16_to_fp32(x[i]);
}

void f32_to_f16(const float* x, uint16_t* y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), h);
    }
    for (; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
}

}  // namespace
}  // namespace avx2

const KernelTable kAvx2Kernels = {avx2::prepare_row, avx2::matmul,        avx2::dequantize_row,
                                  avx2::dot_f16_f32, avx2::axpy_f16,      avx2::f32_to_f16,
                                  avx2::matvec_rows, avx2::sparse_matvec, avx2::matmul_each_token};

bool gemm_amx() {
    return avx2::g_gemm_amx.load();
}

bool set_gemm_amx(bool on) {
    if (on && !cpu_has_amx_bf16()) return false;
    avx2::g_gemm_amx.store(on);
    return true;
}

}  // namespace ffnskip::cpu
