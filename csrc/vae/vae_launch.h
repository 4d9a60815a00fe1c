// Host entry points of the VAE ops. Each builds the functor for the runtime dtype and hands it to
// an executor: CpuExec (OpenMP) in reparam_kl_cpu.cpp, CudaExec (the tensor's stream) in
// reparam_kl_cuda.cu. The bodies below are shared so the two entry points cannot drift apart.
#pragma once
#include <cstdint>
#include <stdexcept>  // GK_DISPATCH_DTYPE throws std::invalid_argument
#include <string>

#include "common/dtype.h"
#include "vae/reparam_kl.h"

namespace gk {

// ---- declarations (bound in csrc/bindings_cpu.cpp and csrc/bindings_cuda.cpp) ----------------
// kl_partials: (N, num_chunks(D)) float32 partial sums; the host adds each sample's row.
// grad_z / grad_kl may be 0 (no gradient flowed into z / kl).
#define GK_VAE_ENTRY_POINTS(SUFFIX, ...)                                                          \
  void reparam_kl_##SUFFIX(uintptr_t mu, uintptr_t logvar, uintptr_t z, uintptr_t kl_partials,     \
                           int64_t N, int64_t D, uint64_t seed, uint64_t offset, int dtype __VA_ARGS__); \
  void reparam_kl_backward_##SUFFIX(uintptr_t grad_z, uintptr_t grad_kl, uintptr_t mu,             \
                                    uintptr_t logvar, uintptr_t grad_mu, uintptr_t grad_logvar,    \
                                    int64_t N, int64_t D, uint64_t seed, uint64_t offset,          \
                                    int dtype __VA_ARGS__);

GK_VAE_ENTRY_POINTS(cpu)
GK_VAE_ENTRY_POINTS(cuda, , int device, uintptr_t stream)

// ---- shared bodies -------------------------------------------------------------------------
template <class Exec>
void reparam_kl_impl(const Exec& exec, uintptr_t mu, uintptr_t logvar, uintptr_t z, uintptr_t kl_partials,
                     int64_t N, int64_t D, uint64_t seed, uint64_t offset, int dtype) {
  GK_DISPATCH_DTYPE(dtype, "reparam_kl", [&] {
    ReparamKLForward<scalar_t> op{reinterpret_cast<const scalar_t*>(mu), reinterpret_cast<const scalar_t*>(logvar),
                                  reinterpret_cast<scalar_t*>(z), seed, offset, D};
    exec.reduce(op, N, D, reinterpret_cast<float*>(kl_partials), "reparam_kl_fwd");
  });
}

template <class Exec>
void reparam_kl_backward_impl(const Exec& exec, uintptr_t grad_z, uintptr_t grad_kl, uintptr_t mu,
                              uintptr_t logvar, uintptr_t grad_mu, uintptr_t grad_logvar, int64_t N, int64_t D,
                              uint64_t seed, uint64_t offset, int dtype) {
  GK_DISPATCH_DTYPE(dtype, "reparam_kl_backward", [&] {
    ReparamKLBackward<scalar_t> op{reinterpret_cast<const scalar_t*>(grad_z), reinterpret_cast<const float*>(grad_kl),
                                   reinterpret_cast<const scalar_t*>(mu), reinterpret_cast<const scalar_t*>(logvar),
                                   reinterpret_cast<scalar_t*>(grad_mu), reinterpret_cast<scalar_t*>(grad_logvar),
                                   seed, offset, D};
    exec.apply(op, N, D, "reparam_kl_bwd");
  });
}

}  // namespace gk
