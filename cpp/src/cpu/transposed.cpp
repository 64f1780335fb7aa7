#include "cpu/transposed.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "cpu/kernels_impl.h"
#include "ffnskip/ffnskip.h"
#include "ggml_types.h"
#include "quants.h"

namespace ffnskip::cpu {

namespace {

// The largest 8-bit activation value: q1 in [-127, 127]; the second term's scale (q2 in
// [-127, 127]).
constexpr float kSparseActMax = 127.0f;
constexpr float kResidualScale = 254.0f;
// The share of the first terms' rounding error the second terms leave (SparseInput::fine). A
// SmolLM2 channel profile at 25.6% of FFN bytes saved, held-out KL to dense: 0.0632 with the
// former 16-bit inputs, 0.0629 with two terms everywhere, 0.0622 with this, 0.0670 leaving 0.25
// (perplexity +4.2%, +4.2%, +2.8%, +4.0%: within that test's noise). Two terms everywhere do
// twice the products' work; this decodes Qwen2.5-1.5B's profile at 1.2x dense.
constexpr double kSecondTermErrorLeft = 0.1;

int round_half_away(float v) {
    return static_cast<int>(v + (v < 0.0f ? -0.5f : 0.5f));
}

enum class Codes { kNib4, kNib5, kNib6, kInt8, kHalf, kFloat };

Codes code_kind(uint32_t type) {
    switch (type) {
        case GGML_Q4_0:
        case GGML_Q4_1:
        case GGML_Q4_K:
            return Codes::kNib4;
        case GGML_Q5_0:
        case GGML_Q5_1:
        case GGML_Q5_K:
            return Codes::kNib5;
        case GGML_Q6_K:
            return Codes::kNib6;
        case GGML_Q8_0:
            return Codes::kInt8;
        case GGML_F16:
        case GGML_BF16:
            return Codes::kHalf;
        case GGML_F32:
            return Codes::kFloat;
        default:
            throw InvalidArgument(std::string("channel-sparse layout: unsupported weight type ") +
                                  type_name(type));
    }
}

size_t group_bytes_of(Codes c) {
    switch (c) {
        case Codes::kNib4:
            return 32;
        case Codes::kNib5:
            return 40;
        case Codes::kNib6:
            return 48;
        case Codes::kInt8:
            return 64;
        case Codes::kHalf:
            return 128;
        default:
            return 256;
    }
}

// One output row of the file decoded to raw codes (one per input) and its scale entries: for
// block b of the layout, scale[b] (and second[b]: M, or mn for Q4_K/Q5_K, as raw bits), and per
// super-block sup[S] (d) and sup2[S] (dmin).
struct RawRow {
    std::vector<int32_t> code;
    std::vector<uint32_t> scale, second, sup, sup2;
};

inline uint16_t load_u16(const void* p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}

inline int nibble(const uint8_t* qs, int j) {
    return j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
}

void unpack_scale_min(const uint8_t* s, int j, int& sc, int& mn) {
    if (j < 4) {
        sc = s[j] & 63;
        mn = s[j + 4] & 63;
    } else {
        sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

void decode_row(uint32_t type, const uint8_t* row, int64_t n_in, RawRow& r) {
    r.code.resize(static_cast<size_t>(n_in));
    int32_t* q = r.code.data();
    switch (type) {
        case GGML_Q4_0:
        case GGML_Q4_1:
        case GGML_Q5_0:
        case GGML_Q5_1:
        case GGML_Q8_0: {
            const TypeInfo* ti = type_info(type);
            const int64_t nb = n_in / 32;
            r.scale.resize(static_cast<size_t>(nb));
            r.second.resize(static_cast<size_t>(nb));
            for (int64_t b = 0; b < nb; ++b) {
                const uint8_t* blk = row + static_cast<size_t>(b) * ti->block_bytes;
                r.scale[b] = load_u16(blk);
                int32_t* qb = q + 32 * b;
                if (type == GGML_Q8_0) {
                    for (int j = 0; j < 32; ++j) qb[j] = static_cast<int8_t>(blk[2 + j]);
                    continue;
                }
                const bool with_min = type == GGML_Q4_1 || type == GGML_Q5_1;
                if (with_min) r.second[b] = load_u16(blk + 2);
                const uint8_t* rest = blk + (with_min ? 4 : 2);
                uint32_t qh = 0;
                const bool five = type == GGML_Q5_0 || type == GGML_Q5_1;
                if (five) {
                    std::memcpy(&qh, rest, 4);
                    rest += 4;
                }
                for (int j = 0; j < 32; ++j) {
                    qb[j] = nibble(rest, j) | (five ? static_cast<int>((qh >> j) & 1) << 4 : 0);
                }
            }
            return;
        }
        case GGML_Q4_K:
        case GGML_Q5_K: {
            const bool five = type == GGML_Q5_K;
            const size_t bytes = five ? sizeof(block_q5_K) : sizeof(block_q4_K);
            const int64_t ns = n_in / QK_K;
            r.scale.resize(static_cast<size_t>(ns * 8));
            r.second.resize(static_cast<size_t>(ns * 8));
            r.sup.resize(static_cast<size_t>(ns));
            r.sup2.resize(static_cast<size_t>(ns));
            for (int64_t S = 0; S < ns; ++S) {
                const uint8_t* blk = row + static_cast<size_t>(S) * bytes;
                r.sup[S] = load_u16(blk);
                r.sup2[S] = load_u16(blk + 2);
                const uint8_t* scales = blk + 4;
                const uint8_t* qh = five ? blk + 4 + K_SCALE_SIZE : nullptr;
                const uint8_t* qs = blk + 4 + K_SCALE_SIZE + (five ? QK_K / 8 : 0);
                for (int j = 0; j < 8; ++j) {
                    int sc, mn;
                    unpack_scale_min(scales, j, sc, mn);
                    r.scale[8 * S + j] = static_cast<uint32_t>(sc);
                    r.second[8 * S + j] = static_cast<uint32_t>(mn);
                    const uint8_t* src = qs + 32 * (j / 2);
                    for (int l = 0; l < 32; ++l) {
                        int v = (src[l] >> (4 * (j & 1))) & 0xF;
                        if (five) v |= ((qh[l] >> j) & 1) << 4;
                        q[S * QK_K + 32 * j + l] = v;
                    }
                }
            }
            return;
        }
        case GGML_Q6_K: {
            const int64_t ns = n_in / QK_K;
            r.scale.resize(static_cast<size_t>(ns * 16));
            r.sup.resize(static_cast<size_t>(ns));
            for (int64_t S = 0; S < ns; ++S) {
                const auto& b = reinterpret_cast<const block_q6_K*>(row)[S];
                r.sup[S] = load_u16(&b.d);
                for (int k = 0; k < 16; ++k)
                    r.scale[16 * S + k] = static_cast<uint8_t>(b.scales[k]);
                for (int g = 0; g < 8; ++g) {
                    const int h = g / 4, k = g % 4;
                    const uint8_t* ql = b.ql + 64 * h + 32 * (k & 1);
                    const uint8_t* qh = b.qh + 32 * h;
                    for (int l = 0; l < 32; ++l) {
                        q[S * QK_K + 32 * g + l] =
                            ((ql[l] >> (4 * (k / 2))) & 0xF) | ((qh[l] >> (2 * k)) & 3) << 4;
                    }
                }
            }
            return;
        }
        case GGML_F32:
            for (int64_t i = 0; i < n_in; ++i) std::memcpy(&q[i], row + 4 * i, 4);
            return;
        default:  // F16, BF16: the 16-bit pattern
            for (int64_t i = 0; i < n_in; ++i) q[i] = load_u16(row + 2 * i);
            return;
    }
}

// Stores raw code v of output p (0..63) into a code group (see transposed.h for the order).
void put_code(Codes c, uint8_t* g, int p, int32_t v) {
    const int h = p / 32, q = p % 32;
    const int lane = 4 * (q % 8) + q / 8;
    switch (c) {
        case Codes::kNib4:
        case Codes::kNib5:
        case Codes::kNib6:
            g[lane] |= static_cast<uint8_t>((v & 0xF) << (4 * h));
            if (c == Codes::kNib5) {
                g[32 + lane % 8] |= static_cast<uint8_t>(((v >> 4) & 1) << (lane / 8 + 4 * h));
            } else if (c == Codes::kNib6) {
                g[32 + lane % 16] |=
                    static_cast<uint8_t>(((v >> 4) & 3) << (2 * (lane / 16) + 4 * h));
            }
            return;
        case Codes::kInt8:
            g[32 * h + lane] = static_cast<uint8_t>(v + 128);
            return;
        case Codes::kHalf:
            std::memcpy(g + 2 * p, &v, 2);
            return;
        default:
            std::memcpy(g + 4 * p, &v, 4);
            return;
    }
}

void put_u16(uint8_t* p, uint32_t v) {
    const auto h = static_cast<uint16_t>(v);
    std::memcpy(p, &h, 2);
}

}  // namespace

size_t TransposedView::bytes() const {
    if (super > 0) return static_cast<size_t>(n_in / super) * super_bytes();
    return static_cast<size_t>(n_in / blk) * block_bytes();
}

TransposedView plan_transposed(const WeightView& w) {
    const Codes c = code_kind(w.type);
    TransposedView t;
    t.type = w.type;
    t.n_in = w.cols;
    t.n_out = w.rows;
    t.n_pad = (w.rows + kTGroup - 1) / kTGroup * kTGroup;
    t.group = group_bytes_of(c);
    switch (w.type) {
        case GGML_Q4_0:
        case GGML_Q5_0:
        case GGML_Q8_0:
            t.blk = 32;
            t.scale_entry = 2;
            break;
        case GGML_Q4_1:
        case GGML_Q5_1:
            t.blk = 32;
            t.scale_entry = 4;
            break;
        case GGML_Q4_K:
        case GGML_Q5_K:
            t.blk = 32;
            t.scale_entry = 2;
            t.super = QK_K;
            t.super_entry = 4;
            break;
        case GGML_Q6_K:
            t.blk = 16;
            t.scale_entry = 1;
            t.super = QK_K;
            t.super_entry = 2;
            break;
        default:  // float types: no scales
            t.blk = 1;
            break;
    }
    if (t.blk > 1 && w.cols % (t.super > 0 ? t.super : t.blk) != 0) {
        throw InvalidArgument("channel-sparse layout: " + std::to_string(w.cols) +
                              " columns is not a multiple of the block size");
    }
    return t;
}

TransposedView bind_transposed(TransposedView t, const uint8_t* base) {
    t.data = base;
    return t;
}

void fill_transposed(const WeightView& w, const TransposedView& plan, uint8_t* base, int64_t o0,
                     int64_t o1) {
    const TransposedView t = bind_transposed(plan, base);
    const Codes c = code_kind(w.type);
    RawRow r;
    const size_t P = static_cast<size_t>(t.n_pad);
    for (int64_t o = o0; o < o1 && o < w.rows; ++o) {
        decode_row(w.type, w.data + static_cast<size_t>(o) * w.row_bytes, w.cols, r);
        const size_t O = static_cast<size_t>(o);
        const size_t goff = O / kTGroup * t.group;
        const int p = static_cast<int>(o % kTGroup);
        for (int64_t i = 0; i < w.cols; ++i)
            put_code(c, const_cast<uint8_t*>(t.row_at(i)) + goff, p, r.code[i]);
        for (size_t b = 0; b < r.scale.size(); ++b) {
            auto* tbl = const_cast<uint8_t*>(t.block_at(static_cast<int64_t>(b)));
            if (w.type == GGML_Q4_K || w.type == GGML_Q5_K) {
                tbl[O] = static_cast<uint8_t>(r.scale[b]);
                tbl[P + O] = static_cast<uint8_t>(r.second[b]);
            } else if (w.type == GGML_Q6_K) {
                tbl[O] = static_cast<uint8_t>(r.scale[b]);
            } else {
                put_u16(tbl + 2 * O, r.scale[b]);
                if (w.type == GGML_Q4_1 || w.type == GGML_Q5_1)
                    put_u16(tbl + 2 * P + 2 * O, r.second[b]);
            }
        }
        for (size_t S = 0; S < r.sup.size(); ++S) {
            auto* sup = const_cast<uint8_t*>(t.super_at(static_cast<int64_t>(S)));
            put_u16(sup + 2 * O, r.sup[S]);
            if (!r.sup2.empty()) put_u16(sup + 2 * P + 2 * O, r.sup2[S]);
        }
    }
}

void SparseInput::prepare(const TransposedView& t, const float* x, const int32_t* active,
                          int64_t n) {
    plan(t, x, active, n);
    fill_terms(0, units());
}

void SparseInput::plan(const TransposedView& t, const float* x, const int32_t* active, int64_t n) {
    // Per token and matrix on the calling thread while the pool waits: sized once, written by
    // index (push_back and a rounding call per value measured 18 us a SmolLM2 layer, the
    // products 56 us); the terms are left to fill_terms, on the threads of the product.
    const size_t N = static_cast<size_t>(n);
    n_active = n;
    index.assign(active, active + n);
    value.resize(N);
    for (size_t k = 0; k < N; ++k) value[k] = x[active[k]];
    n_super = 0;
    if (t.blk <= 1) {
        block.clear();
        d.clear();
        qsum.clear();
        first.assign(1, 0);
        slot.clear();
        pattern.clear();
        pattern2.clear();
        return;
    }
    const size_t max_blocks = std::min<size_t>(N, static_cast<size_t>(t.n_in / t.blk));
    block.resize(max_blocks);
    d.resize(max_blocks);
    qsum.resize(max_blocks);
    first.resize(max_blocks + 1);
    slot.resize(N);
    pattern.resize(N);
    pattern2.resize(N);
    // Pass 1: the blocks, their largest |x| and whether they are finite.
    size_t nb = 0;
    int64_t last_super = -1;
    std::vector<float>& amax_of = scratch_.amax;
    amax_of.resize(max_blocks);
    for (size_t k0 = 0; k0 < N;) {
        const int32_t b = active[k0] / t.blk;
        const int32_t b1 = (b + 1) * t.blk;
        size_t k1 = k0;
        float amax = 0.0f;
        bool finite = true;
        for (; k1 < N && active[k1] < b1; ++k1) {
            const float v = value[k1];
            amax = std::max(amax, std::fabs(v));
            finite = finite && std::isfinite(v);
        }
        if (t.super > 0 && active[k0] / t.super != last_super) {
            last_super = active[k0] / t.super;
            ++n_super;
        }
        block[nb] = b;
        first[nb] = static_cast<int32_t>(k0);
        amax_of[nb] = finite ? amax : std::numeric_limits<float>::quiet_NaN();
        ++nb;
        k0 = k1;
    }
    first[nb] = static_cast<int32_t>(N);
    choose_second_terms(nb);
    blk_ = t.blk;
    block.resize(nb);
    d.resize(nb);
    qsum.resize(nb);
    fine.resize(nb);
    first.resize(nb + 1);
}

void SparseInput::fill_terms(int64_t k0, int64_t k1) {
    if (block.empty()) return;  // float types: values only
    for (size_t kb = static_cast<size_t>(k0); kb < static_cast<size_t>(k1); ++kb) {
        const float amax = scratch_.amax[kb];
        const bool finite = !std::isnan(amax);
        const int32_t b0 = block[kb] * blk_;
        const bool two = fine[kb] != 0;
        // A block holding Inf or NaN (a broken model) gets values 0 and d = NaN, so its
        // contribution is NaN and no NaN is cast to an integer (NaN * 0 is NaN: u is set to 0).
        const float id = finite && amax > kActMinMax ? kSparseActMax / amax : 0.0f;
        int32_t sum = 0;
        for (size_t k = static_cast<size_t>(first[kb]); k < static_cast<size_t>(first[kb + 1]);
             ++k) {
            // Rounds half away from zero; |u| <= 127 and |254 (u - q1)| <= 127.
            const float u = finite ? value[k] * id : 0.0f;
            const int q1 = round_half_away(u);
            const int q2 = two ? round_half_away(kResidualScale * (u - static_cast<float>(q1))) : 0;
            sum += static_cast<int32_t>(kResidualScale) * q1 + q2;
            slot[k] = index[k] - b0;
            pattern[k] = (static_cast<uint32_t>(q1) & 0xFFu) * 0x00010001u;
            pattern2[k] = (static_cast<uint32_t>(q2) & 0xFFu) * 0x00010001u;
        }
        d[kb] = finite ? amax / (kSparseActMax * kResidualScale)
                       : std::numeric_limits<float>::quiet_NaN();
        qsum[kb] = sum;
    }
}

void SparseInput::choose_second_terms(size_t nb) {
    // A block's first-term rounding error adds up to about amax^2 * count / (12 * 127^2): the
    // blocks with the largest get the second term until what is left is kSecondTermErrorLeft of
    // the total. Heavy-tailed inputs (outlier channels of h, products m) concentrate it in few
    // blocks.
    std::vector<double>& err = scratch_.err;
    std::vector<int32_t>& order = scratch_.order;
    err.resize(nb);
    order.resize(nb);
    double total = 0.0;
    for (size_t kb = 0; kb < nb; ++kb) {
        const double a = std::isnan(scratch_.amax[kb]) ? 0.0 : scratch_.amax[kb];
        err[kb] = a * a * (first[kb + 1] - first[kb]);
        total += err[kb];
        order[kb] = static_cast<int32_t>(kb);
    }
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return err[a] > err[b]; });
    fine.assign(nb, 0);
    double covered = 0.0;
    for (int32_t kb : order) {
        if (covered >= (1.0 - kSecondTermErrorLeft) * total) break;
        fine[static_cast<size_t>(kb)] = 1;
        covered += err[kb];
    }
}

std::pair<int64_t, int64_t> SparseInput::part(int k, int n) const {
    const int64_t units_n = units();
    if (block.empty()) return {units_n * k / n, units_n * (k + 1) / n};
    // The block where the running channel count passes k / n of the total (first[] is that count).
    auto at = [&](int j) -> int64_t {
        if (j <= 0) return 0;
        if (j >= n) return units_n;
        const int64_t want = n_active * j / n;
        return std::lower_bound(first.begin(), first.end() - 1, want) - first.begin();
    };
    return {at(k), at(k + 1)};
}

size_t SparseInput::bytes_read(const TransposedView& t) const {
    return static_cast<size_t>(n_active) * t.code_row() + block.size() * t.scale_row() +
           static_cast<size_t>(n_super) * t.super_row();
}

}  // namespace ffnskip::cpu
