// RMSNorm and RoPE kernels (see norm_rope.cuh).
#include "cuda/norm_rope.cuh"

namespace ffnskip::cuda {

namespace {

constexpr int kRopeThreads = 128;
constexpr int kMaxRotPairs = 256;  // n_rot <= 512; the backend checks head_dim <= 256

__global__ void __launch_bounds__(kNormThreads)
    rmsnorm_kernel(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y,
                   int dim, float eps) {
    const size_t off = static_cast<size_t>(blockIdx.x) * dim;
    rmsnorm_row(x + off, w, y + off, dim, eps);
}

__device__ __forceinline__ void rotate(float* p, int i0, int i1, float c, float s) {
    const float a = p[i0], b = p[i1];
    p[i0] = a * c - b * s;
    p[i1] = a * s + b * c;
}

// One block per token. The angles are computed in double, as the CPU backend does, so both
// backends rotate by the same float cos/sin even at large positions.
__global__ void __launch_bounds__(kRopeThreads) rope_store_kernel(const RopeArgs a) {
    __shared__ float cs[kMaxRotPairs], sn[kMaxRotPairs];
    const int t = blockIdx.x;
    const int pos = (a.pos_dev ? *a.pos_dev : a.pos0) + t;
    const int half = a.n_rot / 2;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const double theta =
            pos * pow(static_cast<double>(a.base), -2.0 * i / static_cast<double>(a.n_rot)) *
            a.scale;
        double s, c;
        sincos(theta, &s, &c);
        cs[i] = static_cast<float>(c);
        sn[i] = static_cast<float>(s);
    }
    __syncthreads();

    const int hd = a.head_dim, kvd = a.n_head_kv * hd;
    float* q = a.q + static_cast<size_t>(t) * a.n_head * hd;
    // Each thread rotates whole pairs; NORM pairs are (2i, 2i+1), NEOX pairs (i, i + half).
    for (int j = threadIdx.x; j < a.n_head * half; j += blockDim.x) {
        const int h = j / half, i = j % half;
        float* p = q + h * hd;
        if (a.neox) {
            rotate(p, i, i + half, cs[i], sn[i]);
        } else {
            rotate(p, 2 * i, 2 * i + 1, cs[i], sn[i]);
        }
    }
    const float* k = a.k + static_cast<size_t>(t) * kvd;
    const float* v = a.v + static_cast<size_t>(t) * kvd;
    __half* kc = a.k_cache + static_cast<size_t>(pos) * kvd;
    __half* vc = a.v_cache + static_cast<size_t>(pos) * kvd;
    // k: thread per element; the rotation partner is read from the unrotated input.
    for (int e = threadIdx.x; e < kvd; e += blockDim.x) {
        const int d = e % hd;
        const float* kh = k + (e - d);
        float out = k[e];
        if (d < a.n_rot) {
            int i, partner;
            float sign;
            if (a.neox) {
                i = d < half ? d : d - half;
                partner = d < half ? d + half : d - half;
                sign = d < half ? -1.0f : 1.0f;
            } else {
                i = d / 2;
                partner = d ^ 1;
                sign = (d & 1) ? 1.0f : -1.0f;
            }
            // first of a pair: a*c - b*s; second: a*s + b*c (a = first, b = second)
            out = sign < 0 ? kh[d] * cs[i] - kh[partner] * sn[i]
                           : kh[partner] * sn[i] + kh[d] * cs[i];
        }
        kc[e] = __float2half_rn(out);
        vc[e] = __float2half_rn(v[e]);
    }
}

}  // namespace

void rmsnorm(const float* x, const float* w, float* y, int n_rows, int dim, float eps,
             cudaStream_t stream) {
    if (n_rows <= 0) return;
    rmsnorm_kernel<<<n_rows, kNormThreads, 0, stream>>>(x, w, y, dim, eps);
    FFNSKIP_CUDA_LAUNCH_CHECK();
}

void rope_store_kv(const RopeArgs& a, cudaStream_t stream) {
    if (a.n_tok <= 0) return;
    rope_store_kernel<<<a.n_tok, kRopeThreads, 0, stream>>>(a);
    FFNSKIP_CUDA_LAUNCH_CHECK();
}

}  // namespace ffnskip::cuda
