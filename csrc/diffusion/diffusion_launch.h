// Host bodies of the diffusion ops, one `run` per op (entry points per common/entry.h, arguments
// in diffusion_args.h). Each validates what only C++ can see, turns the runtime codes into
// template arguments, builds the functor and hands it to an executor: CpuExec (OpenMP) in
// diffusion_cpu.cpp, CudaExec (the given stream) in diffusion_cuda.cu. The bodies are shared so
// the CPU and CUDA entry points cannot drift apart.
#pragma once
#include <cstdint>

#include "common/dispatch.h"
#include "common/dtype.h"
#include "diffusion/diffusion.h"
#include "diffusion/diffusion_args.h"

namespace gk {

// Runtime prediction / sampler-kind code -> compile-time constant for `body(auto code)`.
template <class Body>
void dispatch_prediction(int prediction, const char* op, Body&& body) {
  dispatch_code<kEpsilon, kSample, kVelocity>(prediction, op, "prediction code", "0 (epsilon), 1 (sample) or 2 (v)",
                                              body);
}

template <class Body>
void dispatch_sampler_kind(int kind, const char* op, Body&& body) {
  dispatch_code<kDDPM, kDDIM>(kind, op, "kind", "0 (DDPM) or 1 (DDIM)", body);
}

namespace ops::q_sample {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  GK_DISPATCH_DTYPE(a.dtype, "q_sample", [&] { exec.apply(QSampleForward<scalar_t>(a), a.N, a.D, "q_sample_fwd"); });
}
}  // namespace ops::q_sample

namespace ops::q_sample_backward {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  GK_DISPATCH_DTYPE(a.dtype, "q_sample_backward",
                    [&] { exec.apply(QSampleBackward<scalar_t>(a), a.N, a.D, "q_sample_bwd"); });
}
}  // namespace ops::q_sample_backward

namespace ops::diffusion_sse {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  dispatch_prediction(a.prediction, "diffusion_sse", [&](auto prediction) {
    GK_DISPATCH_DTYPE(a.dtype, "diffusion_sse", [&] {
      exec.reduce(DiffusionSSE<scalar_t, decltype(prediction)::value>(a), a.N, a.D, as<float>(a.partials),
                  "diffusion_sse_fwd");
    });
  });
}
}  // namespace ops::diffusion_sse

namespace ops::diffusion_sse_backward {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  dispatch_prediction(a.prediction, "diffusion_sse_backward", [&](auto prediction) {
    GK_DISPATCH_DTYPE(a.dtype, "diffusion_sse_backward", [&] {
      exec.apply(DiffusionSSEBackward<scalar_t, decltype(prediction)::value>(a), a.N, a.D, "diffusion_sse_bwd");
    });
  });
}
}  // namespace ops::diffusion_sse_backward

namespace ops::sampler_step {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  dispatch_prediction(a.prediction, "sampler_step", [&](auto prediction) {
    dispatch_sampler_kind(a.kind, "sampler_step", [&](auto kind) {
      constexpr int kKind = decltype(kind)::value;
      GK_DISPATCH_DTYPE(a.dtype, "sampler_step", [&] {
        exec.apply(SamplerStepForward<scalar_t, kKind, decltype(prediction)::value>(a), a.N, a.D,
                   kKind == kDDPM ? "ddpm_step_fwd" : "ddim_step_fwd");
      });
    });
  });
}
}  // namespace ops::sampler_step

namespace ops::sampler_step_backward {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  dispatch_prediction(a.prediction, "sampler_step_backward", [&](auto prediction) {
    dispatch_sampler_kind(a.kind, "sampler_step_backward", [&](auto kind) {
      constexpr int kKind = decltype(kind)::value;
      GK_DISPATCH_DTYPE(a.dtype, "sampler_step_backward", [&] {
        exec.apply(SamplerStepBackward<scalar_t, kKind, decltype(prediction)::value>(a), a.N, a.D,
                   kKind == kDDPM ? "ddpm_step_bwd" : "ddim_step_bwd");
      });
    });
  });
}
}  // namespace ops::sampler_step_backward

namespace ops::dpm_solver_step {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  dispatch_prediction(a.prediction, "dpm_solver_step", [&](auto prediction) {
    GK_DISPATCH_DTYPE(a.dtype, "dpm_solver_step", [&] {
      exec.apply(DpmSolverStepForward<scalar_t, decltype(prediction)::value>(a), a.N, a.D, "dpm_solver_step_fwd");
    });
  });
}
}  // namespace ops::dpm_solver_step

namespace ops::euler_step {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  dispatch_prediction(a.prediction, "euler_step", [&](auto prediction) {
    GK_DISPATCH_DTYPE(a.dtype, "euler_step", [&] {
      exec.apply(EulerStepForward<scalar_t, decltype(prediction)::value>(a), a.N, a.D, "euler_step_fwd");
    });
  });
}
}  // namespace ops::euler_step

}  // namespace gk
