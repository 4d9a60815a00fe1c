// Arguments of the fused ops of the transformer blocks, one list per op (see common/entry.h).
// Pointers are data pointers of contiguous tensors (0 for an absent optional one); dtype a
// common/dtype.h code.
//
// row_norm: LayerNorm (rms = false) or RMSNorm (rms = true) over the last dim D of x (R, D);
// weight, bias (D,) or 0; y like x; mean, rstd float32 (R,) (mean unused, may be 0, for RMSNorm).
#pragma once
#include <cstdint>

#include "common/entry.h"

#define GK_ROW_NORM_ARGS(X)                                                                        \
  X(uintptr_t, x) X(uintptr_t, weight) X(uintptr_t, bias) X(uintptr_t, y) X(uintptr_t, mean)       \
  X(uintptr_t, rstd) X(int64_t, R) X(int64_t, D) X(double, eps) X(bool, rms) X(int, dtype)

// grad_y, grad_x like x; mean, rstd the forward's; partials float32 (2, ceil(R / kRowBlock), D)
// or 0 (no parameter gradient wanted): per-(row block, column) sums of grad_y * xhat (weight) and
// grad_y (bias), rows added in order; the host adds the blocks in order.
#define GK_ROW_NORM_BACKWARD_ARGS(X)                                                               \
  X(uintptr_t, grad_y) X(uintptr_t, x) X(uintptr_t, weight) X(uintptr_t, mean) X(uintptr_t, rstd)  \
  X(uintptr_t, grad_x) X(uintptr_t, partials) X(int64_t, R) X(int64_t, D) X(bool, rms) X(int, dtype)

// glu_act: y = act(a) * b (b = 0: y = act(a)), n elements; act 0 SiLU (SwiGLU), 1 GELU-tanh.
#define GK_GLU_ACT_ARGS(X)                                                                         \
  X(uintptr_t, a) X(uintptr_t, b) X(uintptr_t, y) X(int64_t, n) X(int, act) X(int, dtype)

// grad_a = grad_y * b * act'(a), grad_b = grad_y * act(a) (b = 0: grad_a = grad_y act'(a), no grad_b).
#define GK_GLU_ACT_BACKWARD_ARGS(X)                                                                \
  X(uintptr_t, grad_y) X(uintptr_t, a) X(uintptr_t, b) X(uintptr_t, grad_a) X(uintptr_t, grad_b)   \
  X(int64_t, n) X(int, act) X(int, dtype)

// rotary: x, y (N, T, H, D), D even; cos, sin float32 (P, D / 2); token t of sequence n at
// position offsets[n] + t (offsets int64 (N,)) or offset + t (offsets 0). inverse: rotate by
// -theta (the backward).
#define GK_ROTARY_ARGS(X)                                                                          \
  X(uintptr_t, x) X(uintptr_t, cos) X(uintptr_t, sin) X(uintptr_t, offsets) X(uintptr_t, y)        \
  X(int64_t, N) X(int64_t, T) X(int64_t, H) X(int64_t, D) X(int64_t, offset) X(bool, inverse) X(int, dtype)

#define GK_TRANSFORMER_OPS(OP)                                         \
  OP(row_norm, GK_ROW_NORM_ARGS)                                       \
  OP(row_norm_backward, GK_ROW_NORM_BACKWARD_ARGS)                     \
  OP(glu_act, GK_GLU_ACT_ARGS)                                         \
  OP(glu_act_backward, GK_GLU_ACT_BACKWARD_ARGS)                       \
  OP(rotary, GK_ROTARY_ARGS)

namespace gk::ops {
GK_TRANSFORMER_OPS(GK_DECLARE_OP)
}  // namespace gk::ops
