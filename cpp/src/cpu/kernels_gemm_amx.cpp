// Prompt matmul on AMX tiles (BF16), for every quantized weight type, where the CPU has AMX-TILE
// and AMX-BF16 and the OS grants the tile state (cpu::gemm_amx()).
//
// One TDPBF16PS multiplies a 16 x 32 tile of activations (16 tokens) with a 32 x 16 tile of
// weights (16 rows) into 16 x 16 float sums: 8192 multiply-adds, against 32 for a 512-bit
// vpdpwssd. BF16 keeps 8 significant bits, so each value is split in two, v = hi + lo with hi =
// bf16(v) and lo = bf16(v - hi) (together ~16 bits), and a product is summed as hi*hi + hi*lo +
// lo*hi (the dropped lo*lo is ~2^-16 of it): three tile products instead of one, but the error
// stays at the integer path's level (~1e-5 against ~2.4e-3 for plain BF16, which moved tiny
// models' logits by 1-4%). Weights are dequantized (the scalar reference's values) once per call
// and chunk of columns, activations split once per call; the sums are float32. Prompts only:
// one-token decode and the serving step keep the integer kernels (and their batch invariance).
//
// Layout: tiles 0-3 hold a 32-token x 32-row block of sums (C), tiles 4-5 two 16-token activation
// tiles (A: row-major BF16, 32 columns each), tiles 6-7 two 16-row weight tiles (B: pairs of
// columns side by side, "VNNI" order: row p holds columns 2p and 2p + 1 of each of the 16 rows).
// Columns are walked in chunks whose activations (all tokens, both halves) stay within ~1 MiB; the
// sums of a call's rows and tokens are carried between chunks in y itself (whole blocks) or in a
// scratch buffer.
//
// Built with the AMX flags; no std::vector here (thread_scratch.h says why).
// GCC 12's AVX-512 headers self-initialize "undefined" operands (kernels_gemm_k_avx512vnni.cpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "cpu/kernels_avx2.h"
#include "cpu/kernels_impl.h"
#include "cpu/repack.h"
#include "cpu/thread_scratch.h"
#include "ggml_types.h"

namespace ffnskip::cpu::amx {

namespace {

constexpr int kTile = 16;          // tokens or rows per tile
constexpr int kTileK = 32;         // columns per tile (BF16)
constexpr int kBlock = 2 * kTile;  // tokens and rows per block of 4 sum tiles

struct alignas(64) TileConfig {
    uint8_t palette = 1;
    uint8_t start_row = 0;
    uint8_t reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
};

void configure_tiles() {
    TileConfig c;
    for (int t = 0; t < 8; ++t) {
        c.colsb[t] = 64;
        c.rows[t] = kTile;
    }
    _tile_loadconfig(&c);
}

int64_t round_up(int64_t v, int64_t m) {
    return (v + m - 1) / m * m;
}

// Columns per chunk: a multiple of `step`, activations of all tokens (both halves) within ~1 MiB.
int64_t chunk_cols(int64_t cols, int64_t n_tok_pad, int64_t step) {
    constexpr int64_t kBudget = int64_t{1} << 20;
    const int64_t fit = kBudget / (n_tok_pad * 4) / step * step;
    return std::clamp<int64_t>(fit, step, round_up(cols, step));
}

// 32 floats -> their BF16 halves hi = bf16(v), lo = bf16(v - hi), each 32 values in one vector.
inline void split32(__m512 v0, __m512 v1, __m512i& hi, __m512i& lo) {
    hi = (__m512i)_mm512_cvtne2ps_pbh(v1, v0);
    // BF16 -> f32 is the upper half of the f32 bits.
    const __m512 h0 = _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(hi)), 16));
    const __m512 h1 = _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(hi, 1)), 16));
    lo = (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(v1, h1), _mm512_sub_ps(v0, h0));
}

// x rows [0, n_tok) columns [k0, k0 + kc) -> BF16 halves, rows of kc values (rows past n_tok
// zero).
void convert_acts(const float* x, int64_t cols, int64_t n_tok, int64_t n_tok_pad, int64_t k0,
                  int64_t kc, uint16_t* a_hi, uint16_t* a_lo) {
    for (int64_t t = 0; t < n_tok_pad; ++t) {
        uint16_t* hi = a_hi + t * kc;
        uint16_t* lo = a_lo + t * kc;
        if (t >= n_tok) {
            std::memset(hi, 0, static_cast<size_t>(kc) * 2);
            std::memset(lo, 0, static_cast<size_t>(kc) * 2);
            continue;
        }
        const float* src = x + t * cols + k0;
        for (int64_t k = 0; k < kc; k += 32) {
            __m512i h, l;
            split32(_mm512_loadu_ps(src + k), _mm512_loadu_ps(src + k + 16), h, l);
            _mm512_storeu_si512(hi + k, h);
            _mm512_storeu_si512(lo + k, l);
        }
    }
}

// In-register transpose of 16 x 16 dwords: r[i] lane c -> r[c] lane i (unpack 32- and 64-bit
// elements, then two rounds of 128-bit lane shuffles).
inline void transpose16(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 8; ++i) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    // r[4i + j], 128-bit lane q: rows 4i..4i+3 of column 4q + j.
    for (int i = 0; i < 4; ++i) {
        r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int i = 0; i < 2; ++i) {
        for (int j = 0; j < 4; ++j) {
            t[8 * i + j] = _mm512_shuffle_i32x4(r[8 * i + j], r[8 * i + 4 + j], 0x88);
            t[8 * i + 4 + j] = _mm512_shuffle_i32x4(r[8 * i + j], r[8 * i + 4 + j], 0xDD);
        }
    }
    for (int j = 0; j < 8; ++j) {
        r[j] = _mm512_shuffle_i32x4(t[j], t[8 + j], 0x88);
        r[8 + j] = _mm512_shuffle_i32x4(t[j], t[8 + j], 0xDD);
    }
}

// Rows [0, 16) of a weight tile group, columns [0, kc) from f32 rows (stride kc) -> both halves
// in the pairs layout: b[(k / 2) * 32 + 2 * row + (k & 1)]. A 32-column step of a row is 16 pairs
// (dwords) in one vector; the 16 rows' vectors are transposed into the step's 16 pair rows.
void pack_rows(const float* rows, int64_t kc, uint16_t* b_hi, uint16_t* b_lo) {
    for (int64_t k = 0; k < kc; k += kTileK) {
        __m512i hi[kTile], lo[kTile];
        for (int r = 0; r < kTile; ++r) {
            const float* src = rows + r * kc + k;
            split32(_mm512_loadu_ps(src), _mm512_loadu_ps(src + 16), hi[r], lo[r]);
        }
        transpose16(hi);
        transpose16(lo);
        auto* out_hi = b_hi + (k / 2) * 2 * kTile;
        auto* out_lo = b_lo + (k / 2) * 2 * kTile;
        for (int p = 0; p < kTile; ++p) {
            _mm512_storeu_si512(out_hi + p * 2 * kTile, hi[p]);
            _mm512_storeu_si512(out_lo + p * 2 * kTile, lo[p]);
        }
    }
}

// The BF16 operands of one column chunk: activations of 32 tokens (row stride kc) and weights of
// two 16-row groups (pairs layout), each split in hi and lo.
struct Operands {
    const uint16_t *a_hi, *a_lo;
    const uint16_t *b0_hi, *b0_lo, *b1_hi, *b1_lo;
};

// Sums of tokens [t, t + 32) x rows [r, r + 32) over one column chunk, added to c (stride ldc
// floats; zeroed instead when `first`): hi*hi + hi*lo + lo*hi per 32-column step.
void block_4tiles(const Operands& o, int64_t kc, float* c, int64_t ldc, bool first) {
    const size_t cs = static_cast<size_t>(ldc) * sizeof(float);
    float* c01 = c + kTile;
    float* c10 = c + kTile * ldc;
    float* c11 = c10 + kTile;
    if (first) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    } else {
        _tile_loadd(0, c, cs);
        _tile_loadd(1, c01, cs);
        _tile_loadd(2, c10, cs);
        _tile_loadd(3, c11, cs);
    }
    const size_t as = static_cast<size_t>(kc) * 2;
    const int64_t a1 = kTile * kc;
    // A tiles 4, 5: 16 tokens each; B tiles 6, 7: 16 rows each; sums 0-3 += A x B.
    const auto load_a = [&](const uint16_t* a) {
        _tile_loadd(4, a, as);
        _tile_loadd(5, a + a1, as);
    };
    const auto load_b = [](const uint16_t* b0, const uint16_t* b1) {
        _tile_loadd(6, b0, 64);
        _tile_loadd(7, b1, 64);
    };
    const auto products = [] {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    };
    for (int64_t k = 0; k < kc; k += kTileK) {
        const int64_t bk = k * kTile;
        load_a(o.a_hi + k);
        load_b(o.b0_hi + bk, o.b1_hi + bk);
        products();  // hi * hi
        load_b(o.b0_lo + bk, o.b1_lo + bk);
        products();  // hi * lo
        load_a(o.a_lo + k);
        load_b(o.b0_hi + bk, o.b1_hi + bk);
        products();  // lo * hi
    }
    _tile_stored(0, c, cs);
    _tile_stored(1, c01, cs);
    _tile_stored(2, c10, cs);
    _tile_stored(3, c11, cs);
}

}  // namespace

void gemm(const WeightView& w, const float* x, int64_t n_tok, float* y, int64_t ldy, int64_t r0,
          int64_t r1) {
    const uint32_t type = base_type(w.type);
    const int64_t block = type_info(type)->block_size;
    const size_t block_bytes = type_info(type)->block_bytes;
    const bool grouped = is_grouped(w.type);
    const int64_t nr = r1 - r0, nr_pad = round_up(nr, kBlock), nt_pad = round_up(n_tok, kBlock);
    // Chunks start on a weight block and on a tile step; on grouped Q4_0/Q4_1 rows also on a group
    // of 8 blocks (repack.h; Q4_K's grouping stays within its super-block), so that a chunk of a
    // row ungroups as a row of its own.
    const int64_t group = grouped && block < 256 ? kGroupBlocks * block : block;
    const int64_t step = std::max<int64_t>(group, kTileK);
    const int64_t kc_max = chunk_cols(w.cols, nt_pad, step);
    // Whole blocks of tokens and rows (the usual prompt): the sums build up in y itself. Else in
    // a scratch buffer c, copied out at the end.
    const bool whole = nr == nr_pad && n_tok == nt_pad;
    // Scratch: c, the activation halves of a chunk, f32 rows of a chunk, the weight halves of 32
    // rows, one chunk of a row ungrouped.
    const size_t n_c = whole ? 0 : static_cast<size_t>(nt_pad * nr_pad), acts = nt_pad * kc_max,
                 rows = kBlock * kc_max;
    auto* mem = static_cast<uint8_t*>(
        thread_scratch(ScratchSlot::kGemmActs,
                       n_c * 4 + 2 * acts * 2 + rows * 4 + 2 * rows * 2 + w.row_bytes + 256));
    auto* c = reinterpret_cast<float*>(mem);
    auto* a_hi = reinterpret_cast<uint16_t*>(c + n_c);
    uint16_t* a_lo = a_hi + acts;
    auto* rows_f32 = reinterpret_cast<float*>(a_lo + acts);
    auto* b_hi = reinterpret_cast<uint16_t*>(rows_f32 + rows);
    uint16_t* b_lo = b_hi + rows;
    auto* plain = reinterpret_cast<uint8_t*>(b_lo + rows);
    float* const sums = whole ? y + r0 : c;
    const int64_t ld = whole ? ldy : nr_pad;

    configure_tiles();
    for (int64_t k0 = 0; k0 < w.cols; k0 += kc_max) {
        const int64_t kc = std::min(kc_max, w.cols - k0);  // a multiple of the block, and of 32
        const size_t chunk_at = static_cast<size_t>(k0 / block) * block_bytes;
        convert_acts(x, w.cols, n_tok, nt_pad, k0, kc, a_hi, a_lo);
        for (int64_t rb = 0; rb < nr_pad; rb += kBlock) {
            for (int i = 0; i < kBlock; ++i) {
                float* dst = rows_f32 + i * kc;
                const int64_t r = r0 + rb + i;
                if (r >= r1) {
                    std::memset(dst, 0, static_cast<size_t>(kc) * 4);
                    continue;
                }
                const uint8_t* src = w.data + static_cast<size_t>(r) * w.row_bytes + chunk_at;
                if (grouped) {  // the chunk starts on a group: it reads as a short row
                    ungroup_row(w.type, src, plain, kc);
                    src = plain;
                }
                avx2::dequantize_row(type, src, dst, kc);
            }
            pack_rows(rows_f32, kc, b_hi, b_lo);
            pack_rows(rows_f32 + kTile * kc, kc, b_hi + kTile * kc, b_lo + kTile * kc);
            for (int64_t tb = 0; tb < nt_pad; tb += kBlock) {
                const Operands o{a_hi + tb * kc, a_lo + tb * kc,    b_hi,
                                 b_lo,           b_hi + kTile * kc, b_lo + kTile * kc};
                block_4tiles(o, kc, sums + tb * ld + rb, ld, k0 == 0);
            }
        }
    }
    _tile_release();
    if (!whole) {
        for (int64_t t = 0; t < n_tok; ++t)
            std::memcpy(y + t * ldy + r0, c + t * nr_pad, static_cast<size_t>(nr) * 4);
    }
}

}  // namespace ffnskip::cpu::amx
