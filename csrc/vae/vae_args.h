// Arguments of the VAE ops, one list per op (see common/entry.h). Pointers are data pointers of
// (N, D) tensors; dtype a common/dtype.h code; (seed, offset) the Philox stream of the noise.
#pragma once
#include <cstdint>

#include "common/entry.h"

// kl_partials: (N, num_chunks(D)) float32 partial sums; the host adds each sample's row.
#define GK_REPARAM_KL_ARGS(X)                                                                    \
  X(uintptr_t, mu) X(uintptr_t, logvar) X(uintptr_t, z) X(uintptr_t, kl_partials) X(int64_t, N)  \
  X(int64_t, D) X(uint64_t, seed) X(uint64_t, offset) X(int, dtype)

// grad_z / grad_kl may be 0 (no gradient flowed into z / kl); grad_kl is (N,) float32.
#define GK_REPARAM_KL_BACKWARD_ARGS(X)                                                           \
  X(uintptr_t, grad_z) X(uintptr_t, grad_kl) X(uintptr_t, mu) X(uintptr_t, logvar)               \
  X(uintptr_t, grad_mu) X(uintptr_t, grad_logvar) X(int64_t, N) X(int64_t, D) X(uint64_t, seed)  \
  X(uint64_t, offset) X(int, dtype)

#define GK_VAE_OPS(OP)                \
  OP(reparam_kl, GK_REPARAM_KL_ARGS) \
  OP(reparam_kl_backward, GK_REPARAM_KL_BACKWARD_ARGS)

namespace gk::ops {
GK_VAE_OPS(GK_DECLARE_OP)
}  // namespace gk::ops
