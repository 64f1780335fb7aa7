// The attention driver (task split, key-range merge) and the scalar block kernel.
#include "cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/ops_impl.h"
#include "fp16.h"

namespace ffnskip::cpu {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Decode splits the keys into ranges of about this many, merged afterwards: one step has only
// n_head_kv tasks otherwise (2 or 3 for small models), too few to keep the threads busy. The
// ranges depend on the context length only, never on the thread count, so results do too.
constexpr int kSplitKeys = 256;

}  // namespace

size_t attn_scratch_floats(int rows, int head_dim) {
    // q rows | K chunk | V chunk | scores (rows x chunk)
    return static_cast<size_t>(rows) * head_dim + 2 * static_cast<size_t>(kKeyChunk) * head_dim +
           static_cast<size_t>(rows) * kKeyChunk;
}

void attn_block_scalar(const AttnArgs& a, int kvh, int t0, int n_t, int k0, int k1, float* scratch,
                       float* o, float* m, float* l) {
    const int group = a.n_head / a.n_head_kv, hd = a.head_dim, rows = n_t * group;
    float* kf = scratch;                                   // [kKeyChunk][hd]
    float* vf = kf + static_cast<size_t>(kKeyChunk) * hd;  // [kKeyChunk][hd]
    float* s = vf + static_cast<size_t>(kKeyChunk) * hd;   // [kKeyChunk]
    std::fill(o, o + static_cast<size_t>(rows) * hd, 0.0f);
    std::fill(m, m + rows, kNegInf);
    std::fill(l, l + rows, 0.0f);
    const int kend = std::min(k1, a.pos0 + t0 + n_t);
    for (int j0 = k0; j0 < kend; j0 += kKeyChunk) {
        const int n = std::min(kKeyChunk, kend - j0);
        for (int j = 0; j < n; ++j) {
            const int64_t at = static_cast<int64_t>(j0 + j) * a.kv_stride + kvh * hd;
            for (int d = 0; d < hd; ++d) {
                kf[j * hd + d] = fp16_to_fp32(a.k[at + d]);
                vf[j * hd + d] = fp16_to_fp32(a.v[at + d]);
            }
        }
        for (int r = 0; r < rows; ++r) {
            const int t = r / group;
            const int nv = std::min(n, a.pos0 + t0 + t + 1 - j0);
            if (nv <= 0) continue;
            const float* q = a.q + (t0 + t) * a.q_stride + (kvh * group + r % group) * hd;
            float mc = kNegInf;
            for (int j = 0; j < nv; ++j) {
                float dot = 0;
                for (int d = 0; d < hd; ++d) dot += q[d] * kf[j * hd + d];
                s[j] = dot * a.scale;
                mc = std::max(mc, s[j]);
            }
            const float mn = std::max(m[r], mc);
            const float alpha = std::exp(m[r] - mn);  // 0 for the first keys (m = -inf)
            float* orow = o + static_cast<size_t>(r) * hd;
            for (int d = 0; d < hd; ++d) orow[d] *= alpha;
            double sum = 0;
            for (int j = 0; j < nv; ++j) {
                const float p = std::exp(s[j] - mn);
                sum += p;
                for (int d = 0; d < hd; ++d) orow[d] += p * vf[j * hd + d];
            }
            l[r] = l[r] * alpha + static_cast<float>(sum);
            m[r] = mn;
        }
    }
}

void attention(const AttnArgs& a, ThreadPool& pool, std::vector<float>& workspace, int key_splits) {
    if (a.n_tok <= 0) return;
    const int group = a.n_head / a.n_head_kv, hd = a.head_dim;
    AttnBlockFn block = attn_block_scalar;
#if defined(FFNSKIP_X86)
    if (use_avx2() && hd % 8 == 0) block = attn_block_avx2;
#endif
#if defined(FFNSKIP_NEON)
    if (use_neon() && hd % 4 == 0) block = attn_block_neon;
#endif
    const int tb = std::min(kQueryBlock, a.n_tok);
    const int n_qb = (a.n_tok + tb - 1) / tb;
    const int rows = tb * group;
    const int n_keys = a.pos0 + a.n_tok;
    const int n_chunks = (n_keys + kKeyChunk - 1) / kKeyChunk;
    // A prompt is never split: a query's result then does not depend on how the prompt was chunked.
    int splits = key_splits > 0 ? key_splits
                 : a.n_tok == 1 ? (n_keys + kSplitKeys - 1) / kSplitKeys
                                : 1;
    splits = std::min(splits, n_chunks);
    const int per_block = a.n_head_kv * splits;
    const int n_tasks = n_qb * per_block;

    const size_t part = static_cast<size_t>(rows) * (hd + 2);  // one task's o | m | l
    const size_t scratch = attn_scratch_floats(rows, hd);
    const size_t per_thread = scratch + part;
    const size_t need = static_cast<size_t>(pool.size()) * per_thread +
                        (splits > 1 ? static_cast<size_t>(n_tasks) * part : 0);
    if (workspace.size() < need) workspace.resize(need);
    float* partials = workspace.data() + static_cast<size_t>(pool.size()) * per_thread;

    auto out_row = [&](int t, int kvh, int r) {
        return a.out + (t + r / group) * a.out_stride + (kvh * group + r % group) * hd;
    };
    // Task order: the last query blocks first (they see the most keys), so the pool, which
    // hands tasks out in order, finishes with the short ones.
    pool.run(n_tasks, [&](int task, int thread) {
        const int qb = n_qb - 1 - task / per_block;
        const int kvh = task % per_block / splits, s = task % splits;
        const int t0 = qb * tb, n_t = std::min(tb, a.n_tok - t0);
        const int k0 = static_cast<int>(static_cast<int64_t>(n_chunks) * s / splits) * kKeyChunk;
        const int k1 =
            std::min(n_keys, static_cast<int>(static_cast<int64_t>(n_chunks) * (s + 1) / splits) *
                                 kKeyChunk);
        float* scr = workspace.data() + static_cast<size_t>(thread) * per_thread;
        float* o = splits > 1 ? partials + static_cast<size_t>(task) * part : scr + scratch;
        float* m = o + static_cast<size_t>(rows) * hd;
        float* l = m + rows;
        block(a, kvh, t0, n_t, k0, k1, scr, o, m, l);
        if (splits > 1) return;
        for (int r = 0; r < n_t * group; ++r) {
            const float inv = 1.0f / l[r];
            const float* src = o + static_cast<size_t>(r) * hd;
            float* dst = out_row(t0, kvh, r);
            for (int d = 0; d < hd; ++d) dst[d] = src[d] * inv;
        }
    });
    if (splits == 1) return;
    // out = sum_s e^(m_s - M) o_s / sum_s e^(m_s - M) l_s,  M = max_s m_s
    for (int task0 = 0; task0 < n_tasks; task0 += splits) {
        const int qb = n_qb - 1 - task0 / per_block, kvh = task0 % per_block / splits;
        const int t0 = qb * tb, n_t = std::min(tb, a.n_tok - t0);
        const float* p0 = partials + static_cast<size_t>(task0) * part;
        for (int r = 0; r < n_t * group; ++r) {
            float mx = kNegInf;
            for (int s = 0; s < splits; ++s) {
                mx = std::max(mx, p0[s * part + static_cast<size_t>(rows) * hd + r]);
            }
            float* dst = out_row(t0, kvh, r);
            std::fill(dst, dst + hd, 0.0f);
            float lsum = 0;
            for (int s = 0; s < splits; ++s) {
                const float* o = p0 + s * part;
                const float ms = o[static_cast<size_t>(rows) * hd + r];
                if (ms == kNegInf) continue;  // this key range is past the row's last key
                const float w = std::exp(ms - mx);
                lsum += w * o[static_cast<size_t>(rows) * (hd + 1) + r];
                for (int d = 0; d < hd; ++d) dst[d] += w * o[static_cast<size_t>(r) * hd + d];
            }
            const float inv = 1.0f / lsum;
            for (int d = 0; d < hd; ++d) dst[d] *= inv;
        }
    }
}

}  // namespace ffnskip::cpu
