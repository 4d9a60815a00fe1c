// Gaussian reparameterisation with its KL to the standard normal prior (Kingma & Welling 2014,
// "Auto-Encoding Variational Bayes", eq. 10 and appendix B), written once for the C++ CPU kernels
// and the CUDA kernels.
//
//   z  = mu + exp(logvar / 2) * eps,         eps = Philox normal at (seed, offset, sample n, element i)
//   kl = 1/2 sum_i (mu^2 + exp(logvar) - 1 - logvar)      per sample, = KL(N(mu, sigma^2) || N(0, 1))
//
// eps is never stored: the backward regenerates it from the same counter, so the op costs one
// read of mu and logvar and one write of z, and CPU and GPU draw bit-identical noise.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/dtype.h"
#include "common/macros.h"
#include "common/philox.h"
#include "vae/vae_args.h"

namespace gk {

GK_HD float reparam_sample(float mu, float logvar, float eps) { return mu + expf(0.5f * logvar) * eps; }

GK_HD float gaussian_kl_term(float mu, float logvar) {
  return 0.5f * (mu * mu + expf(logvar) - 1.f - logvar);
}

// d/dmu and d/dlogvar of  grad_z * z + grad_kl * kl_term.
GK_HD void reparam_kl_grads(float mu, float logvar, float eps, float grad_z, float grad_kl, float& grad_mu,
                            float& grad_logvar) {
  grad_mu = grad_z + grad_kl * mu;
  grad_logvar = 0.5f * (grad_z * eps * expf(0.5f * logvar) + grad_kl * (expf(logvar) - 1.f));
}

// ---------------------------------------------------------------------------------------------
// Functors for the per-sample loops (common/per_sample_cpu.h, common/per_sample_cuda.cuh), built
// from their op's Args (vae_args.h) by name. Element k = n * D + i of every (N, D) tensor.

// A reduction whose term also writes z, so the forward is a single pass: partial KL sums per
// (sample, chunk) unit come back and the host adds a sample's chunks.
template <typename T>
struct ReparamKLForward {
  const T *mu, *logvar;
  T* z;
  uint64_t seed, offset;
  int64_t D;
  explicit ReparamKLForward(const ops::reparam_kl::Args& a)
      : mu(as<const T>(a.mu)), logvar(as<const T>(a.logvar)), z(as<T>(a.z)), seed(a.seed), offset(a.offset),
        D(a.D) {}
  GK_HD NormalStream begin(int64_t n) const { return NormalStream(seed, offset, n); }
  GK_HD float term(NormalStream& rng, int64_t n, int64_t i) const {
    const int64_t k = n * D + i;
    const float m = load(mu, k), lv = load(logvar, k);
    store(z, k, reparam_sample(m, lv, rng.at(static_cast<uint64_t>(i))));
    return gaussian_kl_term(m, lv);
  }
};

struct ReparamKLBackwardState {
  NormalStream rng;
  float grad_kl;
};

template <typename T>
struct ReparamKLBackward {
  const T* grad_z;        // (N, D) or null (z received no gradient)
  const float* grad_kl;   // (N,) float32 or null (kl received no gradient)
  const T *mu, *logvar;
  T *grad_mu, *grad_logvar;
  uint64_t seed, offset;
  int64_t D;
  explicit ReparamKLBackward(const ops::reparam_kl_backward::Args& a)
      : grad_z(as<const T>(a.grad_z)), grad_kl(as<const float>(a.grad_kl)), mu(as<const T>(a.mu)),
        logvar(as<const T>(a.logvar)), grad_mu(as<T>(a.grad_mu)), grad_logvar(as<T>(a.grad_logvar)), seed(a.seed),
        offset(a.offset), D(a.D) {}
  GK_HD ReparamKLBackwardState begin(int64_t n) const {
    return {NormalStream(seed, offset, n), grad_kl ? grad_kl[n] : 0.f};
  }
  GK_HD void apply(ReparamKLBackwardState& st, int64_t n, int64_t i) const {
    const int64_t k = n * D + i;
    const float gz = grad_z ? load(grad_z, k) : 0.f;
    const float eps = grad_z ? st.rng.at(static_cast<uint64_t>(i)) : 0.f;  // only z depends on eps
    float gm, glv;
    reparam_kl_grads(load(mu, k), load(logvar, k), eps, gz, st.grad_kl, gm, glv);
    store(grad_mu, k, gm);
    store(grad_logvar, k, glv);
  }
};

}  // namespace gk
