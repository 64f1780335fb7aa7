// AVX-512 (F, BW, VL, DQ) lanes for the channel-sparse matvec of the AVX2 level (the shared body
// and its design: sparse_x86.h): two 64-output code groups per vector. The product is bound by
// its multiplies and adds, not by the bytes it reads (its 16-bit lanes hold one product each),
// so twice the lanes per instruction make it ~1.25x faster than the 256-bit lanes where a CPU has
// AVX-512 (one thread, SmolLM2's shapes, in L2). The dense kernels stay AVX2.
#include "cpu/kernels_avx2.h"
#include "cpu/kernels_impl.h"
#include "cpu/sparse_x86.h"

namespace ffnskip::cpu::avx512 {

namespace {

// Group g0's codes in the low half, g0 + 1's (zero when kPair is false) in the high half.
template <class C, bool kPair>
__attribute__((always_inline)) inline void codes2(const uint8_t* g0, __m512i& lo, __m512i& hi) {
    if constexpr (C::kBytes == 32) {  // Nib4: the two groups are one 64-byte load
        const __m512i v =
            kPair ? _mm512_loadu_si512(g0) : _mm512_maskz_loadu_epi8(0xFFFFFFFFull, g0);
        const __m512i m = _mm512_set1_epi8(0x0F);
        lo = _mm512_and_si512(v, m);
        hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m);
    } else {
        __m256i lo0, hi0, lo1 = _mm256_setzero_si256(), hi1 = _mm256_setzero_si256();
        C::codes(g0, lo0, hi0);
        if constexpr (kPair) C::codes(g0 + C::kBytes, lo1, hi1);
        // (masked broadcasts, not vinserti64x4: GCC 12 warns of the latter's undefined upper
        // half, in its own header)
        const __m512i z = _mm512_setzero_si512();
        lo = _mm512_mask_broadcast_i64x4(_mm512_mask_broadcast_i64x4(z, 0x0F, lo0), 0xF0, lo1);
        hi = _mm512_mask_broadcast_i64x4(_mm512_mask_broadcast_i64x4(z, 0x0F, hi0), 0xF0, hi1);
    }
}

struct Lanes512 {
    static constexpr int kGroups = 2;
    // The 32-bit sums of two code groups: outputs 8 v .. 8 v + 7 of each in v[v]'s halves.
    struct Sums32 {
        __m512i v[8];
    };

    // A run's products for groups g0 and (with kPair) g0 + 1, added to their sums acc.
    template <class C, bool kFine, bool kPair>
    __attribute__((always_inline)) static void run_pair(const uint8_t* const* row,
                                                        const uint32_t* p1, const uint32_t* p2,
                                                        int m, int64_t g0, Sums32& acc,
                                                        const Ahead& ahead) {
        const __m512i even1 = _mm512_set1_epi32(254), odd1 = _mm512_set1_epi32(254 << 16);
        const __m512i even2 = _mm512_set1_epi32(1), odd2 = _mm512_set1_epi32(1 << 16);
        const size_t off = static_cast<size_t>(g0) * C::kBytes;
        prefetch_ahead<C::kBytes>(ahead, g0, off);
        if constexpr (kPair) prefetch_ahead<C::kBytes>(ahead, g0 + 1, off + C::kBytes);
        __m512i el = _mm512_setzero_si512(), ol = el, eh = el, oh = el;
        __m512i el2 = el, ol2 = el, eh2 = el, oh2 = el;
        for (int j = 0; j < m; ++j) {
            __m512i lo, hi;
            codes2<C, kPair>(row[j] + off, lo, hi);
            const __m512i xe = _mm512_set1_epi32(static_cast<int32_t>(p1[j]));
            const __m512i xo = _mm512_slli_epi16(xe, 8);
            el = _mm512_add_epi16(el, _mm512_maddubs_epi16(lo, xe));
            ol = _mm512_add_epi16(ol, _mm512_maddubs_epi16(lo, xo));
            eh = _mm512_add_epi16(eh, _mm512_maddubs_epi16(hi, xe));
            oh = _mm512_add_epi16(oh, _mm512_maddubs_epi16(hi, xo));
            if constexpr (kFine) {
                const __m512i ye = _mm512_set1_epi32(static_cast<int32_t>(p2[j]));
                const __m512i yo = _mm512_slli_epi16(ye, 8);
                el2 = _mm512_add_epi16(el2, _mm512_maddubs_epi16(lo, ye));
                ol2 = _mm512_add_epi16(ol2, _mm512_maddubs_epi16(lo, yo));
                eh2 = _mm512_add_epi16(eh2, _mm512_maddubs_epi16(hi, ye));
                oh2 = _mm512_add_epi16(oh2, _mm512_maddubs_epi16(hi, yo));
            }
        }
        auto wide = [&](__m512i a1, __m512i a2, __m512i w1, __m512i w2) {
            __m512i r = _mm512_madd_epi16(a1, w1);
            if constexpr (kFine) r = _mm512_add_epi32(r, _mm512_madd_epi16(a2, w2));
            return r;
        };
        __m512i* a = acc.v;
        a[0] = _mm512_add_epi32(a[0], wide(el, el2, even1, even2));
        a[1] = _mm512_add_epi32(a[1], wide(ol, ol2, even1, even2));
        a[2] = _mm512_add_epi32(a[2], wide(el, el2, odd1, odd2));
        a[3] = _mm512_add_epi32(a[3], wide(ol, ol2, odd1, odd2));
        a[4] = _mm512_add_epi32(a[4], wide(eh, eh2, even1, even2));
        a[5] = _mm512_add_epi32(a[5], wide(oh, oh2, even1, even2));
        a[6] = _mm512_add_epi32(a[6], wide(eh, eh2, odd1, odd2));
        a[7] = _mm512_add_epi32(a[7], wide(oh, oh2, odd1, odd2));
    }

    // As Lanes256::add_run (kernels_sparse_avx2.cpp), two groups per vector.
    template <class C, bool kFine>
    static void add_run(const uint8_t* const* row, const uint32_t* p1, const uint32_t* p2, int m,
                        int64_t W, Sums32* acc, const Ahead& ahead) {
        int64_t p = 0;
        for (; 2 * p + 1 < W; ++p) run_pair<C, kFine, true>(row, p1, p2, m, 2 * p, acc[p], ahead);
        if (2 * p < W) run_pair<C, kFine, false>(row, p1, p2, m, 2 * p, acc[p], ahead);
    }

    // Group g's 32-bit sums, vector v at [v * kGroups]: the low or high half of acc[g / 2].v[v].
    static const __m256i* group_sums(const Sums32* acc, int64_t g) {
        return reinterpret_cast<const __m256i*>(acc[g / 2].v) + (g % 2);
    }
};

}  // namespace

void sparse_matvec(const TransposedView& t, const SparseInput& x, float* y, int64_t k0,
                   int64_t k1) {
    units_matvec<Lanes512>(t, x, k0, k1, y);
}

}  // namespace ffnskip::cpu::avx512
