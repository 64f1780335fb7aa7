// Split-K attention kernels (see attention.cuh).
#include <cmath>

#include "cuda/attention.cuh"

namespace ffnskip::cuda {

namespace {

constexpr int kAttnThreads = 128;  // 4 warps; each thread owns 2 output dims (head_dim <= 256)
constexpr int kAttnWarps = kAttnThreads / kWarp;
constexpr int kTile = 64;  // keys scored per step, kept in shared memory

__global__ void __launch_bounds__(kAttnThreads) attn_split_kernel(const AttnArgs a) {
    __shared__ float qs[kAttnMaxHeadDim];
    __shared__ float p[kTile];
    const int h = blockIdx.x, split = blockIdx.y, t = blockIdx.z;
    const int hd = a.head_dim, kvd = a.n_head_kv * hd;
    const int kvh = h / (a.n_head / a.n_head_kv);
    const int n_keys = (a.pos_dev ? *a.pos_dev : a.pos0) + t + 1;
    const size_t part = (static_cast<size_t>(t) * a.n_head + h) * a.n_split + split;
    const int start = split * a.split_len;
    if (start >= n_keys) return;  // the merge pass ignores splits past the position
    const int end = min(n_keys, start + a.split_len);

    const float scale = rsqrtf(static_cast<float>(hd));
    const float* q = a.q + (static_cast<size_t>(t) * a.n_head + h) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = q[d] * scale;
    __syncthreads();

    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
    const int d0 = 2 * threadIdx.x;  // this thread's output dims d0, d0 + 1
    const int half_hd = hd / 2;
    float m = -INFINITY, l = 0.0f, acc0 = 0.0f, acc1 = 0.0f;
    for (int tile = start; tile < end; tile += kTile) {
        const int nt = min(kTile, end - tile);
        // Scores: a warp per key, lanes over half2 pairs of dims.
        for (int j = warp; j < nt; j += kAttnWarps) {
            const __half2* k2 = reinterpret_cast<const __half2*>(
                a.k_cache + static_cast<size_t>(tile + j) * kvd + static_cast<size_t>(kvh) * hd);
            float s = 0.0f;
            for (int i = lane; i < half_hd; i += kWarp) {
                const float2 kf = __half22float2(k2[i]);
                s += qs[2 * i] * kf.x + qs[2 * i + 1] * kf.y;
            }
            s = warp_sum(s);
            if (lane == 0) p[j] = s;
        }
        __syncthreads();
        float tmax = -INFINITY;
        for (int j = 0; j < nt; ++j) tmax = fmaxf(tmax, p[j]);
        const float m_new = fmaxf(m, tmax);
        const float correction = __expf(m - m_new);  // 0 on the first tile (m = -inf)
        __syncthreads();                             // everyone has read the raw scores
        if (threadIdx.x < nt) p[threadIdx.x] = __expf(p[threadIdx.x] - m_new);
        __syncthreads();
        float psum = 0.0f;
        float a0 = 0.0f, a1 = 0.0f;
        if (d0 < hd) {
            const __half* vbase =
                a.v_cache + static_cast<size_t>(tile) * kvd + static_cast<size_t>(kvh) * hd + d0;
            for (int j = 0; j < nt; ++j) {
                const float pj = p[j];
                const float2 vf = __half22float2(
                    *reinterpret_cast<const __half2*>(vbase + static_cast<size_t>(j) * kvd));
                a0 += pj * vf.x;
                a1 += pj * vf.y;
                psum += pj;
            }
        } else {
            for (int j = 0; j < nt; ++j) psum += p[j];
        }
        l = l * correction + psum;
        acc0 = acc0 * correction + a0;
        acc1 = acc1 * correction + a1;
        m = m_new;
        __syncthreads();  // p is rewritten by the next tile
    }
    if (d0 < hd) {
        float* o = a.part_o + part * hd;
        o[d0] = acc0;
        o[d0 + 1] = acc1;
    }
    if (threadIdx.x == 0) {
        a.part_ml[2 * part] = m;
        a.part_ml[2 * part + 1] = l;
    }
}

// One block per (head, token): o = sum_s exp(m_s - M) o_s / sum_s exp(m_s - M) l_s.
__global__ void __launch_bounds__(kAttnThreads) attn_merge_kernel(const AttnArgs a) {
    const int h = blockIdx.x, t = blockIdx.y;
    const int hd = a.head_dim;
    const int n_keys = (a.pos_dev ? *a.pos_dev : a.pos0) + t + 1;
    const int live = min(a.n_split, (n_keys + a.split_len - 1) / a.split_len);
    const size_t base = (static_cast<size_t>(t) * a.n_head + h) * a.n_split;
    float mx = -INFINITY;
    for (int s = 0; s < live; ++s) mx = fmaxf(mx, a.part_ml[2 * (base + s)]);
    float denom = 0.0f;
    for (int s = 0; s < live; ++s) {
        denom += __expf(a.part_ml[2 * (base + s)] - mx) * a.part_ml[2 * (base + s) + 1];
    }
    const float inv = 1.0f / denom;
    float* out = a.out + (static_cast<size_t>(t) * a.n_head + h) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.0f;
        for (int s = 0; s < live; ++s) {
            o += __expf(a.part_ml[2 * (base + s)] - mx) * a.part_o[(base + s) * hd + d];
        }
        out[d] = o * inv;
    }
}

}  // namespace

void attention(const AttnArgs& a, cudaStream_t stream) {
    if (a.n_tok <= 0) return;
    attn_split_kernel<<<dim3(a.n_head, a.n_split, a.n_tok), kAttnThreads, 0, stream>>>(a);
    FFNSKIP_CUDA_LAUNCH_CHECK();
    attn_merge_kernel<<<dim3(a.n_head, a.n_tok), kAttnThreads, 0, stream>>>(a);
    FFNSKIP_CUDA_LAUNCH_CHECK();
}

}  // namespace ffnskip::cuda
