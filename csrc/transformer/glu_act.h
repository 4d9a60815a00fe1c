// SwiGLU (silu(gate) * up) and GELU-tanh (genkernels/ops/swiglu.py, gelu_tanh.py), elementwise,
// written once for the C++ CPU and CUDA kernels, in fp32 whatever the storage:
//
//   silu(a) = a s,  s = sigmoid(a) = 1 / (1 + exp(-a)),        silu'(a) = s (1 + a (1 - s))
//   gelu(a) = a (1 + tanh(u)) / 2,  u = c (a + 0.044715 a^3),  c = sqrt(2 / pi)
//   gelu'(a) = (1 + t) / 2 + a (1 - t^2) c (1 + 3 0.044715 a^2) / 2,  t = tanh(u)
//
// y = act(a) b (b absent: y = act(a)); backward grad_a = grad_y b act'(a), grad_b = grad_y act(a).
// sigmoid through exp(-|a|) only (no overflow for large |a|). NaN propagates.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/dtype.h"
#include "common/macros.h"
#include "transformer/transformer_args.h"

namespace gk {

enum GluAct : int { kGluSilu = 0, kGluGeluTanh = 1 };

GK_HD float glu_sigmoid(float a) {
  const float e = expf(-fabsf(a));
  const float inv = 1.f / (1.f + e);
  return a >= 0.f ? inv : e * inv;
}

// act(a) and act'(a)
template <int Act>
GK_HD void glu_act_and_grad(float a, float& f, float& df) {
  if (Act == kGluSilu) {
    const float s = glu_sigmoid(a);
    f = a * s;
    df = s * (1.f + a * (1.f - s));
  } else {
    const float c = 0.7978845608028654f, k = 0.044715f;
    const float t = tanhf(c * (a + k * a * a * a));
    f = 0.5f * a * (1.f + t);
    df = 0.5f * (1.f + t) + 0.5f * a * (1.f - t * t) * c * (1.f + 3.f * k * a * a);
  }
}

template <int Act>
GK_HD float glu_act_value(float a) {
  if (Act == kGluSilu) return a * glu_sigmoid(a);
  const float c = 0.7978845608028654f, k = 0.044715f;
  return 0.5f * a * (1.f + tanhf(c * (a + k * a * a * a)));
}

template <typename T, int Act>
struct GluActForward {
  const T *a, *b;
  T* y;
  explicit GluActForward(const ops::glu_act::Args& p) : a(as<const T>(p.a)), b(as<const T>(p.b)), y(as<T>(p.y)) {}
  GK_HD int begin(int64_t) const { return 0; }
  GK_HD void apply(int, int64_t, int64_t i) const {
    const float f = glu_act_value<Act>(load(a, i));
    store(y, i, b ? f * load(b, i) : f);
  }
};

template <typename T, int Act>
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
    if (b) {
      const float bv = load(b, i);
      if (grad_a) store(grad_a, i, g * bv * df);
      if (grad_b) store(grad_b, i, g * f);
    } else if (grad_a) {
      store(grad_a, i, g * df);
    }
  }
};

}  // namespace gk
