// Load-time re-layout of quantized weights for the AVX2 matmul kernels ("grouped" rows).
//
// In a GGUF row every block of 32 values carries its own f16 scale (and, Q4_1, min) in front of
// its codes, so the one-token decode tile converts one scale pair per block and row: about a
// third of its instructions, and what kept it below the memory bandwidth on 2 cores. A grouped
// row stores each run of 8 consecutive blocks as
//   [8 f16 scales][8 f16 mins (Q4_1 only)][8 x 16 code bytes of the blocks, in order]
// so one vector conversion yields 8 blocks' scales; the nb % 8 blocks after the last full run
// keep the plain layout. (Q8_0 measured 2x slower grouped, so it stays plain.) A grouped row has
// the same size as the plain one, so a grouped view keeps rows, cols and row_bytes; only its type
// changes to kGroupedFlag | base type, a value no GGUF file holds. Every kernel entry point accepts
// grouped views (the scalar kernels ungroup row by row).
//
// Q4_K is "grouped" within each super-block (it already holds 8 blocks): only its packed 6-bit
// block scales and mins are re-packed (repack.cpp), so that the one-token tile decodes them with
// vector operations instead of a dozen scalar ones per super-block and row.
#pragma once

#include <cstdint>

#include "weight_view.h"

namespace ffnskip::cpu {

constexpr uint32_t kGroupedFlag = 0x100;
constexpr int kGroupBlocks = 8;

inline bool is_grouped(uint32_t type) {
    return (type & kGroupedFlag) != 0;
}
inline uint32_t base_type(uint32_t type) {
    return type & ~kGroupedFlag;
}

// Whether the kernels in use run faster on `type` grouped: Q4_0, Q4_1 and Q4_K with AVX2; Q4_0
// and Q4_1 with NEON (by instruction count, not measured: 8 scales per conversion instead of one).
bool grouped_layout_pays_off(uint32_t type);
// Writes the grouped form of w's rows to dst (w.bytes() bytes) and returns the view of them.
// w must be a plain Q4_0, Q4_1 or Q4_K view (InvalidArgument otherwise).
WeightView group_weight(const WeightView& w, uint8_t* dst);
// The 8 six-bit block scales and mins of a grouped Q4_K super-block, from its 12 re-packed scale
// bytes `g` (byte j: low 4 bits of sc_j and m_j; then one word with their top 2 bits).
void grouped_q4k_scale_mins(const uint8_t* g, uint8_t* sc, uint8_t* m);
// One row back to the plain layout: `type` is the grouped type, cols the row length.
void ungroup_row(uint32_t type, const uint8_t* src, uint8_t* dst, int64_t cols);

}  // namespace ffnskip::cpu
