// Philox4x32-10 counter-based generator (Salmon et al., "Parallel random numbers: as easy as
// 1, 2, 3", SC 2011) and Box-Muller normals. Stateless: the value at (seed, offset, sample,
// element) is a pure function, so CPU and GPU kernels draw the same noise with no noise tensor.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/macros.h"

namespace gk {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;

GK_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
#if defined(__CUDA_ARCH__)
  lo = a * b;
  hi = __umulhi(a, b);
#else
  const uint64_t p = static_cast<uint64_t>(a) * b;
  lo = static_cast<uint32_t>(p);
  hi = static_cast<uint32_t>(p >> 32);
#endif
}

struct Uint4 { uint32_t x, y, z, w; };

GK_HD Uint4 philox4x32_10(Uint4 c, uint32_t k0, uint32_t k1) {
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    if (round > 0) { k0 += kPhiloxW0; k1 += kPhiloxW1; }
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(kPhiloxM0, c.x, hi0, lo0);
    mulhilo32(kPhiloxM1, c.z, hi1, lo1);
    c = Uint4{hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0};
  }
  return c;
}

// 24 random bits -> uniform in (0, 1), exactly representable in fp32 (never 0, so log is finite).
GK_HD float uniform24(uint32_t bits) {
  return static_cast<float>(bits >> 8) * 5.9604644775390625e-08f + 2.98023223876953125e-08f;
}

struct Float4 { float v[4]; };

// Four standard normals for the 4-element group `group` of sample `sample`.
// Counter = (group lo, group hi, offset lo, offset hi); key = (seed lo, seed hi ^ sample lo).
// Within one call (fixed seed) every (sample < 2^32, group) pair gets its own counter/key.
GK_HD Float4 normal4(uint64_t seed, uint64_t offset, uint64_t sample, uint64_t group) {
  const Uint4 r = philox4x32_10(
      Uint4{static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32),
            static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)},
      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32) ^ static_cast<uint32_t>(sample));
  const float two_pi = 6.283185307179586f;
  const float r0 = sqrtf(-2.0f * logf(uniform24(r.x))), t0 = two_pi * uniform24(r.y);
  const float r1 = sqrtf(-2.0f * logf(uniform24(r.z))), t1 = two_pi * uniform24(r.w);
  return Float4{{r0 * cosf(t0), r0 * sinf(t0), r1 * cosf(t1), r1 * sinf(t1)}};
}

// Per-thread cache: consecutive elements of a group reuse one Philox call.
struct NormalStream {
  uint64_t seed, offset, sample, cached_group = ~0ull;
  Float4 cache;
  GK_HD NormalStream(uint64_t seed_, uint64_t offset_, uint64_t sample_)
      : seed(seed_), offset(offset_), sample(sample_) {}
  GK_HD float at(uint64_t element) {
    const uint64_t group = element >> 2;
    if (group != cached_group) { cache = normal4(seed, offset, sample, group); cached_group = group; }
    return cache.v[element & 3];
  }
};

}  // namespace gk
