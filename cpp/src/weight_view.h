// A weight matrix as stored in a GGUF file: `rows` rows of `cols` elements in ggml type `type`,
// each row `row_bytes` long, pointing into the mapped file. The contract between the loader
// (model.*) and the kernels of both backends.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ffnskip {

struct WeightView {
    uint32_t type = 0;
    const uint8_t* data = nullptr;
    int64_t rows = 0;
    int64_t cols = 0;
    size_t row_bytes = 0;
    bool empty() const { return data == nullptr; }
    size_t bytes() const { return row_bytes * static_cast<size_t>(rows); }
    // Rows [first, first + n) as a matrix of their own: in a row-major file a row range is a
    // pointer offset (phi3's fused q/k/v and gate/up tensors load as such views).
    WeightView row_range(int64_t first, int64_t n) const {
        WeightView w = *this;
        w.data = data + row_bytes * static_cast<size_t>(first);
        w.rows = n;
        return w;
    }
};

}  // namespace ffnskip
