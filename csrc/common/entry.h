// One definition per op -> its argument struct, its CPU and CUDA entry points and its Python binding.
//
// A family lists each op's arguments once, as (type, name) pairs, and its ops as an X-macro:
//   #define GK_Q_SAMPLE_ARGS(X) X(uintptr_t, x0) X(uintptr_t, noise) ... X(int, dtype)
//   #define GK_DIFFUSION_OPS(OP) OP(q_sample, GK_Q_SAMPLE_ARGS) ...
// and writes one body per op by hand, in namespace gk::ops::<op>:
//   template <class Exec> void run(const Exec& exec, const Args& args);
// Everything else is expanded from the list, so no argument is ever written out positionally:
//   namespace gk::ops { GK_DIFFUSION_OPS(GK_DECLARE_OP) }        struct Args + run_cpu/run_cuda
//   namespace gk::ops { GK_DIFFUSION_OPS(GK_DEFINE_CPU_ENTRY) }  in <family>_cpu.cpp (OpenMP)
//   namespace gk::ops { GK_DIFFUSION_OPS(GK_DEFINE_CUDA_ENTRY) } in <family>_cuda.cu (the given stream)
//   GK_DIFFUSION_OPS(GK_BIND_CPU) / GK_BIND_CUDA                  in the bindings (common/bind.h)
// Python calls every entry point with keywords only, named as the fields here (the CUDA one adds
// `device` and `stream`), so a swapped or misspelled argument is a TypeError, not a silent misread.
#pragma once
#include <cstdint>

#define GK_ARG_FIELD(type, name) type name;

#define GK_DECLARE_OP(NAME, ARGS)                                  \
  namespace NAME {                                                 \
  struct Args { ARGS(GK_ARG_FIELD) };                              \
  void run_cpu(const Args& args);                                  \
  void run_cuda(const Args& args, int device, uintptr_t stream);   \
  }

#define GK_DEFINE_CPU_ENTRY(NAME, ARGS) \
  void NAME::run_cpu(const NAME::Args& args) { run(::gk::CpuExec{}, args); }

#define GK_DEFINE_CUDA_ENTRY(NAME, ARGS) \
  void NAME::run_cuda(const NAME::Args& args, int device, uintptr_t stream) { run(::gk::CudaExec{device, stream}, args); }
