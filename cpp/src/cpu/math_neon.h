// Vector math shared by the NEON op and attention files (AArch64 only).
#pragma once

#include <arm_neon.h>

namespace ffnskip::cpu::neon {

// 2^x, relative error below 2e-7: 2^x = 2^n * 2^f with n = round(x), |f| <= 1/2, 2^f from the
// Cephes exp2f polynomial (the same as math_avx2.h). x is clamped to [-125, 126] (the result stays
// a normal float), so a very negative x gives ~2e-38, not 0: callers that need exact zeros mask
// them.
inline float32x4_t exp2_ps(float32x4_t x) {
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-125.0f)), vdupq_n_f32(126.0f));
    const float32x4_t n = vrndnq_f32(x);
    const float32x4_t f = vsubq_f32(x, n);
    float32x4_t p = vdupq_n_f32(1.535336188319500e-4f);
    p = vfmaq_f32(vdupq_n_f32(1.339887440266574e-3f), p, f);
    p = vfmaq_f32(vdupq_n_f32(9.618437357674640e-3f), p, f);
    p = vfmaq_f32(vdupq_n_f32(5.550332471162809e-2f), p, f);
    p = vfmaq_f32(vdupq_n_f32(2.402264791363012e-1f), p, f);
    p = vfmaq_f32(vdupq_n_f32(6.931472028550421e-1f), p, f);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, f);
    const int32x4_t e = vshlq_n_s32(vcvtq_s32_f32(n), 23);
    return vreinterpretq_f32_s32(vaddq_s32(vreinterpretq_s32_f32(p), e));
}

// In-register 4x4 transpose: r[i] lane j <-> r[j] lane i.
inline void transpose4(float32x4_t r[4]) {
    const float32x4_t t0 = vtrn1q_f32(r[0], r[1]), t1 = vtrn2q_f32(r[0], r[1]);
    const float32x4_t t2 = vtrn1q_f32(r[2], r[3]), t3 = vtrn2q_f32(r[2], r[3]);
    auto d = [](float32x4_t v) { return vreinterpretq_f64_f32(v); };
    auto f = [](float64x2_t v) { return vreinterpretq_f32_f64(v); };
    r[0] = f(vtrn1q_f64(d(t0), d(t2)));
    r[1] = f(vtrn1q_f64(d(t1), d(t3)));
    r[2] = f(vtrn2q_f64(d(t0), d(t2)));
    r[3] = f(vtrn2q_f64(d(t1), d(t3)));
}

}  // namespace ffnskip::cpu::neon
