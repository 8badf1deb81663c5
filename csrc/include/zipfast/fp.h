// Correctly rounded float32 arithmetic that the compiler may not fuse into FMA.
// Device code uses the _rn intrinsics (never contracted); host code is compiled with
// -ffp-contract=off. This is what makes the kernels bit-identical to the PyTorch
// reference (zipfast/ops/perturb/reference.py).
#pragma once
#include <cstdint>
#include <cstring>
#include <cmath>

#if defined(__CUDACC__)
#define ZF_HD __host__ __device__ __forceinline__
#else
#define ZF_HD inline
#endif

namespace zipfast {

ZF_HD float fadd(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
ZF_HD float fsub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
ZF_HD float fmul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
ZF_HD float fdiv(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
ZF_HD float fsqrt(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}
// Bit casts: std::memcpy is the portable bit cast in host and device code.
template <class To, class From>
ZF_HD To bit_cast(From x) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast needs equal sizes");
  To y;
  std::memcpy(&y, &x, sizeof(To));
  return y;
}
ZF_HD int32_t float_bits(float x) { return bit_cast<int32_t>(x); }
ZF_HD float bits_float(int32_t i) { return bit_cast<float>(i); }

}  // namespace zipfast
