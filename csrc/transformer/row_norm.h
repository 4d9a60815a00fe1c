// LayerNorm and RMSNorm over the last dim (genkernels/ops/layer_norm.py, rms_norm.py), written once
// for the C++ CPU and CUDA kernels. Per row of D elements, statistics in fp32 whatever the storage:
//
//   LayerNorm  mean = sum x / D, var = sum (x - mean)^2 / D (two passes), rstd = 1 / sqrt(var + eps)
//              xhat = (x - mean) rstd,   y = xhat w + b
//   RMSNorm    rstd = 1 / sqrt(sum x^2 / D + eps),  xhat = x rstd,  y = xhat w
//
// Backward, g' = grad_y w, A = sum g' / D, B = sum g' xhat / D:
//   LayerNorm grad_x = rstd (g' - A - xhat B);   RMSNorm grad_x = rstd (g' - xhat B)
//   grad_w = sum over rows of grad_y xhat,  grad_b = sum over rows of grad_y
// The column sums are per-(block of kRowBlock rows, column) partials with the rows added in order,
// then the blocks added in order by the host: deterministic, no atomics, the same on CPU and GPU.
// The executors (transformer_cpu.cpp, transformer_cuda.cu) own the loops. NaN propagates.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/dtype.h"
#include "common/macros.h"
#include "transformer/transformer_args.h"

namespace gk {

constexpr int64_t kRowBlock = 32;  // rows per partial of the parameter gradients

GK_HD float row_norm_rstd(float var, float eps) { return 1.f / sqrtf(var + eps); }

template <typename T, bool Rms>
struct RowNormParams {
  const T *x, *weight;
  const float *mean_, *rstd_;
  int64_t R, D;
  template <class A>
  explicit RowNormParams(const A& p)
      : x(as<const T>(p.x)), weight(as<const T>(p.weight)), mean_(as<const float>(p.mean)),
        rstd_(as<const float>(p.rstd)), R(p.R), D(p.D) {}
  GK_HD float in(int64_t i) const { return load(x, i); }
  GK_HD float w(int64_t d) const { return weight ? load(weight, d) : 1.f; }
  // what the statistics pass sums: x (LayerNorm's mean) or x^2 (RMSNorm's mean square)
  GK_HD float xhat(float xv, float mean, float rstd) const { return Rms ? xv * rstd : (xv - mean) * rstd; }
};

template <typename T, bool Rms>
struct RowNormForward : RowNormParams<T, Rms> {
  const T* bias;
  T* y;
  float *mean_out, *rstd_out;
  float eps;
  explicit RowNormForward(const ops::row_norm::Args& p)
      : RowNormParams<T, Rms>(p), bias(as<const T>(p.bias)), y(as<T>(p.y)), mean_out(as<float>(p.mean)),
        rstd_out(as<float>(p.rstd)), eps(static_cast<float>(p.eps)) {}
  GK_HD float b(int64_t d) const { return bias ? load(bias, d) : 0.f; }
  // row r's statistics from s1 = sum x, s2 = sum (x - mean)^2 (LayerNorm) or sum x^2 (RMSNorm)
  GK_HD void stats_done(int64_t r, float mean, float s2) const {
    const float rstd = row_norm_rstd(s2 / static_cast<float>(this->D), eps);
    if (mean_out) mean_out[r] = mean;
    rstd_out[r] = rstd;
  }
  GK_HD void out(int64_t i, int64_t d, float mean, float rstd) const {
    store(y, i, this->xhat(this->in(i), mean, rstd) * this->w(d) + b(d));
  }
};

template <typename T, bool Rms>
struct RowNormBackward : RowNormParams<T, Rms> {
  const T* grad_y;
  T* grad_x;
  float* partials;  // (2, blocks, D) or 0
  int64_t blocks;
  explicit RowNormBackward(const ops::row_norm_backward::Args& p)
      : RowNormParams<T, Rms>(p), grad_y(as<const T>(p.grad_y)), grad_x(as<T>(p.grad_x)),
        partials(as<float>(p.partials)), blocks((p.R + kRowBlock - 1) / kRowBlock) {}
  GK_HD float mean(int64_t r) const { return Rms ? 0.f : this->mean_[r]; }
  GK_HD float rstd(int64_t r) const { return this->rstd_[r]; }
  GK_HD float gy(int64_t i) const { return load(grad_y, i); }
  // element i (column d) of a row: g' and g' xhat, the terms of A and B
  GK_HD void terms(int64_t i, int64_t d, float mean, float rstd, float& g, float& gx) const {
    g = gy(i) * this->w(d);
    gx = g * this->xhat(this->in(i), mean, rstd);
  }
  // A = sum g' / D, B = sum g' xhat / D
  GK_HD void out(int64_t i, int64_t d, float mean, float rstd, float A, float B) const {
    const float g = gy(i) * this->w(d), xh = this->xhat(this->in(i), mean, rstd);
    store(grad_x, i, rstd * (Rms ? g - xh * B : g - A - xh * B));
  }
  // column d's terms of row r: (grad_y xhat, grad_y)
  GK_HD void column_terms(int64_t i, float mean, float rstd, float& tw, float& tb) const {
    const float g = gy(i);
    tw = g * this->xhat(this->in(i), mean, rstd);
    tb = g;
  }
  GK_HD float* p_weight(int64_t blk) const { return partials + blk * this->D; }
  GK_HD float* p_bias(int64_t blk) const { return partials + (blocks + blk) * this->D; }
};

}  // namespace gk
