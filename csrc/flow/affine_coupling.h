// Affine and additive coupling of RealNVP / Glow (Dinh et al. 2017, eq. 4-6; Kingma & Dhariwal
// 2018, table 1), written once for the C++ CPU kernels and the CUDA kernels:
//
//   forward   y2 = x2 * exp(s) + t,        logdet = sum(s)
//   inverse   x2 = (y2 - t) * exp(-s),     logdet = -sum(s)
//   s = scale * tanh(raw / scale)          ("tanh"),   ds/draw = 1 - tanh^2(raw / scale)
//   s = log sigmoid(raw + 2)               ("sigmoid"), ds/draw = sigmoid(-(raw + 2))
//   backward (forward map):  dx2 = g e^s,  dt = g,        ds = g x2 e^s + glogdet
//   backward (inverse map):  dy2 = g e^-s, dt = -g e^-s,  ds = -g x2 - glogdet   (x2 the output)
//
// Arithmetic in fp32 whatever the storage; the exponentials and tanh / sigmoid are those of
// conv/gated_activation.h (every exponential of a non-positive argument: no overflow, no
// cancellation in the tails). In the sigmoid form e^s = sigmoid(z) and e^-s = 1 + e^-z come from
// the same e = exp(-|z|), and log sigmoid(z) = -log1p(e) (z >= 0) or z - log1p(e). NaN in any
// input propagates to every output it reaches.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/dtype.h"
#include "common/macros.h"
#include "conv/gated_activation.h"
#include "flow/flow_args.h"

namespace gk {

enum CouplingMask : int { kChannelMask = 0, kCheckerboardMask = 1 };
// kAdditive is not a code the host passes: it is chosen when log_scale is absent.
enum CouplingForm : int { kTanhForm = 0, kSigmoidForm = 1, kAdditive = 2 };

// exp(x) for any x: gate_exp_nonpos's reduction holds for positive arguments too; above 104 the
// result is +inf anyway (the clamp keeps 2^n in range).
GK_HD float flow_exp(float x) { return gate_exp_nonpos(gate_select(x > 104.f, 104.f, x)); }

// s, the multiplier exp(+-s) of the map's direction and ds/draw for raw log-scale `raw`.
struct LogScale {
  float s, m, ds;
};

template <int Form, bool Inverse>
GK_HD LogScale bounded_log_scale(float raw, float scale) {
  if constexpr (Form == kTanhForm) {
    const float a = raw / scale, e = gate_exp_nonpos(-2.f * fabsf(a)), o = 1.f + e;
    const float s = scale * gate_tanh_from(a, e);
    return {s, flow_exp(Inverse ? -s : s), 4.f * e / (o * o)};
  } else {
    const float z = raw + 2.f, e = gate_exp_nonpos(-fabsf(z)), o = 1.f + e;
    const bool pos = z >= 0.f;
    const float l = log1pf(e);
    const float s = gate_select(pos, -l, z - l);
    const float m = Inverse ? o / gate_select(pos, 1.f, e) : gate_select(pos, 1.f, e) / o;
    return {s, m, gate_select(pos, e, 1.f) / o};
  }
}

// The transformed element of the map's output; s is set to the element's log-scale (0 additive).
template <int Form, bool Inverse>
GK_HD float coupling_value(float x, float t, float raw, float scale, float& s) {
  if constexpr (Form == kAdditive) {
    s = 0.f;
    return Inverse ? x - t : x + t;
  } else {
    const LogScale ls = bounded_log_scale<Form, Inverse>(raw, scale);
    s = ls.s;
    return Inverse ? (x - t) * ls.m : x * ls.m + t;
  }
}

// Gradients of one transformed element: g the output's gradient, gld the sample's logdet gradient.
template <int Form, bool Inverse>
GK_HD void coupling_grads(float x, float t, float raw, float scale, float g, float gld, float& gx, float& gt,
                          float& graw) {
  if constexpr (Form == kAdditive) {
    gx = g;
    gt = Inverse ? -g : g;
    graw = 0.f;
  } else {
    const LogScale ls = bounded_log_scale<Form, Inverse>(raw, scale);
    gx = g * ls.m;
    if (Inverse) {
      gt = -gx;
      graw = (-(g * ((x - t) * ls.m)) - gld) * ls.ds;
    } else {
      gt = g;
      graw = (g * x * ls.m + gld) * ls.ds;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Functors for the per-sample loops (common/per_sample_cpu.h, common/per_sample_cuda.cuh) over N
// samples of `count` elements: the half = (C / 2) * inner transformed elements j of the channel
// mask (x2 at n D + (1 - parity) half + j, x1 at n D + parity half + j, shift at n half + j,
// D = C * inner), or all D elements of the checkerboard mask (transformed where (h + w) % 2 !=
// parity, shift at x's index). The identity part is copied in the same pass.

struct CouplingLayout {
  int64_t D, half;
  int parity;
  double inv_H, inv_W;  // double: a float member would alias the float stores (no vectorised loop)
  int32_t H, W;
  template <class Args>
  explicit CouplingLayout(const Args& p)
      : D(p.C * p.inner), half(p.C / 2 * p.inner), parity(p.parity), inv_H(1.0 / static_cast<double>(p.H)),
        inv_W(1.0 / static_cast<double>(p.W)), H(static_cast<int32_t>(p.H)), W(static_cast<int32_t>(p.W)) {}
  template <int Mask>
  GK_HD int64_t count() const { return Mask == kChannelMask ? half : D; }
  // checkerboard: element j < 2^31 of a sample (c, h, w) belongs to the transformed part. The
  // quotients come from floating-point products, not integer division (which no SIMD unit has, so
  // one would keep the CPU loop scalar): (j + 1/2) / W lies at least 1/(2W) from an integer, and
  // the product's error is below that for j < 2^22 in fp32 (below 2^-21 j / W) and for any
  // j < 2^31 in fp64, so the truncation is the exact quotient either way.
  template <class F>
  GK_HD static int32_t quotient(int32_t j, F inv_d) {
    return static_cast<int32_t>((static_cast<F>(j) + F(0.5)) * inv_d);
  }
  GK_HD bool transformed(int64_t j) const {
    const int32_t j32 = static_cast<int32_t>(j);
    int32_t q, h;
    if (D < (int64_t(1) << 22)) {  // fp32 products vectorise with SSE2 (fp64 <-> int32 do not)
      q = quotient(j32, static_cast<float>(inv_W));
      h = q - quotient(q, static_cast<float>(inv_H)) * H;
    } else {
      q = quotient(j32, inv_W);
      h = q - quotient(q, inv_H) * H;
    }
    return ((h + j32 - q * W) & 1) != parity;
  }
};

// Per-(sample, chunk) constants, held in the loop's local state rather than read from the functor
// (a float member could alias the stores, which keeps the CPU loop scalar).
struct CouplingState {
  float scale, grad_logdet;
};

template <typename T, int Mask, int Form, bool Inverse>
struct AffineCouplingForward {
  const T *x, *shift, *log_scale;
  T* y;
  CouplingLayout L;
  double scale;
  explicit AffineCouplingForward(const ops::affine_coupling::Args& p)
      : x(as<const T>(p.x)), shift(as<const T>(p.shift)), log_scale(as<const T>(p.log_scale)), y(as<T>(p.y)),
        L(p), scale(p.scale) {}
  GK_HD CouplingState begin(int64_t) const { return {static_cast<float>(scale), 0.f}; }
  GK_HD float raw(int64_t i) const {
    if constexpr (Form == kAdditive) return 0.f;
    else return load(log_scale, i);
  }
  // Writes the element's output (and, channel mask, its identity twin); returns its log-scale.
  GK_HD float term(const CouplingState& st, int64_t n, int64_t j) const {
    float s;
    if constexpr (Mask == kChannelMask) {
      const int64_t base = n * L.D, id = base + L.parity * L.half + j, tr = base + (1 - L.parity) * L.half + j;
      const int64_t p = n * L.half + j;
      store(y, id, load(x, id));
      store(y, tr, coupling_value<Form, Inverse>(load(x, tr), load(shift, p), raw(p), st.scale, s));
      return s;
    } else {
      const int64_t i = n * L.D + j;
      const bool tr = L.transformed(j);
      const float xv = load(x, i);
      const float v = coupling_value<Form, Inverse>(xv, load(shift, i), raw(i), st.scale, s);
      store(y, i, gate_select(tr, v, xv));
      return gate_select(tr, s, 0.f);
    }
  }
  GK_HD void apply(const CouplingState& st, int64_t n, int64_t j) const { term(st, n, j); }
};

template <typename T, int Mask, int Form, bool Inverse>
struct AffineCouplingBackward {
  const T *grad_y, *x, *shift, *log_scale;
  const float* grad_logdet;
  T *grad_x, *grad_shift, *grad_log_scale;
  CouplingLayout L;
  double scale;
  explicit AffineCouplingBackward(const ops::affine_coupling_backward::Args& p)
      : grad_y(as<const T>(p.grad_y)), x(as<const T>(p.x)), shift(as<const T>(p.shift)),
        log_scale(as<const T>(p.log_scale)), grad_logdet(as<const float>(p.grad_logdet)), grad_x(as<T>(p.grad_x)),
        grad_shift(as<T>(p.grad_shift)), grad_log_scale(as<T>(p.grad_log_scale)), L(p),
        scale(p.scale) {}
  GK_HD CouplingState begin(int64_t n) const {
    return {static_cast<float>(scale), grad_logdet ? grad_logdet[n] : 0.f};
  }
  GK_HD float raw(int64_t i) const {
    if constexpr (Form == kAdditive) return 0.f;
    else return load(log_scale, i);
  }
  GK_HD void apply(const CouplingState& st, int64_t n, int64_t j) const {
    const float gld = st.grad_logdet;
    float gx, gt, gr;
    if constexpr (Mask == kChannelMask) {
      const int64_t base = n * L.D, id = base + L.parity * L.half + j, tr = base + (1 - L.parity) * L.half + j;
      const int64_t p = n * L.half + j;
      store(grad_x, id, load(grad_y, id));
      coupling_grads<Form, Inverse>(load(x, tr), load(shift, p), raw(p), st.scale, load(grad_y, tr), gld, gx, gt, gr);
      store(grad_x, tr, gx);
      store(grad_shift, p, gt);
      if constexpr (Form != kAdditive) store(grad_log_scale, p, gr);
    } else {
      const int64_t i = n * L.D + j;
      const bool tr = L.transformed(j);
      const float g = load(grad_y, i);
      coupling_grads<Form, Inverse>(load(x, i), load(shift, i), raw(i), st.scale, g, gld, gx, gt, gr);
      store(grad_x, i, gate_select(tr, gx, g));
      store(grad_shift, i, gate_select(tr, gt, 0.f));
      if constexpr (Form != kAdditive) store(grad_log_scale, i, gate_select(tr, gr, 0.f));
    }
  }
};

}  // namespace gk
