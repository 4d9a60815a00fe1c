// C++ CPU entry points of the VAE ops: the shared bodies run by OpenMP loops.
#include "common/per_sample_cpu.h"
#include "vae/vae_launch.h"

namespace gk {
// CpuExec / CudaExec come from the common per-sample headers (shared with diffusion).
void reparam_kl_cpu(uintptr_t mu, uintptr_t logvar, uintptr_t z, uintptr_t kl_partials, int64_t N, int64_t D,
                    uint64_t seed, uint64_t offset, int dtype) {
  reparam_kl_impl(CpuExec{}, mu, logvar, z, kl_partials, N, D, seed, offset, dtype);
}

void reparam_kl_backward_cpu(uintptr_t grad_z, uintptr_t grad_kl, uintptr_t mu, uintptr_t logvar,
                             uintptr_t grad_mu, uintptr_t grad_logvar, int64_t N, int64_t D, uint64_t seed,
                             uint64_t offset, int dtype) {
  reparam_kl_backward_impl(CpuExec{}, grad_z, grad_kl, mu, logvar, grad_mu, grad_logvar, N, D, seed, offset, dtype);
}

}  // namespace gk
