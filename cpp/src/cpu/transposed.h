// Weights laid out by input channel, for the channel-sparse FFN (shared/DESIGN.md, "Conditional
// FFN — two kinds"): reading only the active input channels of a matrix needs each channel's
// weights contiguous.
//
// Lossless: no value is re-quantized. A block-quantized file stores w[o, i] = D[o, b] * q[o, i]
// + M[o, b], b = i's block along the input. The transposed copy keeps the codes q at the file's
// width, one row per input channel i holding its n_out codes, and the per-(block, output) scale
// tables as the file has them, so that
//     y[o] = sum_b ( D[o, b] * sum_{i in b, act} x_i q[o, i]  +  M[o, b] * sum_{i in b, act} x_i )
// reads only the codes of the active channels and the scales of blocks with an active channel.
// Measured on SmolLM2: re-quantizing ffn_down at 4 bits instead costs +7-9% perplexity.
//
// Codes (raw, as the file stores them; the offsets of Q4_0/Q5_0/Q6_K become a min term
// M = -offset * D, so the kernels read unsigned codes for every type but Q8_0):
//   a row is n_pad = n_out rounded up to 32 outputs, in groups of 32 outputs, each group
//     4-bit (Q4_0, Q4_1, Q4_K): 16 bytes, byte L: low nibble = output perm(L), high = 16+perm(L)
//     5-bit (Q5_0, Q5_1, Q5_K): those 16 bytes, then a 32-bit word: bit L = 5th bit of output
//                               perm(L), bit 16+L of output 16+perm(L)
//     6-bit (Q6_K):             those 16 bytes, then 8 bytes: byte k bits 0-1 = high bits of
//                               lane k's low-nibble output, 2-3 of lane k+8's, 4-5 and 6-7 the
//                               same lanes' high-nibble outputs (lane L: the output of byte L)
//     8-bit (Q8_0):             32 signed bytes, byte L = output perm(L), 16+L = 16+perm(L)
//     F16 / BF16 / F32:         the 32 values in output order
//   perm(L) = L for L in 0-3 and 12-15, L+4 for 4-7, L-4 for 8-11: the order in which the AVX2
//   kernel's 16-bit unpacks of two rows leave outputs 0-7, 8-15 in its 32-bit lanes.
// Scale tables, one row of n_pad entries per block (padding outputs have zero scales):
//   Q4_0 / Q5_0 / Q8_0 (blocks of 32):  D f16                      2 n_pad bytes
//   Q4_1 / Q5_1 (blocks of 32):         D f16, then M f16          4 n_pad bytes
//   Q4_K / Q5_K (sub-blocks of 32):     sc u8, then mn u8          2 n_pad bytes, and per
//                                       super-block of 256: d f16, then dmin f16  (4 n_pad bytes)
//   Q6_K (sub-blocks of 16):            sc i8                      n_pad bytes, and per
//                                       super-block: d f16                         (2 n_pad bytes)
// with w = d * sc * q - dmin * mn (Q4_K/Q5_K) and w = d * sc * (q - 32) (Q6_K). The K-quants'
// 6-bit scales are unpacked to bytes: 4 bytes per super-block and output more than the file
// (+2.8% of a Q4_K matrix), counted in every byte figure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "weight_view.h"

namespace ffnskip::cpu {

constexpr int kTGroup = 32;  // outputs per code group

struct TransposedView {
    uint32_t type = 0;  // the file's ggml type
    int64_t n_in = 0;   // input channels: rows of the layout (the file's columns)
    int64_t n_out = 0;  // outputs (the file's rows)
    int64_t n_pad = 0;  // n_out rounded up to kTGroup
    int blk = 1;        // input channels per scale row (1: float types, no scales)
    int super = 0;      // input channels per super-block table row (0: none)
    const uint8_t* codes = nullptr;
    size_t code_row = 0;  // bytes per input channel
    const uint8_t* scales = nullptr;
    size_t scale_row = 0;  // bytes per block
    const uint8_t* supers = nullptr;
    size_t super_row = 0;  // bytes per super-block

    size_t group_bytes() const { return code_row / static_cast<size_t>(n_pad / kTGroup); }
    size_t bytes() const;  // codes + scales + super tables
};

// Whether a matrix of this type can be laid out by input channel (every weight type but BF16...
// all DESIGN.md weight types are supported).
bool transposable(uint32_t type);
// The shape of the layout of w (pointers null); InvalidArgument for an unsupported type.
TransposedView plan_transposed(const WeightView& w);
// Writes outputs [o0, o1) of the layout of w (plain file rows; o0 and o1 multiples of kTGroup,
// or o1 = n_pad) into memory laid out as `t` with `base` the start of its bytes()-byte block.
// Disjoint output ranges may be filled concurrently.
void fill_transposed(const WeightView& w, const TransposedView& t, uint8_t* base, int64_t o0,
                     int64_t o1);
// t with its pointers set into `base` (bytes() bytes: codes, then scales, then supers).
TransposedView bind_transposed(TransposedView t, uint8_t* base);

// The position of output o (0..31) of a code group in the stored order (see perm above): bit 4
// is the half (low or high nibble; lo or hi vector of the kernel), bits 0-3 the 16-bit lane.
inline int group_position(int o) {
    const int p = o & 15;
    const int q = p < 4 || p >= 12 ? p : (p < 8 ? p + 4 : p - 4);
    return (o & 16) | q;
}
// A sparse input vector prepared for a transposed matrix: its active channels grouped by scale
// block, the values of each block quantized to 16 bits (as the dense kernels' activations,
// kernels_impl.h: d = max|x| / 32767 over the block's active values) and paired, two channels per
// 32-bit word, for the AVX2 kernel's vpmaddwd. Float-type matrices read `index` / `value` only.
struct SparseInput {
    int64_t n_active = 0;
    std::vector<int32_t> index;  // active channels, ascending
    std::vector<float> value;    // their values
    // Per block with an active channel:
    std::vector<int32_t> block;  // block index
    std::vector<float> d;        // activation scale
    std::vector<float> s;        // d * sum of the block's 16-bit values (the min term's input)
    std::vector<int32_t> first;  // its pairs are [first[k], first[k + 1])
    // Per pair: the two channels (the second repeats the first, with value 0, for an odd count)
    // and their 16-bit values, a | b << 16.
    std::vector<int32_t> row_a, row_b;
    std::vector<int32_t> packed;
    int64_t n_super = 0;  // super-blocks with an active channel (K-quants)

    // Keeps x[i] for the listed channels (ascending) of a vector for matrix t.
    void prepare(const TransposedView& t, const float* x, const int32_t* active, int64_t n);
    // Weight bytes a product with t reads for this input: the active channels' codes and the
    // scale (and super-block) tables of blocks with an active channel.
    size_t bytes_read(const TransposedView& t) const;
};

}  // namespace ffnskip::cpu
