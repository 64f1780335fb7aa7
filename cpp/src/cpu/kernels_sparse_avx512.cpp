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

struct V512 {
    using T = __m512i;
    static T zero() { return _mm512_setzero_si512(); }
    static T set1(uint32_t v) { return _mm512_set1_epi32(static_cast<int32_t>(v)); }
    static T slli16(T a, int n) { return _mm512_slli_epi16(a, n); }
    static T add16(T a, T b) { return _mm512_add_epi16(a, b); }
    static T add32(T a, T b) { return _mm512_add_epi32(a, b); }
    static T maddubs(T u8, T s8) { return _mm512_maddubs_epi16(u8, s8); }
    static T madd(T a, T b) { return _mm512_madd_epi16(a, b); }
};

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
        const size_t off = static_cast<size_t>(g0) * C::kBytes;
        prefetch_ahead<C::kBytes>(ahead, g0, off);
        if constexpr (kPair) prefetch_ahead<C::kBytes>(ahead, g0 + 1, off + C::kBytes);
        RunSums<V512, kFine> s;
        for (int j = 0; j < m; ++j) {
            __m512i lo, hi;
            codes2<C, kPair>(row[j] + off, lo, hi);
            s.add(lo, hi, p1[j], kFine ? p2[j] : 0u);
        }
        s.widen_into(acc.v);
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
