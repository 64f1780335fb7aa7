// The x86 channel-sparse matvec on weights laid out by input channel (transposed.h), shared by
// the AVX2 and AVX-512 kernels (kernels_sparse_avx2.cpp, kernels_sparse_avx512.cpp). Each of those
// supplies the lane width L: how many 64-output code groups one vector holds (L::kGroups) and the
// products of a run of channels (L::add_run); the rest is here: decoding a group's codes,
// prefetching, folding a block's sums with its scale table.
//
// A thread computes every output over a part of the active blocks (threads split a product by
// input blocks and add their outputs: W_down's 9 groups of 64 outputs split unevenly by output).
// A scale block's active channels go in runs of up to C::kRun; for each group of outputs a run's
// products add up in registers, then widen into the block's 32-bit sums (an L1 buffer), which
// are folded with the block's scale table once the block is done. The run's rows are read side
// by side, one group at a time (up to 16 streams in one ~25 KB stretch of the layout), while the
// next run's rows are prefetched at the same offsets.
//
// The products use no shuffles (an earlier kernel paired two channels with unpacks and was
// bound by the one shuffle port, 3 shuffles per channel and 32 outputs): a channel's codes stay
// bytes, and vpmaddubsw multiplies them by its 8-bit term placed in every other byte,
// (q, 0) for the even bytes and (0, q) for the odd ones, so each 16-bit lane holds one product.
// Blocks with second terms (transposed.h SparseInput::fine) multiply the same decoded codes by
// those too, into sums that widen with weight 1 against the first terms' 254.
// 16-bit lanes hold a run (C::kRun is short enough not to overflow), then widen to 32 bits with
// vpmaddwd by (1, 0) and (0, 1). The stored order of a code group (transposed.h) makes the
// widened vectors outputs 8 r .. 8 r + 7 in order.
//
// Keeping a run's sums in registers, instead of adding four channels at a time into an L1 buffer
// of every group's 16-bit sums, made the product 1.2-1.5x faster (one thread, SmolLM2's shapes):
// the buffer's loads and stores and the per-four-channel set-up cost more than the products on
// rows this short.
//
// Everything here is in an unnamed namespace on purpose: each kernel file compiles this body with
// its own ISA flags, and a shared (inline or template) definition would let the linker keep the
// AVX-512 build of a function for the AVX2 path too, which faults on a CPU without AVX-512. For
// the same reason it uses no std::vector (its member functions are shared templates): buffers
// come from sparse_scratch.h. tools/check_isa_objects.sh checks the AVX-512 object.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cpu/sparse_scratch.h"
#include "cpu/transposed.h"
#include "ggml_types.h"

namespace ffnskip::cpu {
namespace {  // NOLINT(google-build-namespaces): one copy per ISA, see above

// ---- codes of one channel's group of 64 outputs as bytes (lo: half 0, hi: half 1) --------------
// kRun: channels whose products may add up in one 16-bit lane: kRun * max code * 127 < 2^15.
struct Nib4 {
    static constexpr int kRun = 16;  // 16 * 15 * 127 = 30480
    static constexpr size_t kBytes = 32;
    static void codes(const uint8_t* g, __m256i& lo, __m256i& hi) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g));
        const __m256i m = _mm256_set1_epi8(0x0F);
        lo = _mm256_and_si256(v, m);
        hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
    }
};

struct Nib5 {
    static constexpr int kRun = 8;  // 8 * 31 * 127 = 31496
    static constexpr size_t kBytes = 40;
    // Byte L of the 8 fifth-bit bytes, broadcast, holds lane L's bit at L / 8 (half 0) and
    // 4 + L / 8 (half 1): a compare with the lane's bit turns it into 0x10.
    static void codes(const uint8_t* g, __m256i& lo, __m256i& hi) {
        Nib4::codes(g, lo, hi);
        int64_t bits;
        std::memcpy(&bits, g + 32, 8);
        const __m256i t = _mm256_set1_epi64x(bits);
        const __m256i ml = _mm256_setr_epi64x(0x0101010101010101, 0x0202020202020202,
                                              0x0404040404040404, 0x0808080808080808);
        const __m256i mh = _mm256_slli_epi64(ml, 4);
        const __m256i b4 = _mm256_set1_epi8(0x10);
        lo = _mm256_or_si256(lo,
                             _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(t, ml), ml), b4));
        hi = _mm256_or_si256(hi,
                             _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(t, mh), mh), b4));
    }
};

struct Nib6 {
    static constexpr int kRun = 4;  // 4 * 63 * 127 = 32004
    static constexpr size_t kBytes = 48;
    // Byte L % 16 of the 16 high-bit bytes, broadcast to both halves, holds lane L's bits 4-5 at
    // 2 (L / 16) (half 0) and 4 + 2 (L / 16) (half 1): per-dword shifts move them to bits 4-5.
    static void codes(const uint8_t* g, __m256i& lo, __m256i& hi) {
        Nib4::codes(g, lo, hi);
        const __m256i t =
            _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 32)));
        const __m256i m = _mm256_set1_epi8(0x30);
        lo = _mm256_or_si256(
            lo,
            _mm256_and_si256(_mm256_sllv_epi32(t, _mm256_setr_epi32(4, 4, 4, 4, 2, 2, 2, 2)), m));
        hi = _mm256_or_si256(
            hi,
            _mm256_and_si256(_mm256_srlv_epi32(t, _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2)), m));
    }
};

struct Int8 {
    static constexpr int kRun = 1;  // 255 * 127 = 32385
    static constexpr size_t kBytes = 64;
    static void codes(const uint8_t* g, __m256i& lo, __m256i& hi) {
        lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g));
        hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 32));
    }
};

// ---- a run's products for the groups one vector holds ------------------------------------------
// The 16-bit sums of a run of channels: el/ol for the low nibbles' even and odd bytes, eh/oh for
// the high nibbles', of the first terms and (kFine) of the second, then widened into the block's
// 32-bit sums. V is the lane width's vector type and operations (V256 in
// kernels_sparse_avx2.cpp, V512 in kernels_sparse_avx512.cpp).
template <class V, bool kFine>
struct RunSums {
    using T = typename V::T;
    T el = V::zero(), ol = V::zero(), eh = V::zero(), oh = V::zero();
    T el2 = V::zero(), ol2 = V::zero(), eh2 = V::zero(), oh2 = V::zero();

    // Adds one channel's codes (lo, hi) times its terms p1 (and, with kFine, p2).
    __attribute__((always_inline)) void add(T lo, T hi, uint32_t p1, uint32_t p2) {
        add_term(lo, hi, p1, el, ol, eh, oh);
        if constexpr (kFine) add_term(lo, hi, p2, el2, ol2, eh2, oh2);
    }

    // a[v] += 254 * (the first terms' sums) + the second terms', widened with vpmaddwd by (w, 0)
    // and (0, w). Byte 4 j + r of a group is output 8 r + j: even lanes of el are r = 0, of ol
    // r = 1, odd lanes of el r = 2, of ol r = 3; eh and oh the same for r + 4.
    __attribute__((always_inline)) void widen_into(T* a) const {
        const T even1 = V::set1(254), odd1 = V::set1(254u << 16);
        const T even2 = V::set1(1), odd2 = V::set1(1u << 16);
        auto wide = [&](T a1, T a2, T w1, T w2) {
            T r = V::madd(a1, w1);
            if constexpr (kFine) r = V::add32(r, V::madd(a2, w2));
            return r;
        };
        a[0] = V::add32(a[0], wide(el, el2, even1, even2));
        a[1] = V::add32(a[1], wide(ol, ol2, even1, even2));
        a[2] = V::add32(a[2], wide(el, el2, odd1, odd2));
        a[3] = V::add32(a[3], wide(ol, ol2, odd1, odd2));
        a[4] = V::add32(a[4], wide(eh, eh2, even1, even2));
        a[5] = V::add32(a[5], wide(oh, oh2, even1, even2));
        a[6] = V::add32(a[6], wide(eh, eh2, odd1, odd2));
        a[7] = V::add32(a[7], wide(oh, oh2, odd1, odd2));
    }

  private:
    // The term p is (q & 0xFF) in bytes 0 and 2 of each word: as is it multiplies the even
    // bytes, shifted by 8 the odd ones.
    __attribute__((always_inline)) static void add_term(T lo, T hi, uint32_t p, T& e_lo, T& o_lo,
                                                        T& e_hi, T& o_hi) {
        const T xe = V::set1(p), xo = V::slli16(xe, 8);
        e_lo = V::add16(e_lo, V::maddubs(lo, xe));
        o_lo = V::add16(o_lo, V::maddubs(lo, xo));
        e_hi = V::add16(e_hi, V::maddubs(hi, xe));
        o_hi = V::add16(o_hi, V::maddubs(hi, xo));
    }
};

// What add_run prefetches while it computes: later rows (at the offsets it reads; the next
// run's, or 8 rows later for the short runs of 6- and 8-bit codes), and
// in a block's first run the next block's scale table. Spread over the groups, one line per row
// and line crossed: a burst per row or table stalled the pipeline once the line fill buffers were
// full. Hint T2: on SmolLM2's profile T2 decoded x1.10 of dense at 41% saved where T0 gave x0.99
// and T1 x1.08 (single runs, noisy, with the previous four-channel kernel).
struct Ahead {
    const uint8_t* const* row = nullptr;  // rows[0 .. rows)
    int rows = 0;
    const uint8_t* table = nullptr;  // group g's entries at table + g * tstep (and + tfield)
    size_t tstep = 0, tfield = 0;
};

// The prefetches due while group g (bytes off .. off + kBytes - 1 of every row) is computed.
template <size_t kBytes>
__attribute__((always_inline)) inline void prefetch_ahead(const Ahead& ahead, int64_t g,
                                                          size_t off) {
    // The line holding this group's last byte, when the group reaches into a new line.
    if (g == 0 || (off + kBytes - 1) / 64 != (off - 1) / 64) {
        for (int j = 0; j < ahead.rows; ++j)
            _mm_prefetch(reinterpret_cast<const char*>(ahead.row[j] + off + kBytes - 1),
                         _MM_HINT_T2);
    }
    if (ahead.table != nullptr) {
        const uint8_t* tg = ahead.table + static_cast<size_t>(g) * ahead.tstep;
        for (size_t k = 0; k < ahead.tstep; k += 64) {
            _mm_prefetch(reinterpret_cast<const char*>(tg + k), _MM_HINT_T2);
            if (ahead.tfield)
                _mm_prefetch(reinterpret_cast<const char*>(tg + ahead.tfield + k), _MM_HINT_T2);
        }
    }
}
inline __m256 halves8(const uint8_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m256 u8x8(const uint8_t* p) {
    return _mm256_cvtepi32_ps(
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline __m256 i8x8(const uint8_t* p) {
    return _mm256_cvtepi32_ps(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// The block's product per output, dx * (isum - offset * qsum), 8 outputs.
inline __m256 block_product(__m256i acc, __m256i offq, __m256 dx) {
    return _mm256_mul_ps(dx, _mm256_cvtepi32_ps(_mm256_sub_epi32(acc, offq)));
}

// ---- folds: a block's integer sums into the outputs ---------------------------------------------
// Each keeps the outputs (and a K-quant super-block's sums) in the thread's scratch
// (sparse_scratch.h), in the scalar reference's order of operations. block() reads a group's
// 32-bit sums of outputs 8 v .. 8 v + 7 at acc[v * step] (step: the groups a lane vector holds).
// w = D * (q - offset) [+ M]: Q4_0 (8), Q5_0 (16), Q8_0 (128); Q4_1 / Q5_1 (a min M).
template <int kOffset, bool kMin>
struct FoldPlain {
    static constexpr bool kSuper = false;
    size_t W64 = 0;
    float* out = nullptr;  // the outputs
    void init(const TransposedView& t, const SparseScratch& s) {
        W64 = static_cast<size_t>(t.n_pad);
        out = s.y;
    }
    void super_block(int64_t, const TransposedView&) {}
    // The group of outputs e .. e + 63 (table tbl).
    void block(const uint8_t* tbl, size_t e, float dx, int32_t qsum, const __m256i* acc, int step) {
        const __m256i offq = _mm256_set1_epi32(kOffset * qsum);
        const __m256 vdx = _mm256_set1_ps(dx), vsx = _mm256_set1_ps(dx * static_cast<float>(qsum));
        float* y = out + e;
        const uint8_t* D = tbl + 2 * e;
        for (int v = 0; v < 8; ++v) {
            __m256 out = _mm256_loadu_ps(y + 8 * v);
            out =
                _mm256_fmadd_ps(halves8(D + 16 * v), block_product(acc[v * step], offq, vdx), out);
            if constexpr (kMin) out = _mm256_fmadd_ps(halves8(D + 2 * W64 + 16 * v), vsx, out);
            _mm256_storeu_ps(y + 8 * v, out);
        }
    }
    void finish() {}
};

// Q4_K / Q5_K (w = d * sc * q - dmin * mn) and Q6_K (w = d * sc * (q - 32)): a super-block's
// sums z (and zm) are folded with its d (and dmin) when the next super-block starts.
template <bool kQ6>
struct FoldK {
    static constexpr bool kSuper = true;
    size_t W64 = 0;
    int64_t super = -1;
    const uint8_t* sup = nullptr;
    float *out = nullptr, *zs = nullptr, *zms = nullptr;  // the scratch's y, z, zm
    void init(const TransposedView& t, const SparseScratch& s) {
        W64 = static_cast<size_t>(t.n_pad);
        super = -1;
        out = s.y;
        zs = s.z;
        zms = s.zm;
    }
    void flush() {
        if (super < 0) return;
        float* y = out;
        float* z = zs;
        float* zm = zms;
        for (size_t e = 0; e < W64; e += 8) {
            __m256 out = _mm256_fmadd_ps(halves8(sup + 2 * e), _mm256_loadu_ps(z + e),
                                         _mm256_loadu_ps(y + e));
            if constexpr (!kQ6) {
                out = _mm256_fnmadd_ps(halves8(sup + 2 * (W64 + e)), _mm256_loadu_ps(zm + e), out);
                _mm256_storeu_ps(zm + e, _mm256_setzero_ps());
            }
            _mm256_storeu_ps(y + e, out);
            _mm256_storeu_ps(z + e, _mm256_setzero_ps());
        }
    }
    void super_block(int64_t S, const TransposedView& t) {
        if (S == super) return;
        flush();
        super = S;
        sup = t.super_at(S);
    }
    void block(const uint8_t* tbl, size_t e, float dx, int32_t qsum, const __m256i* acc, int step) {
        const __m256i offq = _mm256_set1_epi32((kQ6 ? 32 : 0) * qsum);
        const __m256 vdx = _mm256_set1_ps(dx), vsx = _mm256_set1_ps(dx * static_cast<float>(qsum));
        float* z = zs + e;
        float* zm = zms + e;
        const uint8_t* sc = tbl + e;
        for (int v = 0; v < 8; ++v) {
            const __m256 p = block_product(acc[v * step], offq, vdx);
            const size_t o = 8 * v;
            if constexpr (kQ6) {
                _mm256_storeu_ps(z + o, _mm256_fmadd_ps(i8x8(sc + o), p, _mm256_loadu_ps(z + o)));
            } else {
                _mm256_storeu_ps(z + o, _mm256_fmadd_ps(u8x8(sc + o), p, _mm256_loadu_ps(z + o)));
                _mm256_storeu_ps(zm + o,
                                 _mm256_fmadd_ps(u8x8(sc + W64 + o), vsx, _mm256_loadu_ps(zm + o)));
            }
        }
    }
    void finish() { flush(); }
};

// The quantized layouts at lane width L (kernels_sparse_avx2.cpp / _avx512.cpp).
template <class L, class C, class F>
void units_quant(const TransposedView& t, const SparseInput& x, int64_t k0, int64_t k1, float* y) {
    const int64_t W = t.groups();
    const size_t W64 = static_cast<size_t>(W) * kTGroup;
    const int bps = t.blocks_per_super();
    const int64_t n_vec = (W + L::kGroups - 1) / L::kGroups;
    // rows: every active channel's row, in order, for the prefetches ahead.
    const SparseScratch scratch = sparse_scratch(
        W64, F::kSuper, sizeof(typename L::Sums32) * static_cast<size_t>(n_vec), x.slot.size());
    auto* const acc = static_cast<typename L::Sums32*>(scratch.acc);
    const uint8_t** const rowp = scratch.rows;
    F fold;
    fold.init(t, scratch);
    for (int64_t kb = k0; kb < k1; ++kb) {
        const uint8_t* rows = t.block_at(x.block[kb]) + t.scale_row();
        for (int32_t c = x.first[kb]; c < x.first[kb + 1]; ++c)
            rowp[static_cast<size_t>(c)] = rows + static_cast<size_t>(x.slot[c]) * t.code_row();
    }
    const int32_t n_rows = x.first[k1];
    // Table bytes per group: scale_entry per output, split in fields (D, M / sc, mn).
    const size_t tfield =
        t.scale_entry == 4 ? 2 * W64 : (t.scale_entry == 2 && t.super > 0 ? W64 : 0);
    const size_t tstep = kTGroup * (tfield ? t.scale_entry / 2 : t.scale_entry);
    for (int64_t kb = k0; kb < k1; ++kb) {
        const int64_t b = x.block[kb];
        if constexpr (F::kSuper) fold.super_block(b / bps, t);
        const uint8_t* tbl = t.block_at(b);
        const int32_t c_begin = x.first[kb], c_end = x.first[kb + 1];
        const bool fine = x.fine[static_cast<size_t>(kb)] != 0;
        const uint8_t* next_table = kb + 1 < k1 ? t.block_at(x.block[kb + 1]) : nullptr;
        std::memset(static_cast<void*>(acc), 0,
                    sizeof(typename L::Sums32) * static_cast<size_t>(n_vec));
        for (int32_t r0 = c_begin; r0 < c_end; r0 += C::kRun) {
            const int32_t r1 = std::min(c_end, r0 + C::kRun);
            // The rows kAheadRows later, each prefetched once.
            constexpr int32_t kAheadRows = std::max(C::kRun, 8);
            Ahead ahead;
            ahead.row = rowp + std::min(r0 + kAheadRows, n_rows);
            ahead.rows = std::max(0, std::min(r1 + kAheadRows, n_rows) - (r0 + kAheadRows));
            if (r0 == c_begin && next_table != nullptr) {
                ahead.table = next_table;
                ahead.tstep = tstep;
                ahead.tfield = tfield;
            }
            const uint8_t* const* row = rowp + r0;
            const uint32_t* p1 = x.pattern.data() + r0;
            const uint32_t* p2 = x.pattern2.data() + r0;
            if (fine)
                L::template add_run<C, true>(row, p1, p2, r1 - r0, W, acc, ahead);
            else
                L::template add_run<C, false>(row, p1, p2, r1 - r0, W, acc, ahead);
        }
        for (int64_t g = 0; g < W; ++g) {
            fold.block(tbl, static_cast<size_t>(g) * kTGroup, x.d[kb], x.qsum[kb],
                       L::group_sums(acc, g), L::kGroups);
        }
    }
    fold.finish();
    std::memcpy(y, scratch.y, sizeof(float) * static_cast<size_t>(t.n_out));
}

// Float types: y += x_i * W[i, :] over the active channels, 64 outputs at a time.
template <uint32_t kType>
inline __m256 weights8(const uint8_t* p) {
    if constexpr (kType == GGML_F32) {
        return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
    } else if constexpr (kType == GGML_F16) {
        return halves8(p);
    } else {  // BF16: the upper half of an f32
        const __m256i h =
            _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
    }
}

template <uint32_t kType>
void units_float(const TransposedView& t, const SparseInput& x, int64_t k0, int64_t k1, float* y) {
    constexpr size_t kBytes = kType == GGML_F32 ? 4 : 2;
    for (int64_t g = 0; g < t.groups(); ++g) {
        const size_t goff = static_cast<size_t>(g) * t.group;
        __m256 acc[8];
        for (auto& a : acc) a = _mm256_setzero_ps();
        for (int64_t k = k0; k < k1; ++k) {
            const uint8_t* row = t.row_at(x.index[k]) + goff;
            const __m256 v = _mm256_set1_ps(x.value[k]);
            for (int j = 0; j < 8; ++j)
                acc[j] = _mm256_fmadd_ps(v, weights8<kType>(row + 8 * kBytes * j), acc[j]);
        }
        const int64_t o = g * kTGroup;
        alignas(32) float tmp[kTGroup];
        for (int j = 0; j < 8; ++j) _mm256_store_ps(tmp + 8 * j, acc[j]);
        std::memcpy(y + o, tmp,
                    sizeof(float) * static_cast<size_t>(std::min<int64_t>(kTGroup, t.n_out - o)));
    }
}

template <class L>
void units_matvec(const TransposedView& t, const SparseInput& x, int64_t k0, int64_t k1, float* y) {
    switch (t.type) {
        case GGML_Q4_0:
            return units_quant<L, Nib4, FoldPlain<8, false>>(t, x, k0, k1, y);
        case GGML_Q4_1:
            return units_quant<L, Nib4, FoldPlain<0, true>>(t, x, k0, k1, y);
        case GGML_Q5_0:
            return units_quant<L, Nib5, FoldPlain<16, false>>(t, x, k0, k1, y);
        case GGML_Q5_1:
            return units_quant<L, Nib5, FoldPlain<0, true>>(t, x, k0, k1, y);
        case GGML_Q8_0:
            return units_quant<L, Int8, FoldPlain<128, false>>(t, x, k0, k1, y);
        case GGML_Q4_K:
            return units_quant<L, Nib4, FoldK<false>>(t, x, k0, k1, y);
        case GGML_Q5_K:
            return units_quant<L, Nib5, FoldK<false>>(t, x, k0, k1, y);
        case GGML_Q6_K:
            return units_quant<L, Nib6, FoldK<true>>(t, x, k0, k1, y);
        case GGML_F32:
            return units_float<GGML_F32>(t, x, k0, k1, y);
        case GGML_F16:
            return units_float<GGML_F16>(t, x, k0, k1, y);
        default:
            return units_float<GGML_BF16>(t, x, k0, k1, y);
    }
}

}  // namespace
}  // namespace ffnskip::cpu
