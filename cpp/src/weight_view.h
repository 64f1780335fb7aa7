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
};

}  // namespace ffnskip
