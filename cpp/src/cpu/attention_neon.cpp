// The NEON attention block kernel (see attention.h for the task it computes; the AArch64
// counterpart of attention_avx2.cpp). Per key chunk: K is converted to f32 transposed (dim-major),
// so the scores of 16 keys for 4 query rows are FMAs by lane of q with no horizontal sums; V is
// converted row-major and accumulated as p[j] x V[j]. Scores are kept in log2 units (q is
// pre-scaled by scale * log2 e) so the softmax needs only 2^x. Needs head_dim % 4 == 0.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "cpu/attention.h"
#include "cpu/math_neon.h"

namespace ffnskip::cpu {

namespace {

using neon::exp2_ps;
constexpr int KC = kKeyChunk;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline float32x4_t load_f16x4(const uint16_t* p) {
    return vcvt_f32_f16(vld1_f16(reinterpret_cast<const float16_t*>(p)));
}

// kt[d * KC + j] = k[j][d] for j < n (zeros up to the next multiple of 4); vf[j * hd + d] =
// v[j][d].
void load_chunk(const uint16_t* k, const uint16_t* v, int64_t stride, int n, int hd, float* kt,
                float* vf) {
    for (int jb = 0; jb < n; jb += 4) {
        const int nk = std::min(4, n - jb);
        for (int d = 0; d < hd; d += 4) {
            float32x4_t r[4];
            for (int i = 0; i < 4; ++i)
                r[i] = i < nk ? load_f16x4(k + (jb + i) * stride + d) : vdupq_n_f32(0.0f);
            neon::transpose4(r);
            for (int i = 0; i < 4; ++i) vst1q_f32(kt + (d + i) * KC + jb, r[i]);
        }
    }
    for (int j = 0; j < n;
         ++j) {  // 8 values per load: a decode step converts more than it multiplies
        const uint16_t* src = v + j * stride;
        float* dst = vf + j * hd;
        int d = 0;
        for (; d + 8 <= hd; d += 8) {
            const float16x8_t h = vld1q_f16(reinterpret_cast<const float16_t*>(src + d));
            vst1q_f32(dst + d, vcvt_f32_f16(vget_low_f16(h)));
            vst1q_f32(dst + d + 4, vcvt_high_f32_f16(h));
        }
        if (d < hd) vst1q_f32(dst + d, load_f16x4(src + d));
    }
}

// s[i][j] = q[i] . k[j] for R rows (stride hd) and keys j < width (a multiple of 16).
template <int R>
void scores_tile(const float* q, int hd, const float* kt, int width, float* s) {
    for (int kb = 0; kb < width; kb += 16) {
        float32x4_t acc[R][4];
        for (int i = 0; i < R; ++i)
            for (int c = 0; c < 4; ++c) acc[i][c] = vdupq_n_f32(0.0f);
        for (int d = 0; d < hd; d += 4) {
            float32x4_t qv[R];
            for (int i = 0; i < R; ++i) qv[i] = vld1q_f32(q + i * hd + d);
            auto dim = [&](auto lane) {
                constexpr int L = decltype(lane)::value;
                const float32x4x4_t kv = vld1q_f32_x4(kt + (d + L) * KC + kb);
                for (int i = 0; i < R; ++i)
                    for (int c = 0; c < 4; ++c)
                        acc[i][c] = vfmaq_laneq_f32(acc[i][c], kv.val[c], qv[i], L);
            };
            dim(std::integral_constant<int, 0>{});
            dim(std::integral_constant<int, 1>{});
            dim(std::integral_constant<int, 2>{});
            dim(std::integral_constant<int, 3>{});
        }
        for (int i = 0; i < R; ++i)
            for (int c = 0; c < 4; ++c) vst1q_f32(s + i * KC + kb + 4 * c, acc[i][c]);
    }
}

// o[i] += sum_{j < nv} p[i][j] v[j] for R rows (o stride hd, p stride KC); hd % 4 == 0.
template <int R>
void pv_tile(const float* p, const float* vf, int hd, int nv, float* o) {
    int d0 = 0;
    for (; d0 + 16 <= hd; d0 += 16) {
        float32x4_t acc[R][4];
        for (int i = 0; i < R; ++i)
            for (int c = 0; c < 4; ++c) acc[i][c] = vld1q_f32(o + i * hd + d0 + 4 * c);
        for (int j = 0; j < nv; ++j) {
            const float32x4x4_t v = vld1q_f32_x4(vf + j * hd + d0);
            for (int i = 0; i < R; ++i)
                for (int c = 0; c < 4; ++c)
                    acc[i][c] = vfmaq_n_f32(acc[i][c], v.val[c], p[i * KC + j]);
        }
        for (int i = 0; i < R; ++i)
            for (int c = 0; c < 4; ++c) vst1q_f32(o + i * hd + d0 + 4 * c, acc[i][c]);
    }
    for (; d0 < hd; d0 += 4) {  // hd % 16 in {4, 8, 12}
        float32x4_t acc[R];
        for (int i = 0; i < R; ++i) acc[i] = vld1q_f32(o + i * hd + d0);
        for (int j = 0; j < nv; ++j) {
            const float32x4_t v = vld1q_f32(vf + j * hd + d0);
            for (int i = 0; i < R; ++i) acc[i] = vfmaq_n_f32(acc[i], v, p[i * KC + j]);
        }
        for (int i = 0; i < R; ++i) vst1q_f32(o + i * hd + d0, acc[i]);
    }
}

using ScoresFn = void (*)(const float*, int, const float*, int, float*);
using PvFn = void (*)(const float*, const float*, int, int, float*);
constexpr ScoresFn kScores[5] = {nullptr, scores_tile<1>, scores_tile<2>, scores_tile<3>,
                                 scores_tile<4>};
constexpr PvFn kPv[5] = {nullptr, pv_tile<1>, pv_tile<2>, pv_tile<3>, pv_tile<4>};

// Online-softmax update of one row over the chunk: s (log2 units, width lanes, the first nv
// valid) becomes p = 2^(s - m') with zeros past nv; returns the rescale factor 2^(m - m') of the
// row's earlier o and l. Lanes past nv may hold anything (stale or NaN): they are masked by bits.
float softmax_update(float* s, int nv, int width, float& m, float& l) {
    static const int32_t kIota[4] = {0, 1, 2, 3};
    const int32x4_t iota = vld1q_s32(kIota);
    const float32x4_t ninf = vdupq_n_f32(kNegInf);
    auto valid = [&](int j) { return vcltq_s32(iota, vdupq_n_s32(nv - j)); };  // lane < nv - j
    float32x4_t mx = ninf;
    for (int j = 0; j < nv; j += 4) mx = vmaxq_f32(mx, vbslq_f32(valid(j), vld1q_f32(s + j), ninf));
    const float mn = std::max(m, vmaxvq_f32(mx));
    const float32x4_t mv = vdupq_n_f32(mn);
    float32x4_t sum = vdupq_n_f32(0.0f);
    for (int j = 0; j < width; j += 4) {
        const float32x4_t e = exp2_ps(vsubq_f32(vld1q_f32(s + j), mv));
        const float32x4_t p = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(e), valid(j)));
        vst1q_f32(s + j, p);
        sum = vaddq_f32(sum, p);
    }
    const float alpha = std::exp2(m - mn);  // 0 for the row's first keys (m = -inf)
    l = l * alpha + vaddvq_f32(sum);
    m = mn;
    return alpha;
}

}  // namespace

void attn_block_neon(const AttnArgs& a, int kvh, int t0, int n_t, int k0, int k1, float* scratch,
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

    const float qscale = a.scale * 1.44269504088896341f;
    for (int r = 0; r < rows; ++r) {
        const float* q = a.q + (t0 + r / group) * a.q_stride + (kvh * group + r % group) * hd;
        for (int d = 0; d < hd; d += 4)
            vst1q_f32(qs + r * hd + d, vmulq_n_f32(vld1q_f32(q + d), qscale));
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
                                                   (nv_tile + 3) / 4 * 4, m[i], l[i]);
                if (alpha != 1.0f) {
                    float* orow = o + static_cast<size_t>(i) * hd;
                    for (int d = 0; d < hd; d += 4)
                        vst1q_f32(orow + d, vmulq_n_f32(vld1q_f32(orow + d), alpha));
                }
            }
            kPv[R](sc + r * KC, vf, hd, nv_tile, o + static_cast<size_t>(r) * hd);
        }
    }
    const float ln2 = 0.693147180559945309f;
    for (int r = 0; r < rows; ++r) m[r] *= ln2;
}

}  // namespace ffnskip::cpu
