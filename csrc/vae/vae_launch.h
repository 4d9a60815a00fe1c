// Host bodies of the VAE ops, one `run` per op (entry points per common/entry.h, arguments in
// vae_args.h). Each builds the functor for the runtime dtype and hands it to an executor: CpuExec
// (OpenMP) in reparam_kl_cpu.cpp, CudaExec (the given stream) in reparam_kl_cuda.cu. The bodies
// are shared so the two entry points cannot drift apart.
#pragma once
#include <cstdint>

#include "common/dtype.h"
#include "vae/reparam_kl.h"
#include "vae/vae_args.h"

namespace gk {

namespace ops::reparam_kl {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  GK_DISPATCH_DTYPE(a.dtype, "reparam_kl", [&] {
    exec.reduce(ReparamKLForward<scalar_t>(a), a.N, a.D, as<float>(a.kl_partials), "reparam_kl_fwd");
  });
}
}  // namespace ops::reparam_kl

namespace ops::reparam_kl_backward {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  GK_DISPATCH_DTYPE(a.dtype, "reparam_kl_backward",
                    [&] { exec.apply(ReparamKLBackward<scalar_t>(a), a.N, a.D, "reparam_kl_bwd"); });
}
}  // namespace ops::reparam_kl_backward

}  // namespace gk
