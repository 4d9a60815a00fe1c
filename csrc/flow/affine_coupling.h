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
// the same e = exp(-|z|), and log sigmoid(z) = -log1p(e) (z >= 0) or z - log1p(e) (log1p our own,
// flow_log1p_unit, so the loops vectorise). NaN in any
// input propagates to every output it reaches.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/dtype.h"
#include "common/macros.h"
#include "conv/gated_activation.h"
#include "flow/flow_args.h"

// Host builds force inlining: the CPU loops vectorise only with an element's whole math inlined,
// and in a translation unit with this many instantiations GCC's inliner stops short of that.
#if defined(__CUDACC__)
#define GK_FLOW_HD GK_HD
#else
#define GK_FLOW_HD __attribute__((always_inline)) inline
#endif

namespace gk {

enum CouplingMask : int { kChannelMask = 0, kCheckerboardMask = 1 };
// kAdditive is not a code the host passes: it is chosen when log_scale is absent.
enum CouplingForm : int { kTanhForm = 0, kSigmoidForm = 1, kAdditive = 2 };

// exp(x) for any x: gate_exp_nonpos's reduction holds for positive arguments too; above 104 the
// result is +inf anyway (the clamp keeps 2^n in range).
GK_FLOW_HD float flow_exp(float x) { return gate_exp_nonpos(gate_select(x > 104.f, 104.f, x)); }

// log(1 + e) for e in [0, 1], branch-free (libm's log1pf is a call, which keeps a CPU loop
// scalar): Cephes logf of u = 1 + e = 2^k f, f in [sqrt(1/2), sqrt(2)), with Goldberg's
// correction log(u) * e / (u - 1) for the rounding of 1 + e (exact for u = 1: e itself).
GK_FLOW_HD float flow_log1p_unit(float e) {
  const float u = 1.f + e;
  const bool big = u > 1.41421356f;
  const float k = gate_select(big, 1.f, 0.f);
  const float x = gate_select(big, 0.5f * u, u) - 1.f;  // exact (Sterbenz)
  const float z = x * x;
  float p = 7.0376836292e-2f;
  p = p * x - 1.1514610310e-1f;
  p = p * x + 1.1676998740e-1f;
  p = p * x - 1.2420140846e-1f;
  p = p * x + 1.4249322787e-1f;
  p = p * x - 1.6668057665e-1f;
  p = p * x + 2.0000714765e-1f;
  p = p * x - 2.4999993993e-1f;
  p = p * x + 3.3333331174e-1f;
  float y = p * x * z + k * -2.12194440e-4f - 0.5f * z;
  const float log_u = (x + y) + k * 0.693359375f;
  const float d = u - 1.f;
  return gate_select(d == 0.f, e, log_u * (e / gate_select(d == 0.f, 1.f, d)));
}

// s, the multiplier exp(+-s) of the map's direction and ds/draw for raw log-scale `raw`.
struct LogScale {
  float s, m, ds;
};

template <int Form, bool Inverse>
GK_FLOW_HD LogScale bounded_log_scale(float raw, float scale) {
  if constexpr (Form == kTanhForm) {
    const float a = raw / scale, e = gate_exp_nonpos(-2.f * fabsf(a)), o = 1.f + e;
    const float s = scale * gate_tanh_from(a, e);
    return {s, flow_exp(Inverse ? -s : s), 4.f * e / (o * o)};
  } else {
    const float z = raw + 2.f, e = gate_exp_nonpos(-fabsf(z)), o = 1.f + e;
    const bool pos = z >= 0.f;
    const float l = flow_log1p_unit(e);
    const float s = gate_select(pos, -l, z - l);
    const float m = Inverse ? o / gate_select(pos, 1.f, e) : gate_select(pos, 1.f, e) / o;
    return {s, m, gate_select(pos, e, 1.f) / o};
  }
}

// The transformed element of the map's output; s is set to the element's log-scale (0 additive).
template <int Form, bool Inverse>
GK_FLOW_HD float coupling_value(float x, float t, float raw, float scale, float& s) {
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
GK_FLOW_HD void coupling_grads(float x, float t, float raw, float scale, float g, float gld, float& gx, float& gt,
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

// Per-(sample, chunk) constants, held in the loop's local state rather than read from the functor
// (a float member could alias the float stores, which keeps the CPU loop scalar).
struct CouplingState {
  float scale, grad_logdet, inv_H, inv_W;
};

struct CouplingLayout {
  int64_t D, half;
  int32_t H, W, parity;
  template <class Args>
  explicit CouplingLayout(const Args& p)
      : D(p.C * p.inner), half(p.C / 2 * p.inner), H(static_cast<int32_t>(p.H)), W(static_cast<int32_t>(p.W)),
        parity(p.parity) {}
  template <int Mask>
  GK_FLOW_HD int64_t count() const { return Mask == kChannelMask ? half : D; }
  GK_FLOW_HD CouplingState state(double scale, float grad_logdet) const {
    return {static_cast<float>(scale), grad_logdet, 1.f / static_cast<float>(H), 1.f / static_cast<float>(W)};
  }
  // checkerboard: element j of a sample (c, h, w) belongs to the transformed part. The quotients
  // are fp32 estimates corrected by one step, not integer divisions (which no SIMD unit has, so
  // one would keep the CPU loop scalar): for a quotient below 2^22 (the host checks C * H < 2^22
  // and C * H * W < 2^31) the estimate is within 1 of the exact one.
  GK_FLOW_HD static int32_t divide(int32_t a, int32_t d, float inv_d, int32_t& remainder) {
    int32_t q = static_cast<int32_t>(static_cast<float>(a) * inv_d);
    int32_t r = a - q * d;
    q += static_cast<int32_t>(r >= d) - static_cast<int32_t>(r < 0);
    remainder = a - q * d;
    return q;
  }
  GK_FLOW_HD bool transformed(int64_t j, const CouplingState& st) const {
    int32_t w, h;
    const int32_t q = divide(static_cast<int32_t>(j), W, st.inv_W, w);
    divide(q, H, st.inv_H, h);
    return ((h + w) & 1) != parity;
  }
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
  GK_FLOW_HD CouplingState begin(int64_t) const { return L.state(scale, 0.f); }
  GK_FLOW_HD float raw(int64_t i) const {
    if constexpr (Form == kAdditive) return 0.f;
    else return load(log_scale, i);
  }
  // Writes the element's output (and, channel mask, its identity twin); returns its log-scale.
  GK_FLOW_HD float term(const CouplingState& st, int64_t n, int64_t j) const {
    float s;
    if constexpr (Mask == kChannelMask) {
      const int64_t base = n * L.D, id = base + L.parity * L.half + j, tr = base + (1 - L.parity) * L.half + j;
      const int64_t p = n * L.half + j;
      store(y, id, load(x, id));
      store(y, tr, coupling_value<Form, Inverse>(load(x, tr), load(shift, p), raw(p), st.scale, s));
      return s;
    } else {
      const int64_t i = n * L.D + j;
      const bool tr = L.transformed(j, st);
      const float xv = load(x, i);
      const float v = coupling_value<Form, Inverse>(xv, load(shift, i), raw(i), st.scale, s);
      store(y, i, gate_select(tr, v, xv));
      return gate_select(tr, s, 0.f);
    }
  }
  GK_FLOW_HD void apply(const CouplingState& st, int64_t n, int64_t j) const { term(st, n, j); }
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
  GK_FLOW_HD CouplingState begin(int64_t n) const {
    return L.state(scale, grad_logdet ? grad_logdet[n] : 0.f);
  }
  GK_FLOW_HD float raw(int64_t i) const {
    if constexpr (Form == kAdditive) return 0.f;
    else return load(log_scale, i);
  }
  GK_FLOW_HD void apply(const CouplingState& st, int64_t n, int64_t j) const {
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
      const bool tr = L.transformed(j, st);
      const float g = load(grad_y, i);
      coupling_grads<Form, Inverse>(load(x, i), load(shift, i), raw(i), st.scale, g, gld, gx, gt, gr);
      store(grad_x, i, gate_select(tr, gx, g));
      store(grad_shift, i, gate_select(tr, gt, 0.f));
      if constexpr (Form != kAdditive) store(grad_log_scale, i, gate_select(tr, gr, 0.f));
    }
  }
};

}  // namespace gk
