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
// Layout: outputs padded to n_pad, a multiple of kTGroup = 64;
//     [super-block table]                     K-quants, per super-block of 256 inputs
//     per scale block (blk inputs):
//       [scale table]                         the block's scales of the n_pad outputs
//       blk channel rows of n_pad / 64 code groups
// A product reads each active row whole, in address order, so a skipped channel skips a run of
// lines (n_pad / 128 of them for 4-bit codes), and a block's scales arrive just before its rows.
// Interleaving the channels' codes per pair of groups instead (one line per channel and group
// pair) measured no saving at all: the stream prefetchers fetched the skipped lines between the
// active ones.
// Code group (64 outputs; output p: half h = p / 32 and r = (p % 32) / 8, j = p % 8): byte
// 4 j + r holds the outputs of the AVX2 kernel's lanes, which widen even and odd 16-bit lanes
// into outputs 8 r + j (kernels_sparse_avx2.cpp).
//   4-bit (Q4_0, Q4_1, Q4_K): 32 bytes; byte L low nibble = output of lane L in half 0, high
//                             nibble = half 1
//   5-bit (Q5_0, Q5_1, Q5_K): those 32 bytes, then 8: the 5th bit of lane L of half 0 is bit
//                             L / 8 of byte L % 8, of half 1 bit 4 + L / 8
//   6-bit (Q6_K):             those 32 bytes, then 16: bits 4-5 of lane L of half 0 are bits
//                             2 (L / 16) .. +1 of byte L % 16, of half 1 bits 4 + 2 (L / 16) .. +1
//   8-bit (Q8_0):             64 bytes, code + 128 (unsigned): half 0's lanes, then half 1's
//   F16 / BF16 / F32:         the 64 values in output order
// Codes are raw, as the file stores them (the offsets of Q4_0/Q5_0/Q6_K, and Q8_0's 128, are
// subtracted from the integer sums with the block's sum of activation values).
// Scale tables (a block's table of a W-group slice: W * 64 entries, then the second field's):
//   Q4_0 / Q5_0 / Q8_0 (blocks of 32):  D f16                    2 bytes per output
//   Q4_1 / Q5_1 (blocks of 32):         D f16, then M f16        4
//   Q4_K / Q5_K (sub-blocks of 32):     sc u8, then mn u8        2, and per super-block of 256:
//                                       d f16, then dmin f16     4
//   Q6_K (sub-blocks of 16):            sc i8                    1, and per super-block: d f16  2
// with w = d * sc * q - dmin * mn (Q4_K/Q5_K) and w = d * sc * (q - 32) (Q6_K). The K-quants'
// 6-bit scales are unpacked to bytes: 4 bytes per super-block and output more than the file
// (+2.8% of a Q4_K matrix), counted in every byte figure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "weight_view.h"

namespace ffnskip::cpu {

constexpr int kTGroup = 64;  // outputs per code group

struct TransposedView {
    uint32_t type = 0;       // the file's ggml type
    int64_t n_in = 0;        // input channels (the file's columns)
    int64_t n_out = 0;       // outputs (the file's rows)
    int64_t n_pad = 0;       // n_out rounded up to kTGroup
    int blk = 1;             // input channels per scale block (1: float types, no scales)
    int super = 0;           // input channels per super-block (0: none)
    size_t group = 0;        // code bytes of one channel and one group of 64 outputs
    size_t scale_entry = 0;  // scale-table bytes per block and output
    size_t super_entry = 0;  // super-block-table bytes per super-block and output
    const uint8_t* data = nullptr;

    int64_t groups() const { return n_pad / kTGroup; }
    int blocks_per_super() const { return super > 0 ? super / blk : 0; }
    // Bytes of one channel's codes, one block's and one super-block's tables (what a product
    // reads per active channel, block and super-block), and of a block and a super-block.
    size_t code_row() const { return group * static_cast<size_t>(groups()); }
    size_t scale_row() const { return scale_entry * static_cast<size_t>(n_pad); }
    size_t super_row() const { return super_entry * static_cast<size_t>(n_pad); }
    size_t block_bytes() const { return scale_row() + static_cast<size_t>(blk) * code_row(); }
    size_t super_bytes() const {
        return super_row() + static_cast<size_t>(blocks_per_super()) * block_bytes();
    }
    size_t bytes() const;  // codes + scales + super tables

    // The scale table of block b; its rows follow it.
    const uint8_t* block_at(int64_t b) const {
        const int bps = blocks_per_super();
        if (bps == 0) return data + static_cast<size_t>(b) * block_bytes();
        const int64_t S = b / bps;
        return data + static_cast<size_t>(S) * super_bytes() + super_row() +
               static_cast<size_t>(b - S * bps) * block_bytes();
    }
    const uint8_t* row_at(int64_t i) const {
        return block_at(i / blk) + scale_row() + static_cast<size_t>(i % blk) * code_row();
    }
    const uint8_t* super_at(int64_t S) const {
        return data + static_cast<size_t>(S) * super_bytes();
    }
};

// The shape of the layout of w (data null); InvalidArgument for an unsupported type or shape.
TransposedView plan_transposed(const WeightView& w);
// Writes outputs [o0, o1) of the layout of w (plain file rows) into `base`, the start of t's
// bytes()-byte block. Disjoint output ranges may be filled concurrently.
void fill_transposed(const WeightView& w, const TransposedView& t, uint8_t* base, int64_t o0,
                     int64_t o1);
// t with its data pointer set to `base`.
TransposedView bind_transposed(TransposedView t, const uint8_t* base);

// A sparse input vector prepared for a transposed matrix: its active channels grouped by scale
// block, the values of each block in 8-bit terms (the sparse kernels multiply bytes,
// kernels_sparse_avx2.cpp): with u = x / (max|x| / 127) over the block's active values,
// q1 = round(u), and on the blocks that carry most of q1's rounding error (`fine`) a second term
// q2 = round(254 (u - q1)), so x ~= d (254 q1 + q2) with d = max|x| / (127 * 254). Float-type
// matrices read `index` / `value` only.
struct SparseInput {
    int64_t n_active = 0;
    std::vector<int32_t> index;  // active channels, ascending
    std::vector<float> value;    // their values
    // Per block with an active channel:
    std::vector<int32_t> block;  // block index
    std::vector<float> d;        // activation scale
    std::vector<int32_t> qsum;   // sum of the block's values 254 q1 + q2 (offset and min terms)
    std::vector<int32_t> first;  // its channels are [first[k], first[k + 1])
    // Per active channel, in order: its place in its block, and its terms q1, q2 as the AVX2
    // kernel broadcasts them, (q & 0xFF) in bytes 0 and 2 of a 32-bit word.
    std::vector<int32_t> slot;
    std::vector<uint32_t> pattern, pattern2;
    std::vector<uint8_t> fine;  // per block: whether it has second terms (else all q2 = 0)
    int64_t n_super = 0;        // super-blocks with an active channel (K-quants)

    // Keeps x[i] for the listed channels (ascending) of a vector for matrix t: plan, then
    // fill_terms for every unit.
    void prepare(const TransposedView& t, const float* x, const int32_t* active, int64_t n);
    // The channels, their values and blocks, each block's largest |x| and which blocks get
    // second terms (a choice over the whole vector); not yet slot, pattern, pattern2, d, qsum.
    void plan(const TransposedView& t, const float* x, const int32_t* active, int64_t n);
    // The terms of units [k0, k1) after plan: the threads of a product each fill their own part
    // (disjoint ranges may be filled concurrently).
    void fill_terms(int64_t k0, int64_t k1);
    // Units a product may be split at: blocks with an active channel (float types: channels).
    int64_t units() const { return block.empty() ? n_active : static_cast<int64_t>(block.size()); }
    // The units of part k of n, about equal in active channels: [first, last).
    std::pair<int64_t, int64_t> part(int k, int n) const;
    // The value 254 q1 + q2 of active channel c (the order of `slot`), in units of d.
    int32_t q(size_t c) const {
        return 254 * static_cast<int8_t>(pattern[c] & 0xFF) +
               static_cast<int8_t>(pattern2[c] & 0xFF);
    }
    // Weight bytes a product with t reads for this input: the active channels' codes and the
    // scale (and super-block) tables of blocks with an active channel.
    size_t bytes_read(const TransposedView& t) const;

  private:
    int blk_ = 0;                         // the matrix's channels per scale block (plan's t)
    void choose_second_terms(size_t nb);  // sets `fine` from scratch_.amax and `first`
    struct {
        std::vector<float> amax;  // per block: max |x| (NaN: not finite)
        std::vector<double> err;
        std::vector<int32_t> order;
    } scratch_;
};

}  // namespace ffnskip::cpu
