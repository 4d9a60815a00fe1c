// CUDA entry points of the VAE ops: the shared bodies launched on the given stream.
#include "common/per_sample_cuda.cuh"
#include "vae/vae_launch.h"

namespace gk {
// CpuExec / CudaExec come from the common per-sample headers (shared with diffusion).
void reparam_kl_cuda(uintptr_t mu, uintptr_t logvar, uintptr_t z, uintptr_t kl_partials, int64_t N, int64_t D,
                     uint64_t seed, uint64_t offset, int dtype, int device, uintptr_t stream) {
  reparam_kl_impl(CudaExec{device, stream}, mu, logvar, z, kl_partials, N, D, seed, offset, dtype);
}

void reparam_kl_backward_cuda(uintptr_t grad_z, uintptr_t grad_kl, uintptr_t mu, uintptr_t logvar,
                              uintptr_t grad_mu, uintptr_t grad_logvar, int64_t N, int64_t D, uint64_t seed,
                              uint64_t offset, int dtype, int device, uintptr_t stream) {
  reparam_kl_backward_impl(CudaExec{device, stream}, grad_z, grad_kl, mu, logvar, grad_mu, grad_logvar, N, D, seed,
                           offset, dtype);
}

}  // namespace gk
