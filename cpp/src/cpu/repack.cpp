#include "cpu/repack.h"

#include <cstring>
#include <string>

#include "cpu/kernels.h"
#include "ffnskip/ffnskip.h"
#include "ggml_types.h"
#include "quants.h"

namespace ffnskip::cpu {

namespace {

// A groupable block: `halves` f16 fields (scale, min) followed by `code_bytes` of codes.
struct BlockShape {
    int halves;
    size_t code_bytes;
    size_t bytes() const { return 2 * static_cast<size_t>(halves) + code_bytes; }
};

bool shape_of(uint32_t type, BlockShape* s) {
    switch (type) {
        case GGML_Q4_0:
            *s = {1, sizeof(block_q4_0::qs)};
            return true;
        case GGML_Q4_1:
            *s = {2, sizeof(block_q4_1::qs)};
            return true;
        default:
            return false;
    }
}

// Moves one row between the layouts: in a group, field f of block j sits at 16 f + 2 j and block
// j's codes at 16 halves + code_bytes j; the nb % 8 blocks after the last group stay plain.
void convert_row(const BlockShape& s, const uint8_t* src, uint8_t* dst, int64_t nb, bool group) {
    const int64_t full = nb / kGroupBlocks * kGroupBlocks;
    const size_t bb = s.bytes(), header = 2 * kGroupBlocks * static_cast<size_t>(s.halves);
    for (int64_t g0 = 0; g0 < full; g0 += kGroupBlocks) {
        const size_t base = static_cast<size_t>(g0) * bb;
        for (int j = 0; j < kGroupBlocks; ++j) {
            const size_t plain = base + j * bb;
            for (int f = 0; f < s.halves; ++f) {
                const size_t grouped = base + 2 * kGroupBlocks * f + 2 * j;
                if (group)
                    std::memcpy(dst + grouped, src + plain + 2 * f, 2);
                else
                    std::memcpy(dst + plain + 2 * f, src + grouped, 2);
            }
            const size_t codes = base + header + j * s.code_bytes;
            if (group)
                std::memcpy(dst + codes, src + plain + 2 * s.halves, s.code_bytes);
            else
                std::memcpy(dst + plain + 2 * s.halves, src + codes, s.code_bytes);
        }
    }
    const size_t tail = static_cast<size_t>(full) * bb;
    std::memcpy(dst + tail, src + tail, static_cast<size_t>(nb - full) * bb);
}

}  // namespace

bool groups_pay(uint32_t type) {
    BlockShape s;
    const char* level = simd_level();
    return shape_of(type, &s) &&
           (std::strcmp(level, "avx2") == 0 || std::strcmp(level, "neon") == 0);
}

WeightView group_weight(const WeightView& w, uint8_t* dst) {
    BlockShape s;
    if (!shape_of(w.type, &s))
        throw InvalidArgument(std::string("group_weight: ") + type_name(w.type) +
                              " is not grouped");
    const int64_t nb = w.cols / 32;
    for (int64_t r = 0; r < w.rows; ++r) {
        const size_t off = static_cast<size_t>(r) * w.row_bytes;
        convert_row(s, w.data + off, dst + off, nb, true);
    }
    WeightView g = w;
    g.type = w.type | kGroupedFlag;
    g.data = dst;
    return g;
}

void ungroup_row(uint32_t type, const uint8_t* src, uint8_t* dst, int64_t cols) {
    BlockShape s;
    if (!is_grouped(type) || !shape_of(base_type(type), &s))
        throw InvalidArgument("ungroup_row: not a grouped weight type");
    convert_row(s, src, dst, cols / 32, false);
}

}  // namespace ffnskip::cpu
