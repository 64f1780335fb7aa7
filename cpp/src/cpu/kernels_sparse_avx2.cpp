// AVX2 channel-sparse matvec (the shared body and its design: sparse_x86.h): one 64-output code
// group per vector.
#include <atomic>

#include "cpu/kernels.h"
#include "cpu/kernels_avx2.h"
#include "cpu/kernels_impl.h"
#include "cpu/sparse_x86.h"

namespace ffnskip::cpu::avx2 {

namespace {

struct V256 {
    using T = __m256i;
    static T zero() { return _mm256_setzero_si256(); }
    static T set1(uint32_t v) { return _mm256_set1_epi32(static_cast<int32_t>(v)); }
    static T slli16(T a, int n) { return _mm256_slli_epi16(a, n); }
    static T add16(T a, T b) { return _mm256_add_epi16(a, b); }
    static T add32(T a, T b) { return _mm256_add_epi32(a, b); }
    static T maddubs(T u8, T s8) { return _mm256_maddubs_epi16(u8, s8); }
    static T madd(T a, T b) { return _mm256_madd_epi16(a, b); }
};

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
        for (int64_t g = 0; g < W; ++g) {
            const size_t off = static_cast<size_t>(g) * C::kBytes;
            prefetch_ahead<C::kBytes>(ahead, g, off);
            RunSums<V256, kFine> s;
            for (int j = 0; j < m; ++j) {
                __m256i lo, hi;
                C::codes(row[j] + off, lo, hi);
                s.add(lo, hi, p1[j], kFine ? p2[j] : 0u);
            }
            s.widen_into(acc[g].v);
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
