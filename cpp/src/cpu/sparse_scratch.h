// Per-thread scratch of the x86 channel-sparse kernels (sparse_x86.h), sized and zeroed here, in
// a file built for the baseline ISA, from thread_scratch.h's buffers (which says why the kernel
// files keep no std::vector of their own).
#pragma once

#include <cstddef>
#include <cstdint>

namespace ffnskip::cpu {

struct SparseScratch {
    float* y = nullptr;   // n_out outputs, zeroed
    float* z = nullptr;   // with `super`: a K-quant super-block's sums (n_out, zeroed), else null
    float* zm = nullptr;  // the same for its min terms
    void* acc = nullptr;  // acc_bytes, 64-byte aligned, not zeroed
    const uint8_t** rows = nullptr;  // n_rows entries, not zeroed
};

// This thread's scratch for one product; valid until the thread's next call.
SparseScratch sparse_scratch(size_t n_out, bool super, size_t acc_bytes, size_t n_rows);

}  // namespace ffnskip::cpu
