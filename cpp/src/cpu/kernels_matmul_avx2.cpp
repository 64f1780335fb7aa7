// AVX2 integer matmul for quantized weights against 8-bit activations.
//
// One tile computes R weight rows x NT tokens: each weight block is decoded to 32 codes once and
// multiplied (vpmaddubsw: unsigned x signed bytes) with the NT token blocks, so decoding is
// amortised over tokens and activation loads over rows. Decode (1 token) uses 4 rows for
// independent accumulation chains; prompts use 2 x 4 (all accumulators stay in registers).
#include <algorithm>

#include "cpu/kernels_avx2.h"
#include "cpu/kernels_impl.h"
#include "ggml_types.h"

namespace ffnskip::cpu::avx2 {

namespace {

// Rows and token rows of one tile; tokens index prepared activation rows.
struct Tile {
    const uint8_t* rows[4];
    const uint8_t* acts[4];
    float* out[4][4];  // out[r][t]
};

// ---- 32-element block types ----------------------------------------------------------------
// Blocks are processed in chunks so that the per-block mins of a row fit in a stack buffer; their
// contribution sum_b m[b] * s[b] is then a contiguous float dot product.
constexpr int64_t kChunk = 64;

template <class T, int R, int NT>
void tile32(const Tile& tl, int64_t nb) {
    using Block = typename T::Block;
    const __m256i ones = _mm256_set1_epi16(1);
    float total[R][NT] = {};
    for (int64_t c0 = 0; c0 < nb; c0 += kChunk) {
        const int64_t c1 = std::min(nb, c0 + kChunk);
        __m256 acc[R][NT];
        for (int r = 0; r < R; ++r)
            for (int t = 0; t < NT; ++t) acc[r][t] = _mm256_setzero_ps();
        alignas(32) float mins[R][kChunk];
        for (int64_t b = c0; b < c1; ++b) {
            for (int r = 0; r < R; ++r) {
                const Block& blk = reinterpret_cast<const Block*>(tl.rows[r])[b];
                const __m256i w = T::codes(blk);
                __m256 dw;
                if constexpr (T::kMin) {  // d and m are adjacent halves: one conversion for both
                    uint32_t dm16;
                    std::memcpy(&dm16, &blk.d, 4);
                    const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dm16)));
                    dw = _mm256_broadcastss_ps(dm);
                    _mm_store_ss(&mins[r][b - c0], _mm_movehdup_ps(dm));
                } else {
                    dw = _mm256_set1_ps(half(blk.d));
                }
                const __m256i wabs = T::kSigned ? _mm256_sign_epi8(w, w) : w;
                for (int t = 0; t < NT; ++t) {
                    const __m256i a =
                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tl.acts[t] + 32 * b));
                    const __m256i p =
                        _mm256_maddubs_epi16(wabs, T::kSigned ? _mm256_sign_epi8(a, w) : a);
                    const __m256 s = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
                    const auto* ad = reinterpret_cast<const float*>(tl.acts[t] + 32 * nb);
                    acc[r][t] = _mm256_fmadd_ps(s, _mm256_mul_ps(dw, _mm256_broadcast_ss(ad + b)),
                                                acc[r][t]);
                }
            }
        }
        for (int r = 0; r < R; ++r) {
            for (int t = 0; t < NT; ++t) {
                if (T::kMin) {
                    const float* as = reinterpret_cast<const float*>(tl.acts[t] + 32 * nb) + nb;
                    int64_t b = c0;
                    __m256 m = _mm256_setzero_ps();
                    for (; b + 8 <= c1; b += 8)
                        m = _mm256_fmadd_ps(_mm256_load_ps(&mins[r][b - c0]),
                                            _mm256_loadu_ps(as + b), m);
                    float ms = hsum(m);
                    for (; b < c1; ++b) ms += mins[r][b - c0] * as[b];
                    total[r][t] += ms;
                }
                total[r][t] += hsum(acc[r][t]);
            }
        }
    }
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < NT; ++t) *tl.out[r][t] = total[r][t];
}

// ---- K-quants ------------------------------------------------------------------------------
// Per super-block, integer accumulators collect sum_j scale_j * dot(codes_j, acts_j); the mins of
// Q4_K/Q5_K and the -32 offset of Q6_K go through the activations' per-16 sums (one vpmaddwd).
template <int kType>
struct KRow {
    float d = 0, dmin = 0;
    __m256i corr;      // per-16 coefficients applied to the activation sums
    int16_t sc[16];    // Q6_K: the 16 scales
    uint64_t sc8 = 0;  // Q4_K/Q5_K: the 8 six-bit scales, one per byte
};

template <int kType>
inline void k_prepare(const uint8_t* row, int64_t i, KRow<kType>& k) {
    if constexpr (kType == GGML_Q6_K) {
        const block_q6_K& b = reinterpret_cast<const block_q6_K*>(row)[i];
        k.d = half(b.d);
        const __m256i s16 =
            _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales)));
        k.corr = _mm256_slli_epi16(s16, 5);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(k.sc), s16);
    } else {
        using Block = std::conditional_t<kType == GGML_Q4_K, block_q4_K, block_q5_K>;
        const Block& b = reinterpret_cast<const Block*>(row)[i];
        k.d = half(b.d);
        k.dmin = half(b.dmin);
        // scale_min_k4 on whole 32-bit words: per-byte stores followed by a wide load would
        // stall on store forwarding once per super-block and row.
        uint32_t s[3];
        std::memcpy(s, b.scales, 12);
        const uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
        const uint32_t sc_lo = s[0] & m6, mn_lo = s[1] & m6;
        const uint32_t sc_hi = (s[2] & m4) | ((s[0] >> 6) & m2) << 4;
        const uint32_t mn_hi = ((s[2] >> 4) & m4) | ((s[1] >> 6) & m2) << 4;
        k.sc8 = sc_lo | static_cast<uint64_t>(sc_hi) << 32;
        const uint64_t m8 = mn_lo | static_cast<uint64_t>(mn_hi) << 32;
        const __m128i m16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<int64_t>(m8)));
        k.corr = _mm256_set_m128i(_mm_unpackhi_epi16(m16, m16), _mm_unpacklo_epi16(m16, m16));
    }
}

template <int kType>
inline __m256i k_codes(const uint8_t* row, int64_t i, int j) {
    if constexpr (kType == GGML_Q4_K) {
        return q4k_codes(reinterpret_cast<const block_q4_K*>(row)[i].qs, j);
    } else if constexpr (kType == GGML_Q5_K) {
        const block_q5_K& b = reinterpret_cast<const block_q5_K*>(row)[i];
        return q5k_codes(b.qs, b.qh, j);
    } else {
        return q6k_codes(reinterpret_cast<const block_q6_K*>(row)[i], j);
    }
}

template <int kType>
inline __m256i k_scale(const KRow<kType>& k, int j) {
    if constexpr (kType == GGML_Q6_K) {
        return _mm256_set_m128i(_mm_set1_epi16(k.sc[2 * j + 1]), _mm_set1_epi16(k.sc[2 * j]));
    } else {
        return _mm256_set1_epi16(static_cast<int16_t>((k.sc8 >> (8 * j)) & 0xFF));
    }
}

template <int kType, int R, int NT>
void tile_k(const Tile& tl, int64_t nsb) {
    __m256 facc[R][NT];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < NT; ++t) facc[r][t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nsb; ++i) {
        KRow<kType> k[R];
        for (int r = 0; r < R; ++r) k_prepare<kType>(tl.rows[r], i, k[r]);
        const ActBlockK* a[NT];
        for (int t = 0; t < NT; ++t) a[t] = reinterpret_cast<const ActBlockK*>(tl.acts[t]) + i;
        __m256i iacc[R][NT];
        for (int r = 0; r < R; ++r)
            for (int t = 0; t < NT; ++t) iacc[r][t] = _mm256_setzero_si256();
        for (int j = 0; j < 8; ++j) {
            for (int r = 0; r < R; ++r) {
                const __m256i w = k_codes<kType>(tl.rows[r], i, j);
                const __m256i sc = k_scale<kType>(k[r], j);
                for (int t = 0; t < NT; ++t) {
                    const __m256i av =
                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t]->qs + 32 * j));
                    const __m256i p = _mm256_maddubs_epi16(w, av);
                    iacc[r][t] = _mm256_add_epi32(iacc[r][t], _mm256_madd_epi16(p, sc));
                }
            }
        }
        for (int r = 0; r < R; ++r) {
            for (int t = 0; t < NT; ++t) {
                const __m256i bs =
                    _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[t]->bsums));
                const __m256i corr = _mm256_madd_epi16(k[r].corr, bs);
                const __m256 da = _mm256_set1_ps(a[t]->d);
                if constexpr (kType == GGML_Q6_K) {
                    const __m256 s = _mm256_cvtepi32_ps(_mm256_sub_epi32(iacc[r][t], corr));
                    facc[r][t] =
                        _mm256_fmadd_ps(s, _mm256_mul_ps(_mm256_set1_ps(k[r].d), da), facc[r][t]);
                } else {
                    facc[r][t] =
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[r][t]),
                                        _mm256_mul_ps(_mm256_set1_ps(k[r].d), da), facc[r][t]);
                    facc[r][t] =
                        _mm256_fnmadd_ps(_mm256_cvtepi32_ps(corr),
                                         _mm256_mul_ps(_mm256_set1_ps(k[r].dmin), da), facc[r][t]);
                }
            }
        }
    }
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < NT; ++t) *tl.out[r][t] = hsum(facc[r][t]);
}

// ---- drivers -------------------------------------------------------------------------------
using TileFn = void (*)(const Tile&, int64_t);

template <template <int, int> class K>
struct Tiles {
    static TileFn get(int r, int nt) {
        switch (r * 8 + nt) {
            case 4 * 8 + 1:
                return K<4, 1>::run;
            case 2 * 8 + 4:
                return K<2, 4>::run;
            case 2 * 8 + 3:
                return K<2, 3>::run;
            case 2 * 8 + 2:
                return K<2, 2>::run;
            case 2 * 8 + 1:
                return K<2, 1>::run;
            case 1 * 8 + 4:
                return K<1, 4>::run;
            case 1 * 8 + 3:
                return K<1, 3>::run;
            case 1 * 8 + 2:
                return K<1, 2>::run;
            default:
                return K<1, 1>::run;
        }
    }
};

template <class T>
struct For32 {
    template <int R, int NT>
    struct K {
        static void run(const Tile& tl, int64_t nb) { tile32<T, R, NT>(tl, nb); }
    };
};
template <int kType>
struct ForK {
    template <int R, int NT>
    struct K {
        static void run(const Tile& tl, int64_t nsb) { tile_k<kType, R, NT>(tl, nsb); }
    };
};

// Tokens are walked in chunks whose activations stay in L2 while a thread's rows stream past.
constexpr int64_t kTokChunk = 64;

template <template <int, int> class K>
void drive(const WeightView& w, const uint8_t* acts, size_t astride, int64_t nblocks, int64_t n_tok,
           float* y, int64_t ldy, int64_t r0, int64_t r1) {
    const int rstep = n_tok == 1 ? 4 : 2;
    for (int64_t tc = 0; tc < n_tok; tc += kTokChunk) {
        const int64_t tc1 = std::min(n_tok, tc + kTokChunk);
        for (int64_t r = r0; r < r1;) {
            const int nr = static_cast<int>(std::min<int64_t>(r1 - r, rstep)) == rstep ? rstep : 1;
            for (int64_t t = tc; t < tc1;) {
                const int nt = static_cast<int>(std::min<int64_t>(tc1 - t, 4));
                Tile tl;
                for (int i = 0; i < nr; ++i)
                    tl.rows[i] = w.data + static_cast<size_t>(r + i) * w.row_bytes;
                for (int j = 0; j < nt; ++j)
                    tl.acts[j] = acts + static_cast<size_t>(t + j) * astride;
                for (int i = 0; i < nr; ++i)
                    for (int j = 0; j < nt; ++j) tl.out[i][j] = y + (t + j) * ldy + (r + i);
                Tiles<K>::get(nr, nt)(tl, nblocks);
                t += nt;
            }
            r += nr;
        }
    }
}

}  // namespace

void matmul_quant(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y, int64_t ldy,
                  int64_t r0, int64_t r1) {
    const int64_t nb32 = w.cols / 32, nsb = w.cols / 256;
    const size_t s32 = static_cast<size_t>(nb32) * kActBytes32;
    const size_t sk = static_cast<size_t>(nsb) * sizeof(ActBlockK);
    switch (w.type) {
        case GGML_Q4_0:
            return drive<For32<Q4_0>::K>(w, acts, s32, nb32, n_tok, y, ldy, r0, r1);
        case GGML_Q4_1:
            return drive<For32<Q4_1>::K>(w, acts, s32, nb32, n_tok, y, ldy, r0, r1);
        case GGML_Q5_0:
            return drive<For32<Q5_0>::K>(w, acts, s32, nb32, n_tok, y, ldy, r0, r1);
        case GGML_Q5_1:
            return drive<For32<Q5_1>::K>(w, acts, s32, nb32, n_tok, y, ldy, r0, r1);
        case GGML_Q8_0:
            return drive<For32<Q8_0>::K>(w, acts, s32, nb32, n_tok, y, ldy, r0, r1);
        case GGML_Q4_K:
            return drive<ForK<GGML_Q4_K>::K>(w, acts, sk, nsb, n_tok, y, ldy, r0, r1);
        case GGML_Q5_K:
            return drive<ForK<GGML_Q5_K>::K>(w, acts, sk, nsb, n_tok, y, ldy, r0, r1);
        case GGML_Q6_K:
            return drive<ForK<GGML_Q6_K>::K>(w, acts, sk, nsb, n_tok, y, ldy, r0, r1);
        default:
            return;
    }
}

}  // namespace ffnskip::cpu::avx2
