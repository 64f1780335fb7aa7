// Building blocks shared by the NEON kernel files (AArch64 only, where NEON is baseline).
//
// Every quantized type is read as blocks of 32 codes held in two int8x16 vectors (elements 0-15
// and 16-31): the signed types with their offset subtracted, the unsigned ones (Q4_1, Q5_1, Q4_K,
// Q5_K: codes below 32) as they are, so one signed widening serves both. Q6_K's codes are
// returned as q - 32; its per-16 int8 scales are applied after widening to 16 bits.
#pragma once

#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "quants.h"
#include "weight_view.h"

namespace ffnskip::cpu::neon {

// Two f16 values stored side by side (a block's d and m) -> lanes 0 and 1.
inline float32x4_t halves2(const void* p) {
    uint32_t bits;
    std::memcpy(&bits, p, 4);
    return vcvt_f32_f16(vreinterpret_f16_u32(vdup_n_u32(bits)));
}
inline float half(uint16_t h) {
    __fp16 v;  // a scalar FCVT
    std::memcpy(&v, &h, 2);
    return v;
}

// 16 packed nibbles: low nibbles are elements 0..15, high nibbles 16..31.
inline int8x16x2_t nibbles32(const uint8_t* qs) {
    const uint8x16_t v = vld1q_u8(qs);
    return {{vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))),
             vreinterpretq_s8_u8(vshrq_n_u8(v, 4))}};
}

// Bit j of the 32-bit little-endian word at qh -> 0x10 in byte j (the 5th bit of Q5_0/Q5_1).
inline int8x16x2_t bit4_from_u32(const uint8_t* qh) {
    uint32_t bits;
    std::memcpy(&bits, qh, 4);
    const uint8x16_t word = vreinterpretq_u8_u32(vdupq_n_u32(bits));
    // Byte i of each half holds qh byte (i / 8) of that half; the mask picks bit i % 8.
    static const uint8_t kLo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    static const uint8_t kHi[16] = {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
    static const uint8_t kBit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t bit = vld1q_u8(kBit), ten = vdupq_n_u8(0x10);
    const uint8x16_t lo = vandq_u8(vtstq_u8(vqtbl1q_u8(word, vld1q_u8(kLo)), bit), ten);
    const uint8x16_t hi = vandq_u8(vtstq_u8(vqtbl1q_u8(word, vld1q_u8(kHi)), bit), ten);
    return {{vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi)}};
}

inline int8x16x2_t sub_s8(int8x16x2_t v, int8_t k) {
    return {{vsubq_s8(v.val[0], vdupq_n_s8(k)), vsubq_s8(v.val[1], vdupq_n_s8(k))}};
}
inline int8x16x2_t or_s8(int8x16x2_t a, int8x16x2_t b) {
    return {{vorrq_s8(a.val[0], b.val[0]), vorrq_s8(a.val[1], b.val[1])}};
}

// Codes of one 32-block of the types with a scale (and min) in every block.
struct Q4_0 {
    using Block = block_q4_0;
    static constexpr bool kMin = false;
    static int8x16x2_t codes(const Block& b) { return sub_s8(nibbles32(b.qs), 8); }
};
struct Q4_1 {
    using Block = block_q4_1;
    static constexpr bool kMin = true;
    static int8x16x2_t codes(const Block& b) { return nibbles32(b.qs); }
};
struct Q5_0 {
    using Block = block_q5_0;
    static constexpr bool kMin = false;
    static int8x16x2_t codes(const Block& b) {
        return sub_s8(or_s8(nibbles32(b.qs), bit4_from_u32(b.qh)), 16);
    }
};
struct Q5_1 {
    using Block = block_q5_1;
    static constexpr bool kMin = true;
    static int8x16x2_t codes(const Block& b) { return or_s8(nibbles32(b.qs), bit4_from_u32(b.qh)); }
};
struct Q8_0 {
    using Block = block_q8_0;
    static constexpr bool kMin = false;
    static int8x16x2_t codes(const Block& b) { return vld1q_s8_x2(b.qs); }
};

// Codes (0..31) of sub-block j (32 elements) of a Q4_K / Q5_K super-block.
inline int8x16x2_t q4k_codes(const uint8_t* qs, int j) {
    const uint8x16x2_t v = vld1q_u8_x2(qs + 32 * (j / 2));
    const int8x16_t shift = vdupq_n_s8(static_cast<int8_t>(-4 * (j & 1)));
    const uint8x16_t m = vdupq_n_u8(0x0F);
    return {{vreinterpretq_s8_u8(vandq_u8(vshlq_u8(v.val[0], shift), m)),
             vreinterpretq_s8_u8(vandq_u8(vshlq_u8(v.val[1], shift), m))}};
}
inline int8x16x2_t q5k_codes(const uint8_t* qs, const uint8_t* qh, int j) {
    const uint8x16x2_t h = vld1q_u8_x2(qh);
    const int8x16_t shift = vdupq_n_s8(static_cast<int8_t>(-j));
    const uint8x16_t one = vdupq_n_u8(1);
    const int8x16x2_t bit = {
        {vreinterpretq_s8_u8(vshlq_n_u8(vandq_u8(vshlq_u8(h.val[0], shift), one), 4)),
         vreinterpretq_s8_u8(vshlq_n_u8(vandq_u8(vshlq_u8(h.val[1], shift), one), 4))}};
    return or_s8(q4k_codes(qs, j), bit);
}
// Codes minus 32 (-32..31) of group g (32 elements) of a Q6_K super-block.
inline int8x16x2_t q6k_codes(const block_q6_K& b, int g) {
    const int h = g / 4, k = g % 4;
    const uint8x16x2_t l = vld1q_u8_x2(b.ql + 64 * h + 32 * (k & 1));
    const uint8x16x2_t hv = vld1q_u8_x2(b.qh + 32 * h);
    const int8x16_t lshift = vdupq_n_s8(static_cast<int8_t>(-4 * (k / 2)));
    const int8x16_t hshift = vdupq_n_s8(static_cast<int8_t>(-2 * k));
    int8x16x2_t out;
    for (int i = 0; i < 2; ++i) {
        const uint8x16_t lo = vandq_u8(vshlq_u8(l.val[i], lshift), vdupq_n_u8(0x0F));
        const uint8x16_t hi = vandq_u8(vshlq_u8(hv.val[i], hshift), vdupq_n_u8(0x03));
        out.val[i] = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, vshlq_n_u8(hi, 4))), vdupq_n_s8(32));
    }
    return out;
}

// The 8 six-bit scales and mins of a Q4_K / Q5_K super-block (scale_min_k4 on whole words).
inline void scale_min_k4(const uint8_t* scales, float32x4_t sc[2], float32x4_t mn[2]) {
    uint32_t s[3];
    std::memcpy(s, scales, 12);
    const uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
    const uint32_t sc_lo = s[0] & m6, mn_lo = s[1] & m6;
    const uint32_t sc_hi = (s[2] & m4) | ((s[0] >> 6) & m2) << 4;
    const uint32_t mn_hi = ((s[2] >> 4) & m4) | ((s[1] >> 6) & m2) << 4;
    const uint16x8_t sc16 = vmovl_u8(vcreate_u8(sc_lo | static_cast<uint64_t>(sc_hi) << 32));
    const uint16x8_t mn16 = vmovl_u8(vcreate_u8(mn_lo | static_cast<uint64_t>(mn_hi) << 32));
    sc[0] = vcvtq_f32_u32(vmovl_u16(vget_low_u16(sc16)));
    sc[1] = vcvtq_f32_u32(vmovl_high_u16(sc16));
    mn[0] = vcvtq_f32_u32(vmovl_u16(vget_low_u16(mn16)));
    mn[1] = vcvtq_f32_u32(vmovl_high_u16(mn16));
}

// 32 int8 codes -> four int16x8 (elements 0-7, 8-15, 16-23, 24-31).
inline void widen(int8x16x2_t c, int16x8_t q[4]) {
    q[0] = vmovl_s8(vget_low_s8(c.val[0]));
    q[1] = vmovl_high_s8(c.val[0]);
    q[2] = vmovl_s8(vget_low_s8(c.val[1]));
    q[3] = vmovl_high_s8(c.val[1]);
}

// sum(q[i] * a[i]) over one block of 32 as four int32 lanes: each lane sums 8 products, below
// 2^30 even for Q6_K's pre-scaled codes (|code| <= 4096, |a| <= 32767).
inline int32x4_t dot32(const int16x8_t q[4], const int16x8_t a[4]) {
    int32x4_t p = vmull_s16(vget_low_s16(q[0]), vget_low_s16(a[0]));
    p = vmlal_high_s16(p, q[0], a[0]);
    p = vmlal_s16(p, vget_low_s16(q[1]), vget_low_s16(a[1]));
    p = vmlal_high_s16(p, q[1], a[1]);
    p = vmlal_s16(p, vget_low_s16(q[2]), vget_low_s16(a[2]));
    p = vmlal_high_s16(p, q[2], a[2]);
    p = vmlal_s16(p, vget_low_s16(q[3]), vget_low_s16(a[3]));
    return vmlal_high_s16(p, q[3], a[3]);
}

inline void load_act(const int16_t* a, int16x8_t v[4]) {
    const int16x8x4_t t = vld1q_s16_x4(a);
    for (int i = 0; i < 4; ++i) v[i] = t.val[i];
}

// Quantized-weight matmul on prepared 16-bit activations, rows [r0, r1) of W. One token
// (kernels_matvec_quant_neon.cpp):
void matvec_quant(const WeightView& w, const uint8_t* acts, float* y, int64_t r0, int64_t r1);
// Any n_tok >= 1 through the decoded-row tiles (kernels_gemm_quant_neon.cpp), for prompts:
void gemm_quant(const WeightView& w, const uint8_t* acts, int64_t n_tok, float* y, int64_t ldy,
                int64_t r0, int64_t r1);
// Prompt-sized matmul for the float weight types (kernels_gemm_f32_neon.cpp), reads only the f32
// x.
void gemm_f32(const WeightView& w, const float* x, int64_t n_tok, float* y, int64_t ldy, int64_t r0,
              int64_t r1);
// Quantize one token row into the 16-bit activation layout (bit-exact with the scalar path;
// kernels_neon.cpp).
void prepare_row(const float* x, int64_t cols, int group, uint8_t* out);
// Fast dequantization (bit-exact with dequantize_row_ref).
void dequantize_row(uint32_t type, const void* src, float* dst, int64_t n);

}  // namespace ffnskip::cpu::neon
