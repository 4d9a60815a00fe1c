// Arguments of the convolution-family ops, one list per op (see common/entry.h). Pointers are data
// pointers of contiguous tensors; dtype a common/dtype.h code.
//
// gated_activation: x viewed as (outer, 2, C, inner) (a = half 0, b = half 1), y as (outer, C, inner);
// cond (may be 0) as (outer / mid, 2, C): the per-sample bias of outer row o is cond row o / mid.
#pragma once
#include <cstdint>

#include "common/entry.h"

#define GK_GATED_ACTIVATION_ARGS(X)                                                               \
  X(uintptr_t, x) X(uintptr_t, cond) X(uintptr_t, y) X(int64_t, outer) X(int64_t, mid) X(int64_t, C) \
  X(int64_t, inner) X(int, dtype)

// grad_y (outer, C, inner) in x's dtype; grad_x like x. cond_partials 0 (no cond gradient wanted)
// or a float32 buffer of (outer / mid) * 2C rows x num_chunks(mid * inner) partial sums of the
// cond gradient; the host adds each row's chunks in order.
#define GK_GATED_ACTIVATION_BACKWARD_ARGS(X)                                                      \
  X(uintptr_t, grad_y) X(uintptr_t, x) X(uintptr_t, cond) X(uintptr_t, grad_x) X(uintptr_t, cond_partials) \
  X(int64_t, outer) X(int64_t, mid) X(int64_t, C) X(int64_t, inner) X(int, dtype)

#define GK_CONV_OPS(OP)                             \
  OP(gated_activation, GK_GATED_ACTIVATION_ARGS) \
  OP(gated_activation_backward, GK_GATED_ACTIVATION_BACKWARD_ARGS)

namespace gk::ops {
GK_CONV_OPS(GK_DECLARE_OP)
}  // namespace gk::ops
