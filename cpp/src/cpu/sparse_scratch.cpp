#include "cpu/sparse_scratch.h"

#include <algorithm>

#include "cpu/thread_scratch.h"

namespace ffnskip::cpu {

namespace {
float* zeroed_floats(ScratchSlot slot, size_t n) {
    auto* f = static_cast<float*>(thread_scratch(slot, n * sizeof(float)));
    std::fill(f, f + n, 0.0f);
    return f;
}
}  // namespace

SparseScratch sparse_scratch(size_t n_out, bool super, size_t acc_bytes, size_t n_rows) {
    SparseScratch s;
    s.y = zeroed_floats(ScratchSlot::kSparseY, n_out);
    if (super) {
        s.z = zeroed_floats(ScratchSlot::kSparseZ, n_out);
        s.zm = zeroed_floats(ScratchSlot::kSparseZm, n_out);
    }
    s.acc = thread_scratch(ScratchSlot::kSparseAcc, acc_bytes);
    s.rows = static_cast<const uint8_t**>(
        thread_scratch(ScratchSlot::kSparseRows, n_rows * sizeof(const uint8_t*)));
    return s;
}

}  // namespace ffnskip::cpu
