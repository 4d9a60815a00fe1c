// GroupNorm + per-sample scale-shift + SiLU (genkernels/ops/group_norm_act.py), written once for
// the C++ CPU and CUDA kernels. For the group of channel c in sample n (M = C / G * inner elements):
//
//   mean, var over the group (fp32, two passes)     rstd = 1 / sqrt(var + eps)
//   xhat = (x - mean) * rstd
//   h    = (xhat * w_c + b_c) * m + t,    m = 1 + scale[n, c], t = shift[n, c]
//        = (x - mean) * a + bb,           a = rstd * w_c * m,  bb = b_c * m + t     (NormCoef)
//   y    = act(h)
//
// Backward, with g' = grad_y * act'(h) and per-(n, c) sums S1 = sum g', S2 = sum g' xhat:
//   grad_shift[n, c] = S1,  grad_scale[n, c] = w_c S2 + b_c S1
//   grad_w[c] = sum_n m S2,  grad_b[c] = sum_n m S1               (added in sample order)
//   grad_x = rstd * (k g' - A - xhat B),  k = w_c m,  A = sum_c k S1 / M,  B = sum_c k S2 / M
//
// The executors (norm_cpu.cpp, norm_cuda.cu) own the loops: one work unit per (sample, group),
// whose M elements are contiguous from unit * M. SiLU's exponential is gated_activation.h's
// branch-free one (exp of -|h| only), so the CPU loops vectorise. NaN in any input propagates.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/dtype.h"
#include "common/macros.h"
#include "conv/gated_activation.h"
#include "norm/norm_args.h"

namespace gk {

enum NormAct : int { kNormActNone = 0, kNormActSilu = 1 };

template <int Act>
GK_HD float norm_act(float h) {
  if (Act == kNormActSilu) {
    const float e = gate_exp_nonpos(-fabsf(h));
    return h * (gate_select(h >= 0.f, 1.f, e) / (1.f + e));
  }
  return h;
}

// g * act'(h); silu'(h) = s (1 + h (1 - s)), s = sigmoid(h)
template <int Act>
GK_HD float norm_act_grad(float h, float g) {
  if (Act == kNormActSilu) {
    const float e = gate_exp_nonpos(-fabsf(h)), inv = 1.f / (1.f + e);
    const bool pos = h >= 0.f;
    const float s = gate_select(pos, 1.f, e) * inv, one_minus_s = gate_select(pos, e, 1.f) * inv;
    return g * (s * (1.f + h * one_minus_s));
  }
  return g;
}

GK_HD float norm_rstd(float var, float eps) { return 1.f / sqrtf(var + eps); }

struct NormCoef {
  float a, b;  // h = (x - mean) * a + b
  float k;     // dh / dxhat = w * (1 + scale)
};

// The parameters of the chain, shared by forward and backward.
template <typename T>
struct GroupNormActParams {
  const T *x, *weight, *bias, *scale, *shift;
  int64_t N, C, G, inner, Cg, M;
  float eps;
  template <class A>
  explicit GroupNormActParams(const A& p)
      : x(as<const T>(p.x)), weight(as<const T>(p.weight)), bias(as<const T>(p.bias)), scale(as<const T>(p.scale)),
        shift(as<const T>(p.shift)), N(p.N), C(p.C), G(p.G), inner(p.inner), Cg(p.C / p.G),
        M(p.C / p.G * p.inner), eps(static_cast<float>(p.eps)) {}
  GK_HD int64_t units() const { return N * G; }
  GK_HD float in(int64_t i) const { return load(x, i); }
  GK_HD float w(int64_t c) const { return weight ? load(weight, c) : 1.f; }
  GK_HD float b(int64_t c) const { return bias ? load(bias, c) : 0.f; }
  GK_HD float m(int64_t nc) const { return scale ? 1.f + load(scale, nc) : 1.f; }
  // channel j of unit u: its (n, c) index n * C + c is u * Cg + j
  GK_HD NormCoef coef(int64_t u, int64_t j, float rstd) const {
    const int64_t nc = u * Cg + j, c = nc % C;
    const float wc = w(c), mc = m(nc);
    return {rstd * wc * mc, b(c) * mc + (shift ? load(shift, nc) : 0.f), wc * mc};
  }
};

template <typename T, int Act>
struct GroupNormActForward : GroupNormActParams<T> {
  T* y;
  explicit GroupNormActForward(const ops::group_norm_act::Args& p) : GroupNormActParams<T>(p), y(as<T>(p.y)) {}
  GK_HD void out(int64_t i, float xv, float mean, const NormCoef& k) const {
    store(y, i, norm_act<Act>((xv - mean) * k.a + k.b));
  }
};

template <typename T, int Act>
struct GroupNormActBackward : GroupNormActParams<T> {
  const T* grad_y;
  T *grad_x, *grad_weight, *grad_bias, *grad_scale, *grad_shift;
  float* sums;  // (2, N, C)
  explicit GroupNormActBackward(const ops::group_norm_act_backward::Args& p)
      : GroupNormActParams<T>(p), grad_y(as<const T>(p.grad_y)), grad_x(as<T>(p.grad_x)),
        grad_weight(as<T>(p.grad_weight)), grad_bias(as<T>(p.grad_bias)), grad_scale(as<T>(p.grad_scale)),
        grad_shift(as<T>(p.grad_shift)), sums(as<float>(p.sums)) {}
  // g' of element i
  GK_HD float gh(int64_t i, float xv, float mean, const NormCoef& k) const {
    return norm_act_grad<Act>((xv - mean) * k.a + k.b, load(grad_y, i));
  }
  // channel j of unit u has sums S1, S2: store them and the modulation gradients
  GK_HD void channel_done(int64_t u, int64_t j, float s1, float s2) const {
    const int64_t nc = u * this->Cg + j, c = nc % this->C;
    sums[nc] = s1;
    sums[this->N * this->C + nc] = s2;
    if (grad_shift) store(grad_shift, nc, s1);
    if (grad_scale) store(grad_scale, nc, this->w(c) * s2 + this->b(c) * s1);
  }
  GK_HD void out(int64_t i, float g, float xhat, const NormCoef& k, float rstd, float A, float B) const {
    store(grad_x, i, rstd * (k.k * g - A - xhat * B));
  }
  // grad_w[c], grad_b[c]: the per-sample terms added in sample order
  GK_HD void param_grads(int64_t c) const {
    float gw = 0.f, gb = 0.f;
    const int64_t NC = this->N * this->C;
    for (int64_t n = 0; n < this->N; ++n) {
      const float mc = this->m(n * this->C + c);
      gw += mc * sums[NC + n * this->C + c];
      gb += mc * sums[n * this->C + c];
    }
    if (grad_weight) store(grad_weight, c, gw);
    if (grad_bias) store(grad_bias, c, gb);
  }
};

}  // namespace gk
