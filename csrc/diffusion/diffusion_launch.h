// Host entry points of the diffusion ops. Each validates what only C++ can see, builds the
// functor for the runtime dtype and hands it to an executor: CpuExec (OpenMP) in
// diffusion_cpu.cpp, CudaExec (current stream of the tensor's device) in diffusion_cuda.cu.
// The bodies below are shared so the CPU and CUDA entry points cannot drift apart.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/dtype.h"
#include "diffusion/diffusion.h"

namespace gk {

// ---- declarations (bound in csrc/bindings_cpu.cpp and csrc/bindings_cuda.cpp) ----------------
#define GK_DIFFUSION_ENTRY_POINTS(SUFFIX, ...)                                                    \
  void philox_normal_##SUFFIX(uintptr_t out, int64_t N, int64_t D, uint64_t seed, uint64_t offset,  \
                              int dtype __VA_ARGS__);                                               \
  void q_sample_##SUFFIX(uintptr_t x0, uintptr_t noise, uintptr_t t, int64_t t_scalar,              \
                         uintptr_t table, int64_t T, uintptr_t x_t, uintptr_t velocity, int64_t N,  \
                         int64_t D, int dtype __VA_ARGS__);                                         \
  void q_sample_backward_##SUFFIX(uintptr_t grad_x_t, uintptr_t grad_velocity, uintptr_t t,         \
                                  int64_t t_scalar, uintptr_t table, int64_t T, uintptr_t grad_x0,  \
                                  uintptr_t grad_noise, int64_t N, int64_t D, int dtype __VA_ARGS__); \
  void diffusion_sse_##SUFFIX(uintptr_t model_output, uintptr_t x0, uintptr_t noise, uintptr_t t,   \
                              int64_t t_scalar, uintptr_t table, int64_t T, int prediction,         \
                              uintptr_t partials, int64_t N, int64_t D, int dtype __VA_ARGS__);     \
  void diffusion_sse_backward_##SUFFIX(uintptr_t grad_sse, uintptr_t model_output, uintptr_t x0,    \
                                       uintptr_t noise, uintptr_t t, int64_t t_scalar,              \
                                       uintptr_t table, int64_t T, int prediction,                  \
                                       uintptr_t grad_output, uintptr_t grad_x0,                    \
                                       uintptr_t grad_noise, int64_t N, int64_t D,                  \
                                       int dtype __VA_ARGS__);                                      \
  void sampler_step_##SUFFIX(int kind, int prediction, uintptr_t model_output,                      \
                             uintptr_t model_output_uncond, uintptr_t x_t, uintptr_t out,           \
                             uintptr_t t, int64_t t_scalar, uintptr_t t_prev, int64_t t_prev_scalar, \
                             uintptr_t table, int64_t T, double guidance, double clip, double eta,  \
                             bool large_variance, uint64_t seed, uint64_t offset, int64_t N,        \
                             int64_t D, int dtype __VA_ARGS__);                                     \
  void sampler_step_backward_##SUFFIX(int kind, int prediction, uintptr_t grad,                     \
                                      uintptr_t model_output, uintptr_t model_output_uncond,        \
                                      uintptr_t x_t, uintptr_t grad_output,                         \
                                      uintptr_t grad_output_uncond, uintptr_t grad_x_t,             \
                                      uintptr_t t, int64_t t_scalar, uintptr_t t_prev,              \
                                      int64_t t_prev_scalar, uintptr_t table, int64_t T,            \
                                      double guidance, double clip, double eta,                     \
                                      bool large_variance, int64_t N, int64_t D, int dtype __VA_ARGS__);

int cpu_num_threads();
GK_DIFFUSION_ENTRY_POINTS(cpu)
GK_DIFFUSION_ENTRY_POINTS(cuda, , int device, uintptr_t stream)
int cuda_device_count();

// ---- shared bodies -------------------------------------------------------------------------
inline StepIndex step_index(uintptr_t ptr, int64_t scalar) { return {as<const int64_t>(ptr), scalar}; }

inline void check_prediction(int prediction, const char* op) {
  if (prediction < kEpsilon || prediction > kVelocity)
    throw std::invalid_argument(std::string(op) + ": prediction code must be 0, 1 or 2, got " + std::to_string(prediction));
}

template <class Exec>
void philox_normal_impl(const Exec& exec, uintptr_t out, int64_t N, int64_t D, uint64_t seed, uint64_t offset, int dtype) {
  GK_DISPATCH_DTYPE(dtype, "philox_normal", [&] {
    exec.apply(PhiloxNormalFill<scalar_t>{as<scalar_t>(out), seed, offset, D}, N, D, "philox_normal");
  });
}

template <class Exec>
void q_sample_impl(const Exec& exec, uintptr_t x0, uintptr_t noise, uintptr_t t, int64_t t_scalar,
                   uintptr_t table, int64_t T, uintptr_t x_t, uintptr_t velocity, int64_t N, int64_t D, int dtype) {
  GK_DISPATCH_DTYPE(dtype, "q_sample", [&] {
    QSampleForward<scalar_t> op{as<const scalar_t>(x0), as<const scalar_t>(noise), as<scalar_t>(x_t),
                                as<scalar_t>(velocity), step_index(t, t_scalar), {as<const double>(table), T}, D};
    exec.apply(op, N, D, "q_sample_fwd");
  });
}

template <class Exec>
void q_sample_backward_impl(const Exec& exec, uintptr_t grad_x_t, uintptr_t grad_velocity, uintptr_t t,
                            int64_t t_scalar, uintptr_t table, int64_t T, uintptr_t grad_x0,
                            uintptr_t grad_noise, int64_t N, int64_t D, int dtype) {
  GK_DISPATCH_DTYPE(dtype, "q_sample_backward", [&] {
    QSampleBackward<scalar_t> op{as<const scalar_t>(grad_x_t), as<const scalar_t>(grad_velocity),
                                 as<scalar_t>(grad_x0), as<scalar_t>(grad_noise), step_index(t, t_scalar),
                                 {as<const double>(table), T}, D};
    exec.apply(op, N, D, "q_sample_bwd");
  });
}

template <class Exec>
void diffusion_sse_impl(const Exec& exec, uintptr_t model_output, uintptr_t x0, uintptr_t noise, uintptr_t t,
                        int64_t t_scalar, uintptr_t table, int64_t T, int prediction, uintptr_t partials,
                        int64_t N, int64_t D, int dtype) {
  check_prediction(prediction, "diffusion_sse");
  GK_DISPATCH_DTYPE(dtype, "diffusion_sse", [&] {
    DiffusionSSE<scalar_t> op{as<const scalar_t>(model_output), as<const scalar_t>(x0), as<const scalar_t>(noise),
                              step_index(t, t_scalar), {as<const double>(table), T}, prediction, D};
    exec.reduce(op, N, D, as<float>(partials), "diffusion_sse_fwd");
  });
}

template <class Exec>
void diffusion_sse_backward_impl(const Exec& exec, uintptr_t grad_sse, uintptr_t model_output, uintptr_t x0,
                                 uintptr_t noise, uintptr_t t, int64_t t_scalar, uintptr_t table, int64_t T,
                                 int prediction, uintptr_t grad_output, uintptr_t grad_x0, uintptr_t grad_noise,
                                 int64_t N, int64_t D, int dtype) {
  check_prediction(prediction, "diffusion_sse_backward");
  GK_DISPATCH_DTYPE(dtype, "diffusion_sse_backward", [&] {
    DiffusionSSEBackward<scalar_t> op{as<const float>(grad_sse), as<const scalar_t>(model_output),
                                      as<const scalar_t>(x0), as<const scalar_t>(noise), as<scalar_t>(grad_output),
                                      as<scalar_t>(grad_x0), as<scalar_t>(grad_noise), step_index(t, t_scalar),
                                      {as<const double>(table), T}, prediction, D};
    exec.apply(op, N, D, "diffusion_sse_bwd");
  });
}

inline SamplerParams sampler_params(int kind, int prediction, uintptr_t t, int64_t t_scalar, uintptr_t t_prev,
                                    int64_t t_prev_scalar, uintptr_t table, int64_t T, double guidance,
                                    double clip, double eta, bool large_variance, uint64_t seed, uint64_t offset) {
  check_prediction(prediction, "sampler_step");
  if (kind != kDDPM && kind != kDDIM)
    throw std::invalid_argument("sampler_step: kind must be 0 (DDPM) or 1 (DDIM), got " + std::to_string(kind));
  return {kind, prediction, step_index(t, t_scalar), step_index(t_prev, t_prev_scalar),
          {as<const double>(table), T}, float(guidance), float(clip), float(eta), large_variance, seed, offset};
}

template <class Exec>
void sampler_step_impl(const Exec& exec, int kind, int prediction, uintptr_t model_output,
                       uintptr_t model_output_uncond, uintptr_t x_t, uintptr_t out, uintptr_t t, int64_t t_scalar,
                       uintptr_t t_prev, int64_t t_prev_scalar, uintptr_t table, int64_t T, double guidance,
                       double clip, double eta, bool large_variance, uint64_t seed, uint64_t offset, int64_t N,
                       int64_t D, int dtype) {
  const SamplerParams p = sampler_params(kind, prediction, t, t_scalar, t_prev, t_prev_scalar, table, T, guidance,
                                         clip, eta, large_variance, seed, offset);
  GK_DISPATCH_DTYPE(dtype, "sampler_step", [&] {
    SamplerStepForward<scalar_t> op{as<const scalar_t>(model_output), as<const scalar_t>(model_output_uncond),
                                    as<const scalar_t>(x_t), as<scalar_t>(out), p, D};
    exec.apply(op, N, D, kind == kDDPM ? "ddpm_step_fwd" : "ddim_step_fwd");
  });
}

template <class Exec>
void sampler_step_backward_impl(const Exec& exec, int kind, int prediction, uintptr_t grad, uintptr_t model_output,
                                uintptr_t model_output_uncond, uintptr_t x_t, uintptr_t grad_output,
                                uintptr_t grad_output_uncond, uintptr_t grad_x_t, uintptr_t t, int64_t t_scalar,
                                uintptr_t t_prev, int64_t t_prev_scalar, uintptr_t table, int64_t T,
                                double guidance, double clip, double eta, bool large_variance, int64_t N,
                                int64_t D, int dtype) {
  const SamplerParams p = sampler_params(kind, prediction, t, t_scalar, t_prev, t_prev_scalar, table, T, guidance,
                                         clip, eta, large_variance, 0, 0);
  GK_DISPATCH_DTYPE(dtype, "sampler_step_backward", [&] {
    SamplerStepBackward<scalar_t> op{as<const scalar_t>(grad), as<const scalar_t>(model_output),
                                     as<const scalar_t>(model_output_uncond), as<const scalar_t>(x_t),
                                     as<scalar_t>(grad_output), as<scalar_t>(grad_output_uncond),
                                     as<scalar_t>(grad_x_t), p, D};
    exec.apply(op, N, D, kind == kDDPM ? "ddpm_step_bwd" : "ddim_step_bwd");
  });
}

}  // namespace gk
