// What belongs to no family: the OpenMP thread count, the CUDA device count and the Philox normal
// fill (the noise the diffusion samplers and the VAE reparameterisation draw, as a tensor).
// Entry points per common/entry.h; bound in csrc/bindings_cpu.cpp and csrc/bindings_cuda.cpp.
#pragma once
#include <cstdint>

#include "common/dtype.h"
#include "common/entry.h"
#include "common/philox.h"

namespace gk {

int num_threads();   // common_cpu.cpp: OpenMP threads the CPU kernels use
int device_count();  // common_cuda.cu: CUDA devices the module sees (0 without a driver)

// out[n, i] = standard normal at (seed, offset, n, i), i < D.
#define GK_PHILOX_NORMAL_ARGS(X) \
  X(uintptr_t, out) X(int64_t, N) X(int64_t, D) X(uint64_t, seed) X(uint64_t, offset) X(int, dtype)

#define GK_COMMON_OPS(OP) OP(philox_normal, GK_PHILOX_NORMAL_ARGS)

namespace ops {
GK_COMMON_OPS(GK_DECLARE_OP)
}  // namespace ops

template <typename T>
struct PhiloxNormalFill {
  T* out;
  uint64_t seed, offset;
  int64_t D;
  explicit PhiloxNormalFill(const ops::philox_normal::Args& a)
      : out(as<T>(a.out)), seed(a.seed), offset(a.offset), D(a.D) {}
  GK_HD NormalStream begin(int64_t n) const { return NormalStream(seed, offset, n); }
  GK_HD void apply(NormalStream& rng, int64_t n, int64_t i) const { store(out, n * D + i, rng.at(i)); }
};

namespace ops::philox_normal {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  GK_DISPATCH_DTYPE(a.dtype, "philox_normal", [&] {
    exec.apply(PhiloxNormalFill<scalar_t>(a), a.N, a.D, "philox_normal");
  });
}
}  // namespace ops::philox_normal

}  // namespace gk
