// Philox words → perturbation values. The mapping is defined once, in
// zipfast/ops/perturb/reference.py (module docstring); this file follows it exactly:
//   key (seed mod 2^32, stream), counter (coordinate i, pair j, step, 0)
//   segmented: |z| = ((r0 >> 9) + 2^23)·2^-24, negative iff bit 31 of r1
//   rademacher: ±1 by bit 31 of r1
//   gaussian: sqrt(-2 ln u1)·cos(2π u2), u1 = ((r2>>8)+1)·2^-24, u2 = (r3>>8)·2^-24,
//             ln and cos by fixed float32 polynomials with correctly rounded ops.
#pragma once
#include "philox.h"

namespace zipfast {

enum Dist : int { kSegmented = 0, kGaussian = 1, kRademacher = 2 };
constexpr float kTwoM24 = 5.9604644775390625e-08f;  // 2^-24

ZF_HD float segmented_from(uint32_t r0, uint32_t r1) {
  float mag = fmul(static_cast<float>((r0 >> 9) + (1u << 23)), kTwoM24);
  return (r1 >> 31) ? -mag : mag;
}

ZF_HD float rademacher_from(uint32_t r1) { return (r1 >> 31) ? -1.0f : 1.0f; }

ZF_HD float log_unit(float u) {  // ln u, u in (0, 1]
  int32_t bits = float_bits(u);
  int32_t e = ((bits >> 23) & 0xFF) - 127;
  float m = bits_float((bits & 0x7FFFFF) | 0x3F800000);
  if (m > 1.41421354f) { m = fmul(m, 0.5f); e += 1; }
  float ef = static_cast<float>(e);
  float s = fdiv(fsub(m, 1.0f), fadd(m, 1.0f));
  float s2 = fmul(s, s);
  float p = fadd(0.111111112f, fmul(s2, 0.0909090936f));
  p = fadd(0.142857149f, fmul(s2, p));
  p = fadd(0.200000003f, fmul(s2, p));
  p = fadd(0.333333343f, fmul(s2, p));
  p = fadd(1.0f, fmul(s2, p));
  float lnm = fmul(fadd(s, s), p);
  return fadd(fmul(ef, 0.693359375f), fadd(fmul(ef, -0.000212194442f), lnm));
}

ZF_HD float cos_2pi(float u) {  // cos(2πu), u in [0, 1)
  float a = std::fabs(fsub(u, 0.5f));
  bool hi = a > 0.25f;
  float b = hi ? fsub(0.5f, a) : a;
  float sgn = hi ? 1.0f : -1.0f;
  bool sw = b > 0.125f;
  float x = sw ? fsub(0.25f, b) : b;
  float th = fmul(x, 6.28318548f);
  float t2 = fmul(th, th);
  float c = fadd(2.48015876e-05f, fmul(t2, -2.755732e-07f));
  c = fadd(-0.00138888892f, fmul(t2, c));
  c = fadd(0.0416666679f, fmul(t2, c));
  c = fadd(-0.5f, fmul(t2, c));
  c = fadd(1.0f, fmul(t2, c));
  float s = fadd(-0.000198412701f, fmul(t2, 2.75573188e-06f));
  s = fadd(0.00833333377f, fmul(t2, s));
  s = fadd(-0.166666672f, fmul(t2, s));
  s = fadd(1.0f, fmul(t2, s));
  s = fmul(th, s);
  return fmul(sgn, sw ? s : c);
}

ZF_HD float gaussian_from(uint32_t r2, uint32_t r3) {
  float u1 = fmul(static_cast<float>((r2 >> 8) + 1u), kTwoM24);
  float u2 = fmul(static_cast<float>(r3 >> 8), kTwoM24);
  return fmul(fsqrt(fmul(-2.0f, log_unit(u1))), cos_2pi(u2));
}

// z[j, i] of `step` in the stream (seed, stream).
ZF_HD float z_at(uint32_t seed, uint32_t stream, uint32_t step, uint32_t j, uint32_t i, int dist) {
  const uint32_t ctr[4] = {i, j, step, 0u};
  const uint32_t key[2] = {seed, stream};
  uint32_t r[4];
  philox4x32_10(ctr, key, r);
  if (dist == kSegmented) return segmented_from(r[0], r[1]);
  if (dist == kRademacher) return rademacher_from(r[1]);
  return gaussian_from(r[2], r[3]);
}

}  // namespace zipfast
