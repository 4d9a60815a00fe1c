// Arguments of the normalisation ops of the diffusion denoisers, one list per op (see
// common/entry.h). Pointers are data pointers of contiguous tensors (0 for an absent optional
// one); dtype a common/dtype.h code; act 0 (none) or 1 (SiLU).
//
// group_norm_act: x, y (N, C, inner); weight, bias (C,) or 0; scale, shift (N, C) or 0; G groups
// of C / G channels (G divides C).
#pragma once
#include <cstdint>

#include "common/entry.h"

#define GK_GROUP_NORM_ACT_ARGS(X)                                                                  \
  X(uintptr_t, x) X(uintptr_t, weight) X(uintptr_t, bias) X(uintptr_t, scale) X(uintptr_t, shift)  \
  X(uintptr_t, y) X(int64_t, N) X(int64_t, C) X(int64_t, G) X(int64_t, inner) X(double, eps)       \
  X(int, act) X(int, dtype)

// grad_y like x; grad_x like x; grad_weight / grad_bias (C,), grad_scale / grad_shift (N, C), each
// 0 when not wanted (it must be 0 when its input is absent); sums float32 (2, N, C) scratch: the
// per-(sample, channel) sums S1 = sum g', S2 = sum g' xhat (g' = grad_y * act'(h)).
#define GK_GROUP_NORM_ACT_BACKWARD_ARGS(X)                                                         \
  X(uintptr_t, grad_y) X(uintptr_t, x) X(uintptr_t, weight) X(uintptr_t, bias) X(uintptr_t, scale) \
  X(uintptr_t, shift) X(uintptr_t, grad_x) X(uintptr_t, grad_weight) X(uintptr_t, grad_bias)       \
  X(uintptr_t, grad_scale) X(uintptr_t, grad_shift) X(uintptr_t, sums) X(int64_t, N) X(int64_t, C) \
  X(int64_t, G) X(int64_t, inner) X(double, eps) X(int, act) X(int, dtype)

// adaln_modulate: x, y (N, L, D); shift, scale (N, D).
#define GK_ADALN_MODULATE_ARGS(X)                                                                  \
  X(uintptr_t, x) X(uintptr_t, shift) X(uintptr_t, scale) X(uintptr_t, y) X(int64_t, N)            \
  X(int64_t, L) X(int64_t, D) X(double, eps) X(int, dtype)

// grad_y, grad_x like x; grad_shift, grad_scale (N, D); partials float32 scratch of
// 2 * N * ceil(L / kAdaLNRowBlock) * D + 2 * N * L floats: per-(sample, row block, channel) partial
// sums of grad_y and grad_y * xhat, then (CUDA) each row's mean and rstd.
#define GK_ADALN_MODULATE_BACKWARD_ARGS(X)                                                         \
  X(uintptr_t, grad_y) X(uintptr_t, x) X(uintptr_t, scale) X(uintptr_t, grad_x)                    \
  X(uintptr_t, grad_shift) X(uintptr_t, grad_scale) X(uintptr_t, partials) X(int64_t, N)           \
  X(int64_t, L) X(int64_t, D) X(double, eps) X(int, dtype)

#define GK_NORM_OPS(OP)                                                \
  OP(group_norm_act, GK_GROUP_NORM_ACT_ARGS)                           \
  OP(group_norm_act_backward, GK_GROUP_NORM_ACT_BACKWARD_ARGS)         \
  OP(adaln_modulate, GK_ADALN_MODULATE_ARGS)                           \
  OP(adaln_modulate_backward, GK_ADALN_MODULATE_BACKWARD_ARGS)

namespace gk::ops {
GK_NORM_OPS(GK_DECLARE_OP)
}  // namespace gk::ops
