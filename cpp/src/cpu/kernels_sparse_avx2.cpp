// AVX2 channel-sparse matvec (the shared body and its design: sparse_x86.h): one 64-output code
// group per vector. Byte 4 j + r of a group is output 8 r + j: even lanes of el (the low nibbles'
// even bytes) are r = 0, of ol (odd bytes) r = 1, odd lanes of el r = 2, of ol r = 3; eh and oh
// the same for the high nibbles, r + 4.
#include <atomic>

#include "cpu/kernels.h"
#include "cpu/kernels_avx2.h"
#include "cpu/kernels_impl.h"
#include "cpu/sparse_x86.h"

namespace ffnskip::cpu::avx2 {

namespace {

struct Lanes256 {
    static constexpr int kGroups = 1;
    // The 32-bit sums of one code group: outputs 8 v .. 8 v + 7 in v[v].
    struct Sums32 {
        __m256i v[8];
    };

    // Adds the products of a run of m channels (rows row[j], terms p1[j] and, with kFine, p2[j])
    // to acc, group by group: the run's 16-bit sums stay in registers and widen at once.
    template <class C, bool kFine>
    static void add_run(const uint8_t* const* row, const uint32_t* p1, const uint32_t* p2, int m,
                        int64_t W, Sums32* acc, const Ahead& ahead) {
        const __m256i even1 = _mm256_set1_epi32(254), odd1 = _mm256_set1_epi32(254 << 16);
        const __m256i even2 = _mm256_set1_epi32(1), odd2 = _mm256_set1_epi32(1 << 16);
        for (int64_t g = 0; g < W; ++g) {
            const size_t off = static_cast<size_t>(g) * C::kBytes;
            prefetch_ahead<C::kBytes>(ahead, g, off);
            __m256i el = _mm256_setzero_si256(), ol = el, eh = el, oh = el;
            __m256i el2 = el, ol2 = el, eh2 = el, oh2 = el;
            for (int j = 0; j < m; ++j) {
                __m256i lo, hi;
                C::codes(row[j] + off, lo, hi);
                const __m256i xe = _mm256_set1_epi32(static_cast<int32_t>(p1[j]));
                const __m256i xo = _mm256_slli_epi16(xe, 8);
                el = _mm256_add_epi16(el, _mm256_maddubs_epi16(lo, xe));
                ol = _mm256_add_epi16(ol, _mm256_maddubs_epi16(lo, xo));
                eh = _mm256_add_epi16(eh, _mm256_maddubs_epi16(hi, xe));
                oh = _mm256_add_epi16(oh, _mm256_maddubs_epi16(hi, xo));
                if constexpr (kFine) {
                    const __m256i ye = _mm256_set1_epi32(static_cast<int32_t>(p2[j]));
                    const __m256i yo = _mm256_slli_epi16(ye, 8);
                    el2 = _mm256_add_epi16(el2, _mm256_maddubs_epi16(lo, ye));
                    ol2 = _mm256_add_epi16(ol2, _mm256_maddubs_epi16(lo, yo));
                    eh2 = _mm256_add_epi16(eh2, _mm256_maddubs_epi16(hi, ye));
                    oh2 = _mm256_add_epi16(oh2, _mm256_maddubs_epi16(hi, yo));
                }
            }
            auto wide = [&](__m256i a1, __m256i a2, __m256i w1, __m256i w2) {
                __m256i r = _mm256_madd_epi16(a1, w1);
                if constexpr (kFine) r = _mm256_add_epi32(r, _mm256_madd_epi16(a2, w2));
                return r;
            };
            __m256i* a = acc[g].v;
            a[0] = _mm256_add_epi32(a[0], wide(el, el2, even1, even2));
            a[1] = _mm256_add_epi32(a[1], wide(ol, ol2, even1, even2));
            a[2] = _mm256_add_epi32(a[2], wide(el, el2, odd1, odd2));
            a[3] = _mm256_add_epi32(a[3], wide(ol, ol2, odd1, odd2));
            a[4] = _mm256_add_epi32(a[4], wide(eh, eh2, even1, even2));
            a[5] = _mm256_add_epi32(a[5], wide(oh, oh2, even1, even2));
            a[6] = _mm256_add_epi32(a[6], wide(eh, eh2, odd1, odd2));
            a[7] = _mm256_add_epi32(a[7], wide(oh, oh2, odd1, odd2));
        }
    }

    // Group g's 32-bit sums, vector v at [v * kGroups].
    static const __m256i* group_sums(const Sums32* acc, int64_t g) { return acc[g].v; }
};

std::atomic<int> g_lanes{cpu_has_avx512() ? 512 : 256};

}  // namespace

void sparse_matvec(const TransposedView& t, const SparseInput& x, float* y, int64_t k0,
                   int64_t k1) {
    if (g_lanes.load(std::memory_order_relaxed) == 512)
        return avx512::sparse_matvec(t, x, y, k0, k1);
    units_matvec<Lanes256>(t, x, k0, k1, y);
}

}  // namespace ffnskip::cpu::avx2

namespace ffnskip::cpu {

int sparse_lanes() {
    return avx2::g_lanes.load();
}

bool set_sparse_lanes(int bits) {
    if (bits != 256 && !(bits == 512 && cpu_has_avx512())) return false;
    avx2::g_lanes.store(bits);
    return true;
}

}  // namespace ffnskip::cpu
