#include "cpu/sparse_scratch.h"

#include <vector>

namespace ffnskip::cpu {

SparseScratch sparse_scratch(size_t n_out, bool super, size_t acc_bytes, size_t n_rows) {
    thread_local std::vector<float> y, z, zm;
    thread_local std::vector<uint8_t> acc;
    thread_local std::vector<const uint8_t*> rows;
    constexpr size_t kAlign = 64;
    SparseScratch s;
    y.assign(n_out, 0.0f);
    s.y = y.data();
    if (super) {
        z.assign(n_out, 0.0f);
        zm.assign(n_out, 0.0f);
        s.z = z.data();
        s.zm = zm.data();
    }
    acc.resize(acc_bytes + kAlign);
    const auto at = reinterpret_cast<uintptr_t>(acc.data());
    s.acc = acc.data() + (kAlign - at % kAlign) % kAlign;
    rows.resize(n_rows);
    s.rows = rows.data();
    return s;
}

}  // namespace ffnskip::cpu
