// AVX2 channel-sparse matvec on weights laid out by input channel (transposed.h).
//
// A thread computes every output over a part of the active blocks (threads split a product by
// input blocks and add their outputs: W_down's 9 groups of 64 outputs split unevenly by output).
// Per scale block it reads the active channels' rows four at a time, each row whole and in
// address order (four ascending streams), prefetching the rows two chunks ahead, then folds the
// block's integer sums with the block's scale table.
//
// The products use no shuffles (the previous kernel paired two channels with unpacks and was
// bound by the one shuffle port, 3 shuffles per channel and 32 outputs): a channel's codes stay
// bytes, and vpmaddubsw multiplies them by its 8-bit term placed in every other byte,
// (q, 0) for the even bytes and (0, q) for the odd ones, so each 16-bit lane holds one product.
// Blocks with second terms (transposed.h SparseInput::fine) take a second pass over the same
// rows, then in L1, whose sums widen with weight 1 against the first terms' 254.
// Lanes add up in 16 bits (in an L1 buffer of the groups) for a run of channels short
// enough not to overflow (C::kRun), then widen to 32 bits with vpmaddwd by (1, 0) and (0, 1).
// The stored order of a code group (transposed.h) makes the widened vectors outputs
// 8 r .. 8 r + 7 in order.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/kernels_avx2.h"
#include "cpu/kernels_impl.h"
#include "cpu/transposed.h"
#include "ggml_types.h"

namespace ffnskip::cpu::avx2 {

namespace {

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

// The 16-bit sums of one code group: el/ol (even and odd bytes of the low nibbles), eh/oh.
struct Sums16 {
    __m256i el, ol, eh, oh;
};
// The 32-bit sums of one code group: outputs 8 v .. 8 v + 7 in v[v].
struct Sums32 {
    __m256i v[8];
};

// What add_channels prefetches while it computes: the rows of the channels kAheadRows later (read
// kAheadRows / 4 chunks later), and at a block's first chunk the next block's scale table. A
// burst per row or table stalled the pipeline once the line fill buffers were full; spread over
// the groups, one line per row and line crossed. Hint T2: on SmolLM2's profile T2 decoded x1.10
// of dense at 41% saved where T0 gave x0.99 and T1 x1.08 (single runs, noisy).
constexpr int kAheadRows = 8;
struct Ahead {
    const uint8_t* row[4] = {nullptr, nullptr, nullptr, nullptr};
    int rows = 0;
    const uint8_t* table = nullptr;  // group g's entries at table + g * tstep (and + tfield)
    size_t tstep = 0, tfield = 0;
};

// Adds M channels' products (their rows at row[j], 8-bit values in xe[j]) for each of the W
// groups to sums[g].
template <class C, int M>
__attribute__((always_inline)) inline void add_channels(const uint8_t* const* row,
                                                        const __m256i* xe, int64_t W, Sums16* sums,
                                                        const Ahead& ahead) {
    __m256i xo[M];
    for (int j = 0; j < M; ++j) xo[j] = _mm256_slli_epi16(xe[j], 8);
    for (int64_t g = 0; g < W; ++g) {
        const size_t off = static_cast<size_t>(g) * C::kBytes;
        // The line holding this group's last byte, when the group reaches into a new line.
        if (g == 0 || (off + C::kBytes - 1) / 64 != (off - 1) / 64) {
            for (int j = 0; j < ahead.rows; ++j)
                _mm_prefetch(reinterpret_cast<const char*>(ahead.row[j] + off + C::kBytes - 1),
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
        Sums16 s = sums[g];
        for (int j = 0; j < M; ++j) {
            __m256i lo, hi;
            C::codes(row[j] + off, lo, hi);
            s.el = _mm256_add_epi16(s.el, _mm256_maddubs_epi16(lo, xe[j]));
            s.ol = _mm256_add_epi16(s.ol, _mm256_maddubs_epi16(lo, xo[j]));
            s.eh = _mm256_add_epi16(s.eh, _mm256_maddubs_epi16(hi, xe[j]));
            s.oh = _mm256_add_epi16(s.oh, _mm256_maddubs_epi16(hi, xo[j]));
        }
        sums[g] = s;
    }
}

// acc[g] += 254 * (the 16-bit sums of the first terms) + those of the second terms, widened. Byte
// 4 j + r of a group is output 8 r + j: even lanes of el are r = 0, of ol r = 1, odd lanes of el
// r = 2, of ol r = 3.
inline void widen(const Sums16* first, const Sums16* second, int64_t W, Sums32* acc) {
    const __m256i even1 = _mm256_set1_epi32(254), odd1 = _mm256_set1_epi32(254 << 16);
    const __m256i even2 = _mm256_set1_epi32(1), odd2 = _mm256_set1_epi32(1 << 16);
    auto both = [&](__m256i a1, __m256i a2, __m256i w1, __m256i w2) {
        return _mm256_add_epi32(_mm256_madd_epi16(a1, w1), _mm256_madd_epi16(a2, w2));
    };
    const Sums16 zero{_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                      _mm256_setzero_si256()};
    for (int64_t g = 0; g < W; ++g) {
        const Sums16& s = first[g];
        const Sums16& t = second != nullptr ? second[g] : zero;
        __m256i* a = acc[g].v;
        a[0] = _mm256_add_epi32(a[0], both(s.el, t.el, even1, even2));
        a[1] = _mm256_add_epi32(a[1], both(s.ol, t.ol, even1, even2));
        a[2] = _mm256_add_epi32(a[2], both(s.el, t.el, odd1, odd2));
        a[3] = _mm256_add_epi32(a[3], both(s.ol, t.ol, odd1, odd2));
        a[4] = _mm256_add_epi32(a[4], both(s.eh, t.eh, even1, even2));
        a[5] = _mm256_add_epi32(a[5], both(s.oh, t.oh, even1, even2));
        a[6] = _mm256_add_epi32(a[6], both(s.eh, t.eh, odd1, odd2));
        a[7] = _mm256_add_epi32(a[7], both(s.oh, t.oh, odd1, odd2));
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
// Each keeps the outputs (and a K-quant super-block's sums) in thread-local buffers, in
// the scalar reference's order of operations.
struct SliceOut {
    std::vector<float> y, z, zm;
    std::vector<Sums16> sums, sums2;  // per group: a run's 16-bit sums of each term
    std::vector<Sums32> acc;          // per group: a block's 32-bit sums
    void reset(size_t n, bool super) {
        y.assign(n, 0.0f);
        if (super) {
            z.assign(n, 0.0f);
            zm.assign(n, 0.0f);
        }
        sums.resize(n / kTGroup);
        sums2.resize(n / kTGroup);
        acc.resize(n / kTGroup);
    }
};
thread_local SliceOut t_out;

// w = D * (q - offset) [+ M]: Q4_0 (8), Q5_0 (16), Q8_0 (128); Q4_1 / Q5_1 (a min M).
template <int kOffset, bool kMin>
struct FoldPlain {
    static constexpr bool kSuper = false;
    size_t W64 = 0;
    void init(const TransposedView& t) { W64 = static_cast<size_t>(t.n_pad); }
    void super_block(int64_t, const TransposedView&) {}
    // The group of outputs e .. e + 63 (table tbl).
    void block(const uint8_t* tbl, size_t e, float dx, int32_t qsum, const __m256i* acc) {
        const __m256i offq = _mm256_set1_epi32(kOffset * qsum);
        const __m256 vdx = _mm256_set1_ps(dx), vsx = _mm256_set1_ps(dx * static_cast<float>(qsum));
        float* y = t_out.y.data() + e;
        const uint8_t* D = tbl + 2 * e;
        for (int v = 0; v < 8; ++v) {
            __m256 out = _mm256_loadu_ps(y + 8 * v);
            out = _mm256_fmadd_ps(halves8(D + 16 * v), block_product(acc[v], offq, vdx), out);
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
    void init(const TransposedView& t) {
        W64 = static_cast<size_t>(t.n_pad);
        super = -1;
    }
    void flush() {
        if (super < 0) return;
        float* y = t_out.y.data();
        float* z = t_out.z.data();
        float* zm = t_out.zm.data();
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
    void block(const uint8_t* tbl, size_t e, float dx, int32_t qsum, const __m256i* acc) {
        const __m256i offq = _mm256_set1_epi32((kQ6 ? 32 : 0) * qsum);
        const __m256 vdx = _mm256_set1_ps(dx), vsx = _mm256_set1_ps(dx * static_cast<float>(qsum));
        float* z = t_out.z.data() + e;
        float* zm = t_out.zm.data() + e;
        const uint8_t* sc = tbl + e;
        for (int v = 0; v < 8; ++v) {
            const __m256 p = block_product(acc[v], offq, vdx);
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

template <class C, class F>
void units_quant(const TransposedView& t, const SparseInput& x, int64_t k0, int64_t k1, float* y) {
    const int64_t W = t.groups();
    const size_t W64 = static_cast<size_t>(W) * kTGroup;
    const int bps = t.blocks_per_super();
    t_out.reset(W64, F::kSuper);
    F fold;
    fold.init(t);
    // Every active channel's row, in order, for the prefetches ahead.
    thread_local std::vector<const uint8_t*> rowp;
    rowp.resize(x.slot.size());
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
        Sums32* acc = t_out.acc.data();
        std::memset(static_cast<void*>(acc), 0, sizeof(Sums32) * static_cast<size_t>(W));
        for (int32_t r0 = c_begin; r0 < c_end; r0 += C::kRun) {
            const int32_t r1 = std::min(c_end, r0 + C::kRun);
            Sums16* sums = t_out.sums.data();
            Sums16* sums2 = t_out.sums2.data();
            std::memset(static_cast<void*>(sums), 0, sizeof(Sums16) * static_cast<size_t>(W));
            if (fine)
                std::memset(static_cast<void*>(sums2), 0, sizeof(Sums16) * static_cast<size_t>(W));
            for (int32_t c = r0; c < r1; c += 4) {
                __m256i xe[4], xe2[4];
                const int m = std::min(4, r1 - c);
                for (int j = 0; j < m; ++j) {
                    xe[j] = _mm256_set1_epi32(static_cast<int32_t>(x.pattern[c + j]));
                    xe2[j] = _mm256_set1_epi32(static_cast<int32_t>(x.pattern2[c + j]));
                }
                Ahead ahead;
                const int32_t a0 = c + kAheadRows;
                ahead.rows = std::max(0, std::min(4, n_rows - a0));
                for (int j = 0; j < ahead.rows; ++j)
                    ahead.row[j] = rowp[static_cast<size_t>(a0 + j)];
                if (c == c_begin && next_table != nullptr) {
                    ahead.table = next_table;
                    ahead.tstep = tstep;
                    ahead.tfield = tfield;
                }
                const uint8_t* const* row = rowp.data() + c;
                // The second terms over the same rows, now in L1, without prefetches.
                const Ahead none;
                switch (m) {
                    case 4:
                        add_channels<C, 4>(row, xe, W, sums, ahead);
                        if (fine) add_channels<C, 4>(row, xe2, W, sums2, none);
                        break;
                    case 3:
                        add_channels<C, 3>(row, xe, W, sums, ahead);
                        if (fine) add_channels<C, 3>(row, xe2, W, sums2, none);
                        break;
                    case 2:
                        add_channels<C, 2>(row, xe, W, sums, ahead);
                        if (fine) add_channels<C, 2>(row, xe2, W, sums2, none);
                        break;
                    default:
                        add_channels<C, 1>(row, xe, W, sums, ahead);
                        if (fine) add_channels<C, 1>(row, xe2, W, sums2, none);
                        break;
                }
            }
            widen(sums, fine ? sums2 : nullptr, W, acc);
        }
        for (int64_t g = 0; g < W; ++g)
            fold.block(tbl, static_cast<size_t>(g) * kTGroup, x.d[kb], x.qsum[kb], acc[g].v);
    }
    fold.finish();
    std::copy(t_out.y.data(), t_out.y.data() + t.n_out, y);
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
        std::copy(tmp, tmp + std::min<int64_t>(kTGroup, t.n_out - o), y + o);
    }
}

void units_matvec(const TransposedView& t, const SparseInput& x, int64_t k0, int64_t k1, float* y) {
    switch (t.type) {
        case GGML_Q4_0:
            return units_quant<Nib4, FoldPlain<8, false>>(t, x, k0, k1, y);
        case GGML_Q4_1:
            return units_quant<Nib4, FoldPlain<0, true>>(t, x, k0, k1, y);
        case GGML_Q5_0:
            return units_quant<Nib5, FoldPlain<16, false>>(t, x, k0, k1, y);
        case GGML_Q5_1:
            return units_quant<Nib5, FoldPlain<0, true>>(t, x, k0, k1, y);
        case GGML_Q8_0:
            return units_quant<Int8, FoldPlain<128, false>>(t, x, k0, k1, y);
        case GGML_Q4_K:
            return units_quant<Nib4, FoldK<false>>(t, x, k0, k1, y);
        case GGML_Q5_K:
            return units_quant<Nib5, FoldK<false>>(t, x, k0, k1, y);
        case GGML_Q6_K:
            return units_quant<Nib6, FoldK<true>>(t, x, k0, k1, y);
        case GGML_F32:
            return units_float<GGML_F32>(t, x, k0, k1, y);
        case GGML_F16:
            return units_float<GGML_F16>(t, x, k0, k1, y);
        default:
            return units_float<GGML_BF16>(t, x, k0, k1, y);
    }
}

}  // namespace

void sparse_matvec(const TransposedView& t, const SparseInput& x, float* y, int64_t k0,
                   int64_t k1) {
    units_matvec(t, x, k0, k1, y);
}

}  // namespace ffnskip::cpu::avx2
