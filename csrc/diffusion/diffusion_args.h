// Arguments of the diffusion ops, one list per op (see common/entry.h). Pointers are data
// pointers of (N, D) tensors; t / t_prev are int64 (N,) steps or 0 with the step in t_scalar /
// t_prev_scalar; table is the (T, 2) float64 schedule of diffusion.h; dtype a common/dtype.h code;
// optional tensors are 0 when absent.
#pragma once
#include <cstdint>

#include "common/entry.h"

// x_t = a x0 + s noise, velocity = a noise - s x0 (velocity 0: not written).
#define GK_Q_SAMPLE_ARGS(X)                                                                      \
  X(uintptr_t, x0) X(uintptr_t, noise) X(uintptr_t, t) X(int64_t, t_scalar) X(uintptr_t, table) \
  X(int64_t, T) X(uintptr_t, x_t) X(uintptr_t, velocity) X(int64_t, N) X(int64_t, D) X(int, dtype)

#define GK_Q_SAMPLE_BACKWARD_ARGS(X)                                                             \
  X(uintptr_t, grad_x_t) X(uintptr_t, grad_velocity) X(uintptr_t, t) X(int64_t, t_scalar)        \
  X(uintptr_t, table) X(int64_t, T) X(uintptr_t, grad_x0) X(uintptr_t, grad_noise) X(int64_t, N) \
  X(int64_t, D) X(int, dtype)

// partials: (N, num_chunks(D)) float32 partial sums of the squared error; the host adds a row.
#define GK_DIFFUSION_SSE_ARGS(X)                                                                 \
  X(uintptr_t, model_output) X(uintptr_t, x0) X(uintptr_t, noise) X(uintptr_t, t)               \
  X(int64_t, t_scalar) X(uintptr_t, table) X(int64_t, T) X(int, prediction) X(uintptr_t, partials) \
  X(int64_t, N) X(int64_t, D) X(int, dtype)

#define GK_DIFFUSION_SSE_BACKWARD_ARGS(X)                                                        \
  X(uintptr_t, grad_sse) X(uintptr_t, model_output) X(uintptr_t, x0) X(uintptr_t, noise)         \
  X(uintptr_t, t) X(int64_t, t_scalar) X(uintptr_t, table) X(int64_t, T) X(int, prediction)      \
  X(uintptr_t, grad_output) X(uintptr_t, grad_x0) X(uintptr_t, grad_noise) X(int64_t, N)         \
  X(int64_t, D) X(int, dtype)

// kind: 0 DDPM, 1 DDIM (t_prev used by DDIM only); clip = +inf for none.
#define GK_SAMPLER_STEP_ARGS(X)                                                                  \
  X(int, kind) X(int, prediction) X(uintptr_t, model_output) X(uintptr_t, model_output_uncond)   \
  X(uintptr_t, x_t) X(uintptr_t, out) X(uintptr_t, t) X(int64_t, t_scalar) X(uintptr_t, t_prev)  \
  X(int64_t, t_prev_scalar) X(uintptr_t, table) X(int64_t, T) X(double, guidance) X(double, clip) \
  X(double, eta) X(bool, large_variance) X(uint64_t, seed) X(uint64_t, offset) X(int64_t, N)     \
  X(int64_t, D) X(int, dtype)

#define GK_SAMPLER_STEP_BACKWARD_ARGS(X)                                                         \
  X(int, kind) X(int, prediction) X(uintptr_t, grad) X(uintptr_t, model_output)                  \
  X(uintptr_t, model_output_uncond) X(uintptr_t, x_t) X(uintptr_t, grad_output)                  \
  X(uintptr_t, grad_output_uncond) X(uintptr_t, grad_x_t) X(uintptr_t, t) X(int64_t, t_scalar)   \
  X(uintptr_t, t_prev) X(int64_t, t_prev_scalar) X(uintptr_t, table) X(int64_t, T)               \
  X(double, guidance) X(double, clip) X(double, eta) X(bool, large_variance) X(int64_t, N)       \
  X(int64_t, D) X(int, dtype)

// DPM-Solver++(2M) step t -> t_prev (t_prev = -1: to the clean sample). x0_prev (optional) is the
// x0 predicted at the previous model call, at step t_last (> t); absent -> first order. x0_out
// (optional) receives the x0 this step used. clip = +inf for none.
#define GK_DPM_SOLVER_STEP_ARGS(X)                                                               \
  X(int, prediction) X(uintptr_t, model_output) X(uintptr_t, model_output_uncond)               \
  X(uintptr_t, x_t) X(uintptr_t, x0_prev) X(uintptr_t, out) X(uintptr_t, x0_out) X(uintptr_t, t) \
  X(int64_t, t_scalar) X(uintptr_t, t_prev) X(int64_t, t_prev_scalar) X(uintptr_t, t_last)      \
  X(int64_t, t_last_scalar) X(uintptr_t, table) X(int64_t, T) X(double, guidance) X(double, clip) \
  X(int64_t, N) X(int64_t, D) X(int, dtype)

// Euler / Euler-ancestral step in sigma space sigma -> sigma_next (x = x0 + sigma eps); eta = 0:
// Euler, eta > 0: ancestral with noise sigma_up drawn from Philox (seed, offset).
#define GK_EULER_STEP_ARGS(X)                                                                    \
  X(int, prediction) X(uintptr_t, model_output) X(uintptr_t, model_output_uncond) X(uintptr_t, x) \
  X(uintptr_t, out) X(double, sigma) X(double, sigma_next) X(double, guidance) X(double, clip)    \
  X(double, eta) X(uint64_t, seed) X(uint64_t, offset) X(int64_t, N) X(int64_t, D) X(int, dtype)

#define GK_DIFFUSION_OPS(OP)                                \
  OP(q_sample, GK_Q_SAMPLE_ARGS)                            \
  OP(q_sample_backward, GK_Q_SAMPLE_BACKWARD_ARGS)          \
  OP(diffusion_sse, GK_DIFFUSION_SSE_ARGS)                  \
  OP(diffusion_sse_backward, GK_DIFFUSION_SSE_BACKWARD_ARGS) \
  OP(sampler_step, GK_SAMPLER_STEP_ARGS)                    \
  OP(sampler_step_backward, GK_SAMPLER_STEP_BACKWARD_ARGS)  \
  OP(dpm_solver_step, GK_DPM_SOLVER_STEP_ARGS)              \
  OP(euler_step, GK_EULER_STEP_ARGS)

namespace gk::ops {
GK_DIFFUSION_OPS(GK_DECLARE_OP)
}  // namespace gk::ops
