// Arguments of the normalizing-flow ops, one list per op (see common/entry.h). Pointers are data
// pointers of contiguous tensors (0 for an absent optional one); dtype a common/dtype.h code.
//
// affine_coupling: x and y (N, C, inner) (inner = H * W for the checkerboard mask, H and W given);
// shift / log_scale (N, C / 2, inner) for mask 0 (channel), (N, C, H, W) for mask 1
// (checkerboard); log_scale 0 for additive coupling (form is then ignored). form 0 tanh, 1 sigmoid.
// logdet_partials: float32 (N, num_chunks(transformed elements per sample)) partial sums of s,
// added per sample in order by the host (0: not wanted).
#pragma once
#include <cstdint>

#include "common/entry.h"

#define GK_AFFINE_COUPLING_ARGS(X)                                                                 \
  X(uintptr_t, x) X(uintptr_t, shift) X(uintptr_t, log_scale) X(uintptr_t, y)                      \
  X(uintptr_t, logdet_partials) X(int64_t, N) X(int64_t, C) X(int64_t, inner) X(int64_t, H)        \
  X(int64_t, W) X(int, mask) X(int, parity) X(double, scale) X(int, form) X(bool, inverse) X(int, dtype)

// grad_y like x; grad_logdet float32 (N,); grad_x like x, grad_shift like shift, grad_log_scale
// like log_scale (0 for additive coupling). x is the input of the forward (or inverse) call.
#define GK_AFFINE_COUPLING_BACKWARD_ARGS(X)                                                        \
  X(uintptr_t, grad_y) X(uintptr_t, grad_logdet) X(uintptr_t, x) X(uintptr_t, shift)               \
  X(uintptr_t, log_scale) X(uintptr_t, grad_x) X(uintptr_t, grad_shift) X(uintptr_t, grad_log_scale) \
  X(int64_t, N) X(int64_t, C) X(int64_t, inner) X(int64_t, H) X(int64_t, W) X(int, mask)            \
  X(int, parity) X(double, scale) X(int, form) X(bool, inverse) X(int, dtype)

// actnorm: x, y (N, C, inner); bias, log_scale (C,).
#define GK_ACTNORM_ARGS(X)                                                                         \
  X(uintptr_t, x) X(uintptr_t, bias) X(uintptr_t, log_scale) X(uintptr_t, y) X(int64_t, N)         \
  X(int64_t, C) X(int64_t, inner) X(bool, inverse) X(int, dtype)

// partials: float32 (2, C, num_chunks(N * inner)): row (0, c) the bias gradient of channel c, row
// (1, c) the log_scale gradient without the log-determinant's term (the host adds that).
#define GK_ACTNORM_BACKWARD_ARGS(X)                                                                \
  X(uintptr_t, grad_y) X(uintptr_t, x) X(uintptr_t, bias) X(uintptr_t, log_scale)                  \
  X(uintptr_t, grad_x) X(uintptr_t, partials) X(int64_t, N) X(int64_t, C) X(int64_t, inner)        \
  X(bool, inverse) X(int, dtype)

// rq_spline (csrc/flow/rq_spline.h): x, y (N, D) (inverse: x holds y, y receives x); widths,
// heights (N, D, K); derivatives (N, D, K - 1) (the interior knots; 0 when K = 1);
// logdet_partials float32 (N, num_chunks(D)) partial sums of the log-derivatives, added per sample
// in order by the host.
#define GK_RQ_SPLINE_ARGS(X)                                                                       \
  X(uintptr_t, x) X(uintptr_t, widths) X(uintptr_t, heights) X(uintptr_t, derivatives) X(uintptr_t, y) \
  X(uintptr_t, logdet_partials) X(int64_t, N) X(int64_t, D) X(int64_t, K) X(double, tail_bound)     \
  X(double, min_bin_width) X(double, min_bin_height) X(double, min_derivative) X(bool, inverse) X(int, dtype)

// grad_y like x, grad_logdet float32 (N,) (either 0: no gradient flowed); x is the forward (or
// inverse) call's input; each grad_* like its input.
#define GK_RQ_SPLINE_BACKWARD_ARGS(X)                                                              \
  X(uintptr_t, grad_y) X(uintptr_t, grad_logdet) X(uintptr_t, x) X(uintptr_t, widths)              \
  X(uintptr_t, heights) X(uintptr_t, derivatives) X(uintptr_t, grad_x) X(uintptr_t, grad_widths)   \
  X(uintptr_t, grad_heights) X(uintptr_t, grad_derivatives) X(int64_t, N) X(int64_t, D) X(int64_t, K) \
  X(double, tail_bound) X(double, min_bin_width) X(double, min_bin_height) X(double, min_derivative) \
  X(bool, inverse) X(int, dtype)

// One line per op; further flow ops (e.g. the rational-quadratic spline) add theirs here.
#define GK_FLOW_OPS(OP)                                                \
  OP(affine_coupling, GK_AFFINE_COUPLING_ARGS)                         \
  OP(affine_coupling_backward, GK_AFFINE_COUPLING_BACKWARD_ARGS)       \
  OP(actnorm, GK_ACTNORM_ARGS)                                         \
  OP(actnorm_backward, GK_ACTNORM_BACKWARD_ARGS)                       \
  OP(rq_spline, GK_RQ_SPLINE_ARGS)                                     \
  OP(rq_spline_backward, GK_RQ_SPLINE_BACKWARD_ARGS)

namespace gk::ops {
GK_FLOW_OPS(GK_DECLARE_OP)
}  // namespace gk::ops
