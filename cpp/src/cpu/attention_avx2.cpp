// The AVX2 + FMA + F16C attention block kernel (see attention.h for the task it computes).
// Per key chunk: K is converted to f32 transposed (dim-major), so the scores of 16 keys for 4
// query rows are broadcast(q[d]) x Kt[d] FMAs with no horizontal sums; V is converted row-major
// and accumulated as broadcast(p[j]) x V[j]. Scores are kept in log2 units (q is pre-scaled by
// scale * log2 e) so the softmax needs only 2^x.
#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/attention.h"
#include "cpu/kernels_avx2.h"
#include "cpu/math_avx2.h"

namespace ffnskip::cpu {

namespace {

using avx2::exp2_ps;
constexpr int KC = kKeyChunk;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline void transpose8(__m256 r[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

inline __m256 load_f16x8(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// kt[d * KC + j] = k[j][d] for j < n (zeros up to the next multiple of 8); vf[j * hd + d] =
// v[j][d].
void load_chunk(const uint16_t* k, const uint16_t* v, int64_t stride, int n, int hd, float* kt,
                float* vf) {
    for (int jb = 0; jb < n; jb += 8) {
        const int nk = std::min(8, n - jb);
        for (int d = 0; d < hd; d += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; ++i) {
                r[i] = i < nk ? load_f16x8(k + (jb + i) * stride + d) : _mm256_setzero_ps();
            }
            transpose8(r);
            for (int i = 0; i < 8; ++i) _mm256_storeu_ps(kt + (d + i) * KC + jb, r[i]);
        }
    }
    for (int j = 0; j < n; ++j) {
        for (int d = 0; d < hd; d += 8)
            _mm256_storeu_ps(vf + j * hd + d, load_f16x8(v + j * stride + d));
    }
}

// s[i][j] = q[i] . k[j] for R rows (stride hd) and keys j < width (a multiple of 16).
template <int R>
void scores_tile(const float* q, int hd, const float* kt, int width, float* s) {
    for (int kb = 0; kb < width; kb += 16) {
        __m256 acc[R][2];
        for (int i = 0; i < R; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
        for (int d = 0; d < hd; ++d) {
            const __m256 k0 = _mm256_loadu_ps(kt + d * KC + kb);
            const __m256 k1 = _mm256_loadu_ps(kt + d * KC + kb + 8);
            for (int i = 0; i < R; ++i) {
                const __m256 b = _mm256_broadcast_ss(q + i * hd + d);
                acc[i][0] = _mm256_fmadd_ps(b, k0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(b, k1, acc[i][1]);
            }
        }
        for (int i = 0; i < R; ++i) {
            _mm256_storeu_ps(s + i * KC + kb, acc[i][0]);
            _mm256_storeu_ps(s + i * KC + kb + 8, acc[i][1]);
        }
    }
}

// o[i] += sum_{j < nv} p[i][j] v[j] for R rows (o stride hd, p stride KC); hd % 8 == 0.
template <int R>
void pv_tile(const float* p, const float* vf, int hd, int nv, float* o) {
    int d0 = 0;
    for (; d0 + 16 <= hd; d0 += 16) {
        __m256 acc[R][2];
        for (int i = 0; i < R; ++i) {
            acc[i][0] = _mm256_loadu_ps(o + i * hd + d0);
            acc[i][1] = _mm256_loadu_ps(o + i * hd + d0 + 8);
        }
        for (int j = 0; j < nv; ++j) {
            const __m256 v0 = _mm256_loadu_ps(vf + j * hd + d0);
            const __m256 v1 = _mm256_loadu_ps(vf + j * hd + d0 + 8);
            for (int i = 0; i < R; ++i) {
                const __m256 b = _mm256_broadcast_ss(p + i * KC + j);
                acc[i][0] = _mm256_fmadd_ps(b, v0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(b, v1, acc[i][1]);
            }
        }
        for (int i = 0; i < R; ++i) {
            _mm256_storeu_ps(o + i * hd + d0, acc[i][0]);
            _mm256_storeu_ps(o + i * hd + d0 + 8, acc[i][1]);
        }
    }
    if (d0 < hd) {  // hd % 16 == 8
        __m256 acc[R];
        for (int i = 0; i < R; ++i) acc[i] = _mm256_loadu_ps(o + i * hd + d0);
        for (int j = 0; j < nv; ++j) {
            const __m256 v0 = _mm256_loadu_ps(vf + j * hd + d0);
            for (int i = 0; i < R; ++i) {
                acc[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(p + i * KC + j), v0, acc[i]);
            }
        }
        for (int i = 0; i < R; ++i) _mm256_storeu_ps(o + i * hd + d0, acc[i]);
    }
}

using ScoresFn = void (*)(const float*, int, const float*, int, float*);
using PvFn = void (*)(const float*, const float*, int, int, float*);
constexpr ScoresFn kScores[5] = {nullptr, scores_tile<1>, scores_tile<2>, scores_tile<3>,
                                 scores_tile<4>};
constexpr PvFn kPv[5] = {nullptr, pv_tile<1>, pv_tile<2>, pv_tile<3>, pv_tile<4>};

// Online-softmax update of one row over the chunk: s (log2 units, width lanes, the first nv
// valid) becomes p = 2^(s - m') with zeros past nv; returns the rescale factor 2^(m - m') of the
// row's earlier o and l.
float softmax_update(float* s, int nv, int width, float& m, float& l) {
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 ninf = _mm256_set1_ps(kNegInf);
    auto valid = [&](int j) {
        return _mm256_castsi256_ps(
            _mm256_cmpgt_epi32(_mm256_set1_epi32(nv - j), iota));  // lane < nv - j
    };
    __m256 mx = ninf;
    for (int j = 0; j < nv; j += 8) {
        mx = _mm256_max_ps(mx, _mm256_blendv_ps(ninf, _mm256_loadu_ps(s + j), valid(j)));
    }
    const float mn = std::max(m, avx2::reduce_max(mx));
    const __m256 mv = _mm256_set1_ps(mn);
    __m256 sum = _mm256_setzero_ps();
    for (int j = 0; j < width; j += 8) {
        const __m256 p =
            _mm256_and_ps(exp2_ps(_mm256_sub_ps(_mm256_loadu_ps(s + j), mv)), valid(j));
        _mm256_storeu_ps(s + j, p);
        sum = _mm256_add_ps(sum, p);
    }
    const float alpha = std::exp2(m - mn);  // 0 for the row's first keys (m = -inf)
    l = l * alpha + avx2::hsum(sum);
    m = mn;
    return alpha;
}

}  // namespace

void attn_block_avx2(const AttnArgs& a, int kvh, int t0, int n_t, int k0, int k1, float* scratch,
                     float* o, float* m, float* l) {
    const int group = a.n_head / a.n_head_kv, hd = a.head_dim, rows = n_t * group;
    float* qs = scratch;                              // [rows][hd], scaled to log2 units
    float* kt = qs + static_cast<size_t>(rows) * hd;  // [hd][KC]
    float* vf = kt + static_cast<size_t>(KC) * hd;    // [KC][hd]
    float* sc = vf + static_cast<size_t>(KC) * hd;    // [rows][KC]
    std::fill(o, o + static_cast<size_t>(rows) * hd, 0.0f);
    std::fill(m, m + rows, kNegInf);
    std::fill(l, l + rows, 0.0f);
    const int kend = std::min(k1, a.pos0 + t0 + n_t);
    if (kend <= k0) return;

    const __m256 qscale = _mm256_set1_ps(a.scale * 1.44269504088896341f);
    for (int r = 0; r < rows; ++r) {
        const float* q = a.q + (t0 + r / group) * a.q_stride + (kvh * group + r % group) * hd;
        for (int d = 0; d < hd; d += 8) {
            _mm256_storeu_ps(qs + r * hd + d, _mm256_mul_ps(_mm256_loadu_ps(q + d), qscale));
        }
    }
    // Visible keys of row r in the chunk at j0 (rows are in token order, so this never shrinks).
    auto visible = [&](int r, int j0, int n) {
        return std::max(0, std::min(n, a.pos0 + t0 + r / group + 1 - j0));
    };
    const int64_t col = static_cast<int64_t>(kvh) * hd;
    for (int j0 = k0; j0 < kend; j0 += KC) {
        const int n = std::min(KC, kend - j0);
        load_chunk(a.k + j0 * a.kv_stride + col, a.v + j0 * a.kv_stride + col, a.kv_stride, n, hd,
                   kt, vf);
        const int first = std::max(0, j0 - a.pos0 - t0) * group;  // first row that sees a key
        for (int r = first; r < rows; r += 4) {
            const int R = std::min(4, rows - r);
            const int nv_tile = visible(r + R - 1, j0, n);
            kScores[R](qs + r * hd, hd, kt, (nv_tile + 15) / 16 * 16, sc + r * KC);
            for (int i = r; i < r + R; ++i) {
                const float alpha = softmax_update(sc + i * KC, visible(i, j0, n),
                                                   (nv_tile + 7) / 8 * 8, m[i], l[i]);
                if (alpha != 1.0f) {
                    const __m256 av = _mm256_set1_ps(alpha);
                    float* orow = o + static_cast<size_t>(i) * hd;
                    for (int d = 0; d < hd; d += 8) {
                        _mm256_storeu_ps(orow + d, _mm256_mul_ps(_mm256_loadu_ps(orow + d), av));
                    }
                }
            }
            kPv[R](sc + r * KC, vf, hd, nv_tile, o + static_cast<size_t>(r) * hd);
        }
    }
    const float ln2 = 0.693147180559945309f;
    for (int r = 0; r < rows; ++r) m[r] *= ln2;
}

}  // namespace ffnskip::cpu
