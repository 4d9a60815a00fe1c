// Storage types and their conversion to/from fp32 arithmetic, identical on host and device.
// fp16 and bf16 are stored as raw 16-bit patterns; conversions round to nearest even, so the
// C++ CPU kernels produce bit-identical stores to the CUDA kernels.
#pragma once
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common/macros.h"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#endif

namespace gk {

// Codes must match genkernels/_ext.py DTYPE_CODES.
enum DTypeCode : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

struct half_t { uint16_t bits; };
struct bf16_t { uint16_t bits; };

GK_HD uint32_t float_bits(float f) {
#if GK_DEVICE_CODE && defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u; std::memcpy(&u, &f, 4); return u;
#endif
}

GK_HD float bits_float(uint32_t u) {
#if GK_DEVICE_CODE && defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f; std::memcpy(&f, &u, 4); return f;
#endif
}

GK_HD float bf16_to_float(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }

GK_HD uint16_t float_to_bf16(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

GK_HD float half_to_float(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));
#else
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (mant << 13));  // inf / nan
  if (exp == 0) {
    if (mant == 0) return bits_float(sign);
    int e = -1;  // normalise a subnormal
    do { mant <<= 1; ++e; } while ((mant & 0x400u) == 0);
    return bits_float(sign | static_cast<uint32_t>(112 - e) << 23 | ((mant & 0x3ffu) << 13));
  }
  return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
#endif
}

GK_HD uint16_t float_to_half(float f) {
#if defined(__CUDA_ARCH__)
  return __half_as_ushort(__float2half_rn(f));
#else
  const uint32_t u = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;           // nan
  if (abs >= 0x477ff000u) return sign | 0x7c00u;          // rounds to inf (>= 65520)
  if (abs < 0x38800000u) {                                // subnormal half or zero
    if (abs < 0x33000000u) return sign;                   // < 2^-25 rounds to zero
    const uint32_t e = abs >> 23;
    const uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;                       // 14..24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
    return sign | static_cast<uint16_t>(r);
  }
  uint32_t r = abs - 0x38000000u;                         // rebias exponent 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);                         // round to nearest even
  return sign | static_cast<uint16_t>(r >> 13);
#endif
}

template <typename T> struct Storage;
template <> struct Storage<float> {
  static GK_HD float load(const float* p, int64_t i) { return p[i]; }
  static GK_HD void store(float* p, int64_t i, float v) { p[i] = v; }
};
template <> struct Storage<half_t> {
  static GK_HD float load(const half_t* p, int64_t i) { return half_to_float(p[i].bits); }
  static GK_HD void store(half_t* p, int64_t i, float v) { p[i].bits = float_to_half(v); }
};
template <> struct Storage<bf16_t> {
  static GK_HD float load(const bf16_t* p, int64_t i) { return bf16_to_float(p[i].bits); }
  static GK_HD void store(bf16_t* p, int64_t i, float v) { p[i].bits = float_to_bf16(v); }
};

// Raw pointer (as passed from Python) to a typed pointer.
template <typename T> T* as(uintptr_t p) { return reinterpret_cast<T*>(p); }

template <typename T> GK_HD float load(const T* p, int64_t i) { return Storage<T>::load(p, i); }
template <typename T> GK_HD void store(T* p, int64_t i, float v) { Storage<T>::store(p, i, v); }

}  // namespace gk

// Runtime dtype code -> compile-time storage type `scalar_t` for the body.
#define GK_DISPATCH_DTYPE(code, NAME, ...)                                         \
  [&] {                                                                            \
    switch (code) {                                                                \
      case ::gk::kFloat32: { using scalar_t = float; return __VA_ARGS__(); }       \
      case ::gk::kFloat16: { using scalar_t = ::gk::half_t; return __VA_ARGS__(); } \
      case ::gk::kBFloat16: { using scalar_t = ::gk::bf16_t; return __VA_ARGS__(); } \
      default: throw std::invalid_argument(std::string(NAME) + ": unsupported dtype code " + std::to_string(code)); \
    }                                                                              \
  }()
