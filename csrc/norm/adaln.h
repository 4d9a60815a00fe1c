// adaLN modulation of DiT (genkernels/ops/adaln.py), written once for the C++ CPU and CUDA kernels.
// For each row (n, l) of x (N, L, D):
//
//   mean, var over the row's D elements (fp32, two passes)   rstd = 1 / sqrt(var + eps)
//   y[d] = (x[d] - mean) * rstd * (1 + scale[n, d]) + shift[n, d]
//
// Backward, with xhat = (x - mean) rstd and gx^ = grad_y (1 + scale):
//   grad_x = rstd * (gx^ - A - xhat B),  A = mean_d gx^,  B = mean_d gx^ xhat
//   grad_shift[n, d] = sum_l grad_y,     grad_scale[n, d] = sum_l grad_y xhat
// The two column sums are taken per (sample, block of kAdaLNRowBlock rows), rows in order, then
// the blocks added in order (no atomics: independent of the thread count).
#pragma once
#include <cmath>
#include <cstdint>

#include "common/dtype.h"
#include "common/macros.h"
#include "norm/group_norm_act.h"
#include "norm/norm_args.h"

namespace gk {

constexpr int64_t kAdaLNRowBlock = 32;  // genkernels/ops/adaln.py ROW_BLOCK

template <typename T>
struct AdaLNForward {
  const T *x, *shift, *scale;
  T* y;
  int64_t N, L, D;
  float eps;
  explicit AdaLNForward(const ops::adaln_modulate::Args& p)
      : x(as<const T>(p.x)), shift(as<const T>(p.shift)), scale(as<const T>(p.scale)), y(as<T>(p.y)), N(p.N),
        L(p.L), D(p.D), eps(static_cast<float>(p.eps)) {}
  GK_HD float in(int64_t i) const { return load(x, i); }
  // element d of row r (sample n = r / L)
  GK_HD void out(int64_t r, int64_t n, int64_t d, float mean, float rstd) const {
    const int64_t i = r * D + d, nd = n * D + d;
    store(y, i, (load(x, i) - mean) * rstd * (1.f + load(scale, nd)) + load(shift, nd));
  }
};

template <typename T>
struct AdaLNBackward {
  const T *grad_y, *x, *scale;
  T *grad_x, *grad_shift, *grad_scale;
  float* partials;  // (2, N, blocks, D), then (N * L, 2) row statistics
  int64_t N, L, D, blocks;
  float eps;
  explicit AdaLNBackward(const ops::adaln_modulate_backward::Args& p)
      : grad_y(as<const T>(p.grad_y)), x(as<const T>(p.x)), scale(as<const T>(p.scale)), grad_x(as<T>(p.grad_x)),
        grad_shift(as<T>(p.grad_shift)), grad_scale(as<T>(p.grad_scale)), partials(as<float>(p.partials)), N(p.N),
        L(p.L), D(p.D), blocks((p.L + kAdaLNRowBlock - 1) / kAdaLNRowBlock), eps(static_cast<float>(p.eps)) {}
  GK_HD float in(int64_t i) const { return load(x, i); }
  GK_HD float gxhat(int64_t i, int64_t nd) const { return load(grad_y, i) * (1.f + load(scale, nd)); }
  GK_HD float* stats() const { return partials + 2 * N * blocks * D; }
  GK_HD float* p_shift(int64_t n, int64_t blk) const { return partials + (n * blocks + blk) * D; }
  GK_HD float* p_scale(int64_t n, int64_t blk) const { return partials + ((N + n) * blocks + blk) * D; }
  // the terms element i adds to the column sums of grad_shift (a) and grad_scale (b)
  GK_HD void column_terms(int64_t i, float mean, float rstd, float& a, float& b) const {
    a = load(grad_y, i);
    b = a * ((load(x, i) - mean) * rstd);
  }
  // grad_x of element d of row r, given the row's A and B (means over d)
  GK_HD void out(int64_t r, int64_t n, int64_t d, float mean, float rstd, float A, float B) const {
    const int64_t i = r * D + d;
    const float xhat = (load(x, i) - mean) * rstd;
    store(grad_x, i, rstd * (gxhat(i, n * D + d) - A - xhat * B));
  }
  // grad_shift / grad_scale of (n, d): the row blocks' partial sums added in order
  GK_HD void finish(int64_t n, int64_t d) const {
    float s = 0.f, t = 0.f;
    for (int64_t blk = 0; blk < blocks; ++blk) {
      s += p_shift(n, blk)[d];
      t += p_scale(n, blk)[d];
    }
    store(grad_shift, n * D + d, s);
    store(grad_scale, n * D + d, t);
  }
};

}  // namespace gk
