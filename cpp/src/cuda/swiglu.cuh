// SwiGLU on the device: the FFN's elementwise step between its W_gate/W_up projections and
// W_down. Decode fuses it into gemv_swiglu (gemv.cuh) when W_gate and W_up share a type; channel
// sparsity's filtered form is channel_swiglu (skip_gate.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace ffnskip::cuda {

// out[i] = silu(g[i]) * u[i] for i < n; returns at once when skip && *skip (unfused decode path
// for gate/up matrices of different types, and the batched path with skip = nullptr).
void swiglu(const float* g, const float* u, float* out, int64_t n, const int32_t* skip,
            cudaStream_t stream);

}  // namespace ffnskip::cuda
