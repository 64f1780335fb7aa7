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

// Q4_K super-blocks keep d, dmin and the codes in place; their 12 bytes of packed 6-bit block
// scales sc_j and mins m_j (the scale_min_k4 packing) become
//   8 bytes: byte j = (sc_j & 15) | (m_j & 15) << 4
//   4 bytes: a little-endian word with sc_j >> 4 at bits 2j and m_j >> 4 at bits 16 + 2j
// which the AVX2 tiles decode with a handful of vector operations (Q4KGrouped,
// kernels_quant_blocks_avx2.h).
constexpr size_t kQ4KScales = 4;  // offset of the 12 scale bytes in a block_q4_K

void group_q4k_scales(const uint8_t* s, uint8_t* out) {
    uint32_t hi = 0;
    for (int j = 0; j < 8; ++j) {
        const int k = j & 3;
        const uint8_t sc = j < 4 ? s[k] & 63 : (s[k + 8] & 15) | (s[k] >> 6) << 4;
        const uint8_t m = j < 4 ? s[k + 4] & 63 : (s[k + 8] >> 4) | (s[k + 4] >> 6) << 4;
        out[j] = static_cast<uint8_t>((sc & 15) | (m & 15) << 4);
        hi |= static_cast<uint32_t>(sc >> 4) << (2 * j) | static_cast<uint32_t>(m >> 4)
                                                              << (16 + 2 * j);
    }
    for (int i = 0; i < 4; ++i) out[8 + i] = static_cast<uint8_t>(hi >> (8 * i));
}

void ungroup_q4k_scales(const uint8_t* g, uint8_t* s) {
    uint8_t sc[8], m[8];
    grouped_q4k_scale_mins(g, sc, m);
    for (int k = 0; k < 4; ++k) {
        s[k] = static_cast<uint8_t>(sc[k] | (sc[k + 4] >> 4) << 6);
        s[k + 4] = static_cast<uint8_t>(m[k] | (m[k + 4] >> 4) << 6);
        s[k + 8] = static_cast<uint8_t>((sc[k + 4] & 15) | (m[k + 4] & 15) << 4);
    }
}

void convert_q4k_row(const uint8_t* src, uint8_t* dst, int64_t n_super, bool group) {
    std::memcpy(dst, src, static_cast<size_t>(n_super) * sizeof(block_q4_K));
    for (int64_t u = 0; u < n_super; ++u) {
        const size_t at = static_cast<size_t>(u) * sizeof(block_q4_K) + kQ4KScales;
        if (group)
            group_q4k_scales(src + at, dst + at);
        else
            ungroup_q4k_scales(src + at, dst + at);
    }
}

}  // namespace

void grouped_q4k_scale_mins(const uint8_t* g, uint8_t* sc, uint8_t* m) {
    uint32_t hi = 0;
    for (int i = 0; i < 4; ++i) hi |= static_cast<uint32_t>(g[8 + i]) << (8 * i);
    for (int j = 0; j < 8; ++j) {
        sc[j] = static_cast<uint8_t>((g[j] & 15) | ((hi >> (2 * j)) & 3) << 4);
        m[j] = static_cast<uint8_t>((g[j] >> 4) | ((hi >> (16 + 2 * j)) & 3) << 4);
    }
}

bool grouped_layout_pays_off(uint32_t type) {
    BlockShape s;
    const char* level = simd_level();
    const bool avx2 = std::strcmp(level, "avx2") == 0;
    // The NEON kernels read grouped Q4_0/Q4_1 only; grouped Q4_K has an AVX2 tile alone.
    if (type == GGML_Q4_K) return avx2;
    return shape_of(type, &s) && (avx2 || std::strcmp(level, "neon") == 0);
}

WeightView group_weight(const WeightView& w, uint8_t* dst) {
    BlockShape s;
    if (w.type == GGML_Q4_K) {
        for (int64_t r = 0; r < w.rows; ++r) {
            const size_t off = static_cast<size_t>(r) * w.row_bytes;
            convert_q4k_row(w.data + off, dst + off, w.cols / 256, true);
        }
        WeightView g = w;
        g.type = w.type | kGroupedFlag;
        g.data = dst;
        return g;
    }
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
    if (type == (GGML_Q4_K | kGroupedFlag)) return convert_q4k_row(src, dst, cols / 256, false);
    BlockShape s;
    if (!is_grouped(type) || !shape_of(base_type(type), &s))
        throw InvalidArgument("ungroup_row: not a grouped weight type");
    convert_row(s, src, dst, cols / 32, false);
}

}  // namespace ffnskip::cpu
