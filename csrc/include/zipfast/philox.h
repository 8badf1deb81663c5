// Philox4x32-10 (Salmon et al., SC'11; the generator of cuRAND and Triton's tl.rand).
// Checked against the Random123 known-answer vectors in tests/ops/perturb.
#pragma once
#include "fp.h"

namespace zipfast {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;

ZF_HD uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
#if defined(__CUDA_ARCH__)
  *hi = __umulhi(a, b);
  return a * b;
#else
  uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
#endif
}

// One round on counter c with key k (in place).
ZF_HD void philox_round(uint32_t c[4], const uint32_t k[2]) {
  uint32_t hi0, hi1;
  uint32_t lo0 = mulhilo32(kPhiloxM0, c[0], &hi0);
  uint32_t lo1 = mulhilo32(kPhiloxM1, c[2], &hi1);
  uint32_t n0 = hi1 ^ c[1] ^ k[0], n2 = hi0 ^ c[3] ^ k[1];
  c[0] = n0; c[1] = lo1; c[2] = n2; c[3] = lo0;
}

// out = philox4x32_10(counter, key).
ZF_HD void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
  uint32_t k[2] = {key[0], key[1]};
  for (int r = 0; r < 10; ++r) {
    if (r) { k[0] += kPhiloxW0; k[1] += kPhiloxW1; }
    philox_round(c, k);
  }
  out[0] = c[0]; out[1] = c[1]; out[2] = c[2]; out[3] = c[3];
}

}  // namespace zipfast
