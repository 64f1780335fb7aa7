#include "cpu/transposed.h"

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
            return 16;
        case Codes::kNib5:
            return 20;
        case Codes::kNib6:
            return 24;
        case Codes::kInt8:
            return 32;
        case Codes::kHalf:
            return 64;
        default:
            return 128;
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

// Stores raw code v of output position `pos` (0..31, stored order) into group g of a code row.
void put_code(Codes c, uint8_t* g, int pos, int32_t v) {
    switch (c) {
        case Codes::kNib4:
        case Codes::kNib5:
        case Codes::kNib6: {
            g[pos & 15] |= static_cast<uint8_t>((v & 0xF) << (pos & 16 ? 4 : 0));
            if (c == Codes::kNib5 && (v & 0x10))
                g[16 + pos / 8] |= static_cast<uint8_t>(1 << (pos % 8));
            if (c == Codes::kNib6)
                g[16 + (pos & 7)] |= static_cast<uint8_t>(((v >> 4) & 3) << (2 * (pos >> 3)));
            return;
        }
        case Codes::kInt8:
            g[pos] = static_cast<uint8_t>(static_cast<int8_t>(v));
            return;
        case Codes::kHalf:
            std::memcpy(g + 2 * pos, &v, 2);
            return;
        default:
            std::memcpy(g + 4 * pos, &v, 4);
            return;
    }
}

}  // namespace

size_t TransposedView::bytes() const {
    const size_t nb = blk > 1 ? static_cast<size_t>(n_in / blk) : 0;
    const size_t ns = super > 0 ? static_cast<size_t>(n_in / super) : 0;
    return code_row * static_cast<size_t>(n_in) + scale_row * nb + super_row * ns;
}

TransposedView plan_transposed(const WeightView& w) {
    const Codes c = code_kind(w.type);
    TransposedView t;
    t.type = w.type;
    t.n_in = w.cols;
    t.n_out = w.rows;
    t.n_pad = (w.rows + kTGroup - 1) / kTGroup * kTGroup;
    const size_t P = static_cast<size_t>(t.n_pad);
    t.code_row = group_bytes_of(c) * (P / kTGroup);
    switch (w.type) {
        case GGML_Q4_0:
        case GGML_Q5_0:
        case GGML_Q8_0:
            t.blk = 32;
            t.scale_row = 2 * P;
            break;
        case GGML_Q4_1:
        case GGML_Q5_1:
            t.blk = 32;
            t.scale_row = 4 * P;
            break;
        case GGML_Q4_K:
        case GGML_Q5_K:
            t.blk = 32;
            t.scale_row = 2 * P;
            t.super = QK_K;
            t.super_row = 4 * P;
            break;
        case GGML_Q6_K:
            t.blk = 16;
            t.scale_row = P;
            t.super = QK_K;
            t.super_row = 2 * P;
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

TransposedView bind_transposed(TransposedView t, uint8_t* base) {
    t.codes = base;
    t.scales = base + t.code_row * static_cast<size_t>(t.n_in);
    const size_t nb = t.blk > 1 ? static_cast<size_t>(t.n_in / t.blk) : 0;
    t.supers = t.scales + t.scale_row * nb;
    return t;
}

void fill_transposed(const WeightView& w, const TransposedView& plan, uint8_t* base, int64_t o0,
                     int64_t o1) {
    const TransposedView t = bind_transposed(plan, base);
    const Codes c = code_kind(w.type);
    const size_t gbytes = group_bytes_of(c);
    const bool perm = c != Codes::kHalf && c != Codes::kFloat;
    auto* codes = const_cast<uint8_t*>(t.codes);
    auto* scales = const_cast<uint8_t*>(t.scales);
    auto* supers = const_cast<uint8_t*>(t.supers);
    const size_t P = static_cast<size_t>(t.n_pad);
    RawRow r;
    for (int64_t o = o0; o < o1 && o < w.rows; ++o) {
        decode_row(w.type, w.data + static_cast<size_t>(o) * w.row_bytes, w.cols, r);
        const size_t g = static_cast<size_t>(o / kTGroup);
        const int pos =
            perm ? group_position(static_cast<int>(o % kTGroup)) : static_cast<int>(o % kTGroup);
        for (int64_t i = 0; i < w.cols; ++i) {
            put_code(c, codes + static_cast<size_t>(i) * t.code_row + g * gbytes, pos, r.code[i]);
        }
        const size_t O = static_cast<size_t>(o);
        for (size_t b = 0; b < r.scale.size(); ++b) {
            uint8_t* row = scales + b * t.scale_row;
            if (w.type == GGML_Q4_K || w.type == GGML_Q5_K) {
                row[O] = static_cast<uint8_t>(r.scale[b]);
                row[P + O] = static_cast<uint8_t>(r.second[b]);
            } else if (w.type == GGML_Q6_K) {
                row[O] = static_cast<uint8_t>(r.scale[b]);
            } else {
                const auto d = static_cast<uint16_t>(r.scale[b]);
                std::memcpy(row + 2 * O, &d, 2);
                if (w.type == GGML_Q4_1 || w.type == GGML_Q5_1) {
                    const auto m = static_cast<uint16_t>(r.second[b]);
                    std::memcpy(row + 2 * P + 2 * O, &m, 2);
                }
            }
        }
        for (size_t S = 0; S < r.sup.size(); ++S) {
            uint8_t* row = supers + S * t.super_row;
            const auto d = static_cast<uint16_t>(r.sup[S]);
            std::memcpy(row + 2 * O, &d, 2);
            if (!r.sup2.empty()) {
                const auto m = static_cast<uint16_t>(r.sup2[S]);
                std::memcpy(row + 2 * P + 2 * O, &m, 2);
            }
        }
    }
}

void SparseInput::prepare(const TransposedView& t, const float* x, const int32_t* active,
                          int64_t n) {
    n_active = n;
    index.assign(active, active + n);
    value.resize(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k) value[k] = x[active[k]];
    block.clear();
    d.clear();
    s.clear();
    first.clear();
    row_a.clear();
    row_b.clear();
    packed.clear();
    n_super = 0;
    if (t.blk <= 1) return;
    int64_t last_super = -1;
    for (int64_t k0 = 0; k0 < n;) {
        const int32_t b = active[k0] / t.blk;
        int64_t k1 = k0;
        while (k1 < n && active[k1] / t.blk == b) ++k1;
        if (t.super > 0 && active[k0] / t.super != last_super) {
            last_super = active[k0] / t.super;
            ++n_super;
        }
        // The dense kernels' 16-bit quantization (kernels_scalar.cpp), over the active values.
        float amax = 0.0f;
        bool finite = true;
        for (int64_t k = k0; k < k1; ++k) {
            amax = std::fmax(amax, std::fabs(value[k]));
            finite = finite && std::isfinite(value[k]);
        }
        const float id = finite && amax > kActMinMax ? kActMax / amax : 0.0f;
        int32_t sum = 0;
        block.push_back(b);
        first.push_back(static_cast<int32_t>(row_a.size()));
        // A block holding Inf or NaN (a broken model): codes 0 and d = s = NaN, as in the dense
        // kernels, so the product is NaN and no NaN is cast to an integer.
        auto quant = [&](int64_t k) {
            return finite ? static_cast<int16_t>(std::nearbyint(value[k] * id)) : int16_t{0};
        };
        for (int64_t k = k0; k < k1; k += 2) {
            const int16_t qa = quant(k);
            const bool two = k + 1 < k1;
            const int16_t qb = two ? quant(k + 1) : int16_t{0};
            sum += qa + qb;
            row_a.push_back(active[k]);
            row_b.push_back(two ? active[k + 1] : active[k]);
            packed.push_back(
                static_cast<int32_t>(static_cast<uint16_t>(qa) |
                                     static_cast<uint32_t>(static_cast<uint16_t>(qb)) << 16));
        }
        const float db = finite ? amax / kActMax : std::numeric_limits<float>::quiet_NaN();
        d.push_back(db);
        s.push_back(finite ? db * static_cast<float>(sum) : db);
        k0 = k1;
    }
    first.push_back(static_cast<int32_t>(row_a.size()));
}

size_t SparseInput::bytes_read(const TransposedView& t) const {
    return static_cast<size_t>(n_active) * t.code_row + block.size() * t.scale_row +
           static_cast<size_t>(n_super) * t.super_row;
}

}  // namespace ffnskip::cpu
