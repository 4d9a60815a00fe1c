// SwiGLU (silu(gate) * up) and GELU-tanh (genkernels/ops/swiglu.py, gelu_tanh.py), elementwise,
// written once for the C++ CPU and CUDA kernels, in fp32 whatever the storage:
//
//   silu(a) = a s,  s = sigmoid(a) = 1 / (1 + exp(-a)),        silu'(a) = s (1 + a (1 - s))
//   gelu(a) = a (1 + tanh(u)) / 2,  u = c (a + 0.044715 a^3),  c = sqrt(2 / pi)
//   gelu'(a) = (1 + t) / 2 + a (1 - t^2) c (1 + 3 0.044715 a^2) / 2,  t = tanh(u)
//
// y = act(a) b (b absent: y = act(a)); backward grad_a = grad_y b act'(a), grad_b = grad_y act(a).
// sigmoid and tanh through exp of -|.| only (gated_activation.h: no overflow, vectorises). NaN propagates.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/dtype.h"
#include "common/macros.h"
#include "conv/gated_activation.h"
#include "transformer/transformer_args.h"

namespace gk {

enum GluAct : int { kGluSilu = 0, kGluGeluTanh = 1 };

// act(a) and act'(a), branch-free (the CPU loops vectorise): gated_activation.h's exp of a
// non-positive argument, so no overflow for large |a|
template <int Act>
GK_HD void glu_act_and_grad(float a, float& f, float& df) {
  if (Act == kGluSilu) {
    const float e = gate_exp_nonpos(-fabsf(a)), inv = 1.f / (1.f + e);
    const bool pos = a >= 0.f;
    const float s = gate_select(pos, 1.f, e) * inv, one_minus_s = gate_select(pos, e, 1.f) * inv;
    f = a * s;
    df = s * (1.f + a * one_minus_s);
  } else {
    const float c = 0.7978845608028654f, k = 0.044715f;
    const float u = c * (a + k * a * a * a);
    const float t = gate_tanh_from(u, gate_exp_nonpos(-2.f * fabsf(u)));
    f = 0.5f * a * (1.f + t);
    df = 0.5f * (1.f + t) + 0.5f * a * ((1.f - t) * (1.f + t)) * c * (1.f + 3.f * k * a * a);
  }
}

template <int Act>
GK_HD float glu_act_value(float a) {
  if (Act == kGluSilu) {
    const float e = gate_exp_nonpos(-fabsf(a));
    return a * (gate_select(a >= 0.f, 1.f, e) / (1.f + e));
  }
  const float c = 0.7978845608028654f, k = 0.044715f;
  const float u = c * (a + k * a * a * a);
  return 0.5f * a * (1.f + gate_tanh_from(u, gate_exp_nonpos(-2.f * fabsf(u))));
}

// HasB: b present (SwiGLU) or not (plain GELU-tanh); a compile-time switch, so no branch per element
template <typename T, int Act, bool HasB>
struct GluActForward {
  const T *a, *b;
  T* y;
  explicit GluActForward(const ops::glu_act::Args& p) : a(as<const T>(p.a)), b(as<const T>(p.b)), y(as<T>(p.y)) {}
  GK_HD int begin(int64_t) const { return 0; }
  GK_HD void apply(int, int64_t, int64_t i) const {
    const float f = glu_act_value<Act>(load(a, i));
    store(y, i, HasB ? f * load(b, i) : f);
  }
};

template <typename T, int Act, bool HasB>
struct GluActBackward {
  const T *grad_y, *a, *b;
  T *grad_a, *grad_b;
  explicit GluActBackward(const ops::glu_act_backward::Args& p)
      : grad_y(as<const T>(p.grad_y)), a(as<const T>(p.a)), b(as<const T>(p.b)), grad_a(as<T>(p.grad_a)),
        grad_b(as<T>(p.grad_b)) {}
  GK_HD int begin(int64_t) const { return 0; }
  GK_HD void apply(int, int64_t, int64_t i) const {
    float f, df;
    glu_act_and_grad<Act>(load(a, i), f, df);
    const float g = load(grad_y, i);
    if (HasB) {
      const float bv = load(b, i);
      store(grad_a, i, g * bv * df);
      store(grad_b, i, g * f);
    } else {
      store(grad_a, i, g * df);
    }
  }
};

}  // namespace gk
