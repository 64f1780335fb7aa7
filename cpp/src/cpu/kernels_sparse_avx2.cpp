// AVX2 channel-sparse matvec on weights laid out by input channel (transposed.h).
//
// A thread owns a slice of the outputs and walks, per group of 32 outputs, the active input
// channels in pairs: the two rows' codes of the group are widened to 16 bits, interleaved
// (unpacklo/hi) and multiplied with the pair's two 16-bit values by vpmaddwd, which leaves
// outputs 0-7, 8-15, 16-23, 24-31 of the group in four int32 accumulators (the stored code order
// makes it so). At the end of each scale block the integers are folded with the block's scales;
// the group's outputs stay in registers across blocks. Only the active channels' code bytes and
// the scales of blocks with an active channel are read.
#include <algorithm>
#include <vector>

#include "cpu/kernels_avx2.h"
#include "cpu/kernels_impl.h"
#include "cpu/transposed.h"
#include "ggml_types.h"

namespace ffnskip::cpu::avx2 {

namespace {

// ---- codes of one 32-output group as 16-bit integers (lo: positions 0-15, hi: 16-31) ----------
struct Nib4 {
    static void codes(const uint8_t* g, __m256i& lo, __m256i& hi) {
        const __m256i t =
            _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g)));
        lo = _mm256_and_si256(t, _mm256_set1_epi16(0x0F));
        hi = _mm256_srli_epi16(t, 4);
    }
};

struct Nib5 {
    // Bit p of a 16-bit word -> 0x10 in lane p.
    static __m256i bit4(uint32_t bits16) {
        const __m256i sel = _mm256_setr_epi16(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048,
                                              4096, 8192, 16384, -32768);
        const __m256i v = _mm256_and_si256(_mm256_set1_epi16(static_cast<int16_t>(bits16)), sel);
        return _mm256_and_si256(_mm256_cmpeq_epi16(v, sel), _mm256_set1_epi16(0x10));
    }
    static void codes(const uint8_t* g, __m256i& lo, __m256i& hi) {
        Nib4::codes(g, lo, hi);
        uint32_t bits;
        std::memcpy(&bits, g + 16, 4);
        lo = _mm256_or_si256(lo, bit4(bits & 0xFFFF));
        hi = _mm256_or_si256(hi, bit4(bits >> 16));
    }
};

struct Nib6 {
    // Byte k of the 8 high-bit bytes holds positions k, k+8, 16+k, 16+k+8 (2 bits each). Both
    // halves of t hold bytes 0-7; multiplying lanes 0-7 by 4 lines their bits up with lanes 8-15.
    static void codes(const uint8_t* g, __m256i& lo, __m256i& hi) {
        Nib4::codes(g, lo, hi);
        const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(g + 16));
        const __m256i t = _mm256_cvtepu8_epi16(_mm_unpacklo_epi64(b, b));
        const __m256i u = _mm256_mullo_epi16(
            t, _mm256_setr_epi16(4, 4, 4, 4, 4, 4, 4, 4, 1, 1, 1, 1, 1, 1, 1, 1));
        const __m256i m = _mm256_set1_epi16(0x30);
        lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(u, 2), m));
        hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_srli_epi16(u, 2), m));
    }
};

struct Int8 {
    static void codes(const uint8_t* g, __m256i& lo, __m256i& hi) {
        const auto* q = reinterpret_cast<const __m128i*>(g);
        lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(q));
        hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(q + 1));
    }
};

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

// ---- folds: a block's integer sums into the group's outputs ------------------------------------
// Each keeps the 32 outputs of one group (natural order, 8 per vector; init() points it at the
// group starting at output o) and folds one scale block (its 4 int32 accumulators) at a time, in
// the scalar reference's order.

// w = D * (q - offset) [+ M]: Q4_0 (offset 8), Q5_0 (16), Q8_0 (0); Q4_1 / Q5_1 (a min M).
template <int kOffset, bool kMin>
struct FoldPlain {
    __m256 y[4];
    const TransposedView* t;
    size_t P, O;
    void init(const TransposedView& tv, int64_t o) {
        t = &tv;
        P = static_cast<size_t>(tv.n_pad);
        O = static_cast<size_t>(o);
    }
    void block(int64_t b, float dx, float sx, const __m256i* acc) {
        const uint8_t* sc = t->scales + static_cast<size_t>(b) * t->scale_row;
        const __m256 vdx = _mm256_set1_ps(dx), vsx = _mm256_set1_ps(sx);
        const __m256 off = _mm256_set1_ps(static_cast<float>(kOffset) * sx);
        for (int v = 0; v < 4; ++v) {
            const __m256 D = halves8(sc + 2 * (O + 8 * v));
            // D * (dx * isum - offset * sx) + M * sx
            __m256 inner = _mm256_mul_ps(vdx, _mm256_cvtepi32_ps(acc[v]));
            if constexpr (kOffset != 0) inner = _mm256_sub_ps(inner, off);
            y[v] = _mm256_fmadd_ps(D, inner, y[v]);
            if constexpr (kMin)
                y[v] = _mm256_fmadd_ps(halves8(sc + 2 * (P + O + 8 * v)), vsx, y[v]);
        }
    }
    void finish() {}
};

// Q4_K / Q5_K: w = d * sc * q - dmin * mn, summed per super-block (z, zm), then scaled by d, dmin.
struct FoldK45 {
    __m256 y[4], z[4], zm[4];
    const TransposedView* t;
    size_t P, O;
    int64_t super;
    void init(const TransposedView& tv, int64_t o) {
        t = &tv;
        P = static_cast<size_t>(tv.n_pad);
        O = static_cast<size_t>(o);
        super = -1;
        for (int v = 0; v < 4; ++v) z[v] = zm[v] = _mm256_setzero_ps();
    }
    void flush() {
        if (super < 0) return;
        const uint8_t* sup = t->supers + static_cast<size_t>(super) * t->super_row;
        for (int v = 0; v < 4; ++v) {
            y[v] = _mm256_fmadd_ps(halves8(sup + 2 * (O + 8 * v)), z[v], y[v]);
            y[v] = _mm256_fnmadd_ps(halves8(sup + 2 * (P + O + 8 * v)), zm[v], y[v]);
            z[v] = zm[v] = _mm256_setzero_ps();
        }
    }
    void block(int64_t b, float dx, float sx, const __m256i* acc) {
        const int64_t S = b * t->blk / t->super;
        if (S != super) {
            flush();
            super = S;
        }
        const uint8_t* sc = t->scales + static_cast<size_t>(b) * t->scale_row;
        const __m256 vdx = _mm256_set1_ps(dx), vsx = _mm256_set1_ps(sx);
        for (int v = 0; v < 4; ++v) {
            z[v] = _mm256_fmadd_ps(u8x8(sc + O + 8 * v),
                                   _mm256_mul_ps(vdx, _mm256_cvtepi32_ps(acc[v])), z[v]);
            zm[v] = _mm256_fmadd_ps(u8x8(sc + P + O + 8 * v), vsx, zm[v]);
        }
    }
    void finish() { flush(); }
};

// Q6_K: w = d * sc * (q - 32), sc int8 per 16 inputs.
struct FoldK6 {
    __m256 y[4], z[4];
    const TransposedView* t;
    size_t O;
    int64_t super;
    void init(const TransposedView& tv, int64_t o) {
        t = &tv;
        O = static_cast<size_t>(o);
        super = -1;
        for (int v = 0; v < 4; ++v) z[v] = _mm256_setzero_ps();
    }
    void flush() {
        if (super < 0) return;
        const uint8_t* sup = t->supers + static_cast<size_t>(super) * t->super_row;
        for (int v = 0; v < 4; ++v) {
            y[v] = _mm256_fmadd_ps(halves8(sup + 2 * (O + 8 * v)), z[v], y[v]);
            z[v] = _mm256_setzero_ps();
        }
    }
    void block(int64_t b, float dx, float sx, const __m256i* acc) {
        const int64_t S = b * t->blk / t->super;
        if (S != super) {
            flush();
            super = S;
        }
        const uint8_t* sc = t->scales + static_cast<size_t>(b) * t->scale_row;
        const __m256 vdx = _mm256_set1_ps(dx), off = _mm256_set1_ps(32.0f * sx);
        for (int v = 0; v < 4; ++v) {
            const __m256 inner = _mm256_sub_ps(_mm256_mul_ps(vdx, _mm256_cvtepi32_ps(acc[v])), off);
            z[v] = _mm256_fmadd_ps(i8x8(sc + O + 8 * v), inner, z[v]);
        }
    }
    void finish() { flush(); }
};

// How far ahead (in pairs) the rows of later pairs are prefetched: the rows are scattered, so
// the hardware prefetcher cannot follow them (SmolLM2 ffn_down streamed from memory, all rows
// active: 60 -> 50 us; prefetching a whole chunk ahead into L2 instead measured slower).
constexpr int32_t kPairsAhead = 8;

// Inputs per chunk: the active rows of one chunk are walked once per pass over the outputs, and
// their cache lines stay in L1 while the next passes reuse them (a 64-byte line of 4-bit codes
// holds 2 passes of 64 outputs). A K-quant super-block, so its fold ends with the chunk.
constexpr int64_t kChunkInputs = 256;

// One pass: the group of 32 outputs at o over the pairs of blocks [kb0, kb1); part holds its
// outputs so far. One group per pass: with two, the 8 accumulators spilled to the stack
// (in-cache SmolLM2 ffn_down, all rows active: 30 us against 27 us).
template <class C, class F>
void pass(const TransposedView& t, const SparseInput& x, const uint8_t* const* pa,
          const uint8_t* const* pb, int64_t kb0, int64_t kb1, int64_t o, size_t goff, size_t pf_off,
          float* part) {
    const int32_t p0 = x.first[kb0], p_end = x.first[kb1];
    F fold;
    fold.init(t, o);
    for (int v = 0; v < 4; ++v) fold.y[v] = _mm256_loadu_ps(part + 8 * v);
    for (int64_t kb = kb0; kb < kb1; ++kb) {
        __m256i acc[4];
        for (auto& a : acc) a = _mm256_setzero_si256();
        for (int32_t p = x.first[kb]; p < x.first[kb + 1]; ++p) {
            const int32_t i = p - p0;
            if (p + kPairsAhead < p_end) {
                _mm_prefetch(reinterpret_cast<const char*>(pa[i + kPairsAhead] + pf_off),
                             _MM_HINT_T0);
                _mm_prefetch(reinterpret_cast<const char*>(pb[i + kPairsAhead] + pf_off),
                             _MM_HINT_T0);
            }
            __m256i la, ha, lb, hb;
            C::codes(pa[i] + goff, la, ha);
            C::codes(pb[i] + goff, lb, hb);
            const __m256i w = _mm256_set1_epi32(x.packed[p]);
            acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(_mm256_unpacklo_epi16(la, lb), w));
            acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(_mm256_unpackhi_epi16(la, lb), w));
            acc[2] = _mm256_add_epi32(acc[2], _mm256_madd_epi16(_mm256_unpacklo_epi16(ha, hb), w));
            acc[3] = _mm256_add_epi32(acc[3], _mm256_madd_epi16(_mm256_unpackhi_epi16(ha, hb), w));
        }
        fold.block(x.block[kb], x.d[kb], x.s[kb], acc);
    }
    fold.finish();
    for (int v = 0; v < 4; ++v) _mm256_storeu_ps(part + 8 * v, fold.y[v]);
}

template <class C, class F>
void sparse_quant(const TransposedView& t, const SparseInput& x, float* y, int64_t o0, int64_t o1) {
    const size_t gb = t.group_bytes();
    const int64_t n_blocks = static_cast<int64_t>(x.block.size());
    const int64_t n_groups = (o1 - o0 + kTGroup - 1) / kTGroup;
    // This thread's outputs between chunks, and the rows of a chunk's pairs (reused across calls).
    thread_local std::vector<float> part;
    thread_local std::vector<const uint8_t*> pa, pb;
    part.assign(static_cast<size_t>(n_groups * kTGroup), 0.0f);
    const size_t base = static_cast<size_t>(o0 / kTGroup) * gb;
    for (int64_t kb0 = 0; kb0 < n_blocks;) {
        const int64_t chunk = x.block[kb0] * t.blk / kChunkInputs;
        int64_t kb1 = kb0;
        while (kb1 < n_blocks && x.block[kb1] * t.blk / kChunkInputs == chunk) ++kb1;
        const int32_t p0 = x.first[kb0], p1 = x.first[kb1];
        pa.resize(static_cast<size_t>(p1 - p0));
        pb.resize(pa.size());
        for (int32_t p = p0; p < p1; ++p) {
            pa[p - p0] = t.codes + static_cast<size_t>(x.row_a[p]) * t.code_row + base;
            pb[p - p0] = t.codes + static_cast<size_t>(x.row_b[p]) * t.code_row + base;
        }
        for (int64_t g = 0; g < n_groups; ++g) {
            const size_t goff = static_cast<size_t>(g) * gb;
            // Each pass prefetches its own lines of later pairs (a hit but for the passes that
            // start a line; prefetching the next line instead measured no better).
            const size_t pf_off = goff;
            pass<C, F>(t, x, pa.data(), pb.data(), kb0, kb1, o0 + g * kTGroup, goff, pf_off,
                       part.data() + g * kTGroup);
        }
        kb0 = kb1;
    }
    for (int64_t g = 0; g < n_groups; ++g) {
        const int64_t o = o0 + g * kTGroup;
        std::copy(part.data() + g * kTGroup,
                  part.data() + g * kTGroup + std::min<int64_t>(kTGroup, o1 - o), y + o);
    }
}

inline void store_group(const __m256* y, float* dst, int64_t n) {
    if (n == kTGroup) {
        for (int v = 0; v < 4; ++v) _mm256_storeu_ps(dst + 8 * v, y[v]);
        return;
    }
    alignas(32) float tmp[kTGroup];
    for (int v = 0; v < 4; ++v) _mm256_store_ps(tmp + 8 * v, y[v]);
    std::copy(tmp, tmp + n, dst);
}

// Float types: y += x_i * W[i, :] over the active channels, 32 outputs at a time.
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
void sparse_float(const TransposedView& t, const SparseInput& x, float* y, int64_t o0, int64_t o1) {
    constexpr size_t kBytes = kType == GGML_F32 ? 4 : 2;
    for (int64_t o = o0; o < o1; o += kTGroup) {
        const size_t goff = static_cast<size_t>(o) * kBytes;
        __m256 acc[4];
        for (auto& a : acc) a = _mm256_setzero_ps();
        for (int64_t k = 0; k < x.n_active; ++k) {
            if (k + kPairsAhead < x.n_active) {
                _mm_prefetch(reinterpret_cast<const char*>(
                                 t.codes +
                                 static_cast<size_t>(x.index[k + kPairsAhead]) * t.code_row + goff),
                             _MM_HINT_T0);
            }
            const uint8_t* row = t.codes + static_cast<size_t>(x.index[k]) * t.code_row + goff;
            const __m256 v = _mm256_set1_ps(x.value[k]);
            for (int j = 0; j < 4; ++j)
                acc[j] = _mm256_fmadd_ps(v, weights8<kType>(row + 8 * kBytes * j), acc[j]);
        }
        store_group(acc, y + o, std::min<int64_t>(kTGroup, o1 - o));
    }
}

}  // namespace

void sparse_matvec(const TransposedView& t, const SparseInput& x, float* y, int64_t o0,
                   int64_t o1) {
    switch (t.type) {
        case GGML_Q4_0:
            return sparse_quant<Nib4, FoldPlain<8, false>>(t, x, y, o0, o1);
        case GGML_Q4_1:
            return sparse_quant<Nib4, FoldPlain<0, true>>(t, x, y, o0, o1);
        case GGML_Q5_0:
            return sparse_quant<Nib5, FoldPlain<16, false>>(t, x, y, o0, o1);
        case GGML_Q5_1:
            return sparse_quant<Nib5, FoldPlain<0, true>>(t, x, y, o0, o1);
        case GGML_Q8_0:
            return sparse_quant<Int8, FoldPlain<0, false>>(t, x, y, o0, o1);
        case GGML_Q4_K:
            return sparse_quant<Nib4, FoldK45>(t, x, y, o0, o1);
        case GGML_Q5_K:
            return sparse_quant<Nib5, FoldK45>(t, x, y, o0, o1);
        case GGML_Q6_K:
            return sparse_quant<Nib6, FoldK6>(t, x, y, o0, o1);
        case GGML_F32:
            return sparse_float<GGML_F32>(t, x, y, o0, o1);
        case GGML_F16:
            return sparse_float<GGML_F16>(t, x, y, o0, o1);
        default:
            return sparse_float<GGML_BF16>(t, x, y, o0, o1);
    }
}

}  // namespace ffnskip::cpu::avx2
