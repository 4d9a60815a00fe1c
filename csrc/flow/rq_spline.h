// Monotonic rational-quadratic spline with linear tails (Durkan et al. 2019, "Neural Spline Flows",
// sec. 3.1 and appendix A; nflows' unconstrained_rational_quadratic_spline), written once for the
// C++ CPU kernels and the CUDA kernels. Per element, from K unnormalised widths u^w, K heights u^h
// and K - 1 interior derivatives u^d:
//
//   size_j = min + (1 - K min) softmax(u)_j,  knot_0 = -B, knot_j = 2B sum_{i<j} size_i - B, knot_K = B
//   d_0 = d_K = 1, d_j = min_derivative + softplus(u^d_{j-1})
//   bin k = number of interior knots <= the input (x forward, y inverse): a knot belongs to the bin
//   on its right, +B to the last bin; zero-width bins (min = 0) are skipped
//   theta = (x - x_k) / w_k, T = theta (1 - theta), s = h_k / w_k
//   den = s + (d_k + d_{k+1} - 2s) T,  Q = d_{k+1} theta^2 + 2s T + d_k (1 - theta)^2
//   y = y_k + h_k (s theta^2 + d_k T) / den,   log dy/dx = log(s^2 Q) - 2 log(den)
//   inverse: theta = 2c / (-b - sqrt(b^2 - 4ac)) (b >= 0 there, so nothing cancels), x = x_k + w_k theta
//
// Outside [-B, B] the identity (log-derivative 0, no parameter gradient); NaN inputs take that path
// too, with a NaN log-derivative, so y and the sample's logdet are NaN. Arithmetic in fp32 whatever
// the storage; the softmax is max-subtracted and its backward uses prefix and suffix sums of the
// probabilities (1 - P(before) would cancel). The backward recomputes the bin from the input.
//
// Gradients of L = g_y y + g_l log|dy/dx| (inverse: g_x x + g_l log|dx/dy|) with respect to the
// bin's (input, x_k, w_k, y_k, h_k, d_k, d_{k+1}), from the closed forms (s, theta independent):
//   dy/dtheta = h s Q / den^2        dy/ds = h T (d_{k+1} theta^2 - d_k (1 - theta)^2) / den^2
//   dy/dd_k = h T (1 - theta)(s (1 - theta) + d_{k+1} theta) / den^2      dy/dd_{k+1} = -h T N / den^2
//   dy/dh = N / den (N = s theta^2 + d_k T);  lad = log(s^2 Q) - 2 log den differentiated directly;
// the inverse through the implicit function theta(y): dtheta/dp = -(dy/dp) / (dy/dtheta). Then
// s = h / w and theta's x_k, w_k, chained to the knots, the sizes and the softmax.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/dtype.h"
#include "common/macros.h"
#include "flow/flow_args.h"

namespace gk {

// The softmax of one element's K unnormalised sizes, as max and 1 / sum, and the bin sizes' affine map.
struct RqSoftmax {
  float max, inv_sum, min_size, scale;  // size_j = min_size + scale * exp(u_j - max) * inv_sum
};

template <typename T>
GK_HD RqSoftmax rq_softmax(const T* u, int64_t K, float min_size) {
  float m = load(u, 0);
  for (int64_t j = 1; j < K; ++j) m = fmaxf(m, load(u, j));  // fmaxf drops NaN: it comes back below
  float sum = 0.f;
  for (int64_t j = 0; j < K; ++j) sum += expf(load(u, j) - m);
  return {m, 1.f / sum, min_size, 1.f - static_cast<float>(K) * min_size};
}

template <typename T>
GK_HD float rq_prob(const T* u, int64_t j, const RqSoftmax& sm) { return expf(load(u, j) - sm.max) * sm.inv_sum; }

// One bin of one coordinate (x or y): its left knot and its size (right knot - left knot).
struct RqBin {
  float left, size;
};

// Bin containing v (-B <= v <= B) among the knots of u: sets k.
template <typename T>
GK_HD RqBin rq_search(const T* u, int64_t K, const RqSoftmax& sm, float B, float v, int64_t& k) {
  float cum = 0.f, left = -B, right = B;
  k = 0;
  for (int64_t j = 0; j < K; ++j) {
    const float knot = j == 0 ? -B : 2.f * B * cum - B;
    cum += sm.min_size + sm.scale * rq_prob(u, j, sm);
    if (knot <= v) {
      k = j;
      left = knot;
      right = j == K - 1 ? B : 2.f * B * cum - B;
    }
  }
  return {left, right - left};
}

// Bin k of the knots of u (same arithmetic as rq_search).
template <typename T>
GK_HD RqBin rq_bin(const T* u, int64_t K, const RqSoftmax& sm, float B, int64_t k) {
  float cum = 0.f;
  for (int64_t j = 0; j < k; ++j) cum += sm.min_size + sm.scale * rq_prob(u, j, sm);
  const float left = k == 0 ? -B : 2.f * B * cum - B;
  cum += sm.min_size + sm.scale * rq_prob(u, k, sm);
  const float right = k == K - 1 ? B : 2.f * B * cum - B;
  return {left, right - left};
}

GK_HD float rq_softplus(float u) { return fmaxf(u, 0.f) + log1pf(expf(-fabsf(u))); }
GK_HD float rq_sigmoid(float u) {
  const float e = expf(-fabsf(u));
  return (u >= 0.f ? 1.f : e) / (1.f + e);
}

// Knot derivatives d_k, d_{k+1} of bin k (the boundary ones are 1).
template <typename T>
GK_HD void rq_derivatives(const T* ud, int64_t K, int64_t k, float min_derivative, float& dk, float& dk1) {
  dk = k == 0 ? 1.f : min_derivative + rq_softplus(load(ud, k - 1));
  dk1 = k == K - 1 ? 1.f : min_derivative + rq_softplus(load(ud, k));
}

// The spline of one bin at theta, and its log-derivative.
struct RqEval {
  float theta, t1t, s, den, q, y_rel;  // y_rel = y - y_k
};

GK_HD RqEval rq_eval(float theta, float w, float h, float dk, float dk1) {
  RqEval e;
  e.theta = theta;
  e.t1t = theta * (1.f - theta);
  e.s = h / w;
  e.den = e.s + (dk + dk1 - 2.f * e.s) * e.t1t;
  const float om = 1.f - theta;
  e.q = dk1 * theta * theta + 2.f * e.s * e.t1t + dk * om * om;
  e.y_rel = h * (e.s * theta * theta + dk * e.t1t) / e.den;
  return e;
}

GK_HD float rq_log_derivative(const RqEval& e) { return logf(e.s * e.s * e.q) - 2.f * logf(e.den); }

// theta of the inverse: the root in [0, 1] of a theta^2 + b theta + c = 0, dy = y - y_k.
GK_HD float rq_inverse_theta(float dy, float w, float h, float dk, float dk1) {
  const float s = h / w, slopes = dk + dk1 - 2.f * s;
  const float a = dy * slopes + h * (s - dk);
  const float b = h * dk - dy * slopes;
  const float c = -s * dy;
  const float disc = fmaxf(b * b - 4.f * a * c, 0.f);  // >= 0 in exact arithmetic
  return (2.f * c) / (-b - sqrtf(disc));
}

// Everything one element's forward or backward needs: the input's bin in both coordinates.
struct RqElement {
  int64_t k;
  RqSoftmax smw, smh;
  RqBin bw, bh;  // the bin in x (widths) and in y (heights)
  float dk, dk1;
  RqEval ev;
  float out;     // y (forward) or x (inverse)
};

template <typename T>
GK_HD RqElement rq_element(float v, const T* uw, const T* uh, const T* ud, int64_t K, float B, float min_w,
                           float min_h, float min_d, bool inverse) {
  RqElement r;
  r.smw = rq_softmax(uw, K, min_w);
  r.smh = rq_softmax(uh, K, min_h);
  if (inverse) {
    r.bh = rq_search(uh, K, r.smh, B, v, r.k);
    r.bw = rq_bin(uw, K, r.smw, B, r.k);
  } else {
    r.bw = rq_search(uw, K, r.smw, B, v, r.k);
    r.bh = rq_bin(uh, K, r.smh, B, r.k);
  }
  rq_derivatives(ud, K, r.k, min_d, r.dk, r.dk1);
  const float theta = inverse ? rq_inverse_theta(v - r.bh.left, r.bw.size, r.bh.size, r.dk, r.dk1)
                              : (v - r.bw.left) / r.bw.size;
  r.ev = rq_eval(theta, r.bw.size, r.bh.size, r.dk, r.dk1);
  r.out = inverse ? r.bw.left + r.bw.size * theta : r.bh.left + r.ev.y_rel;
  return r;
}

GK_HD bool rq_inside(float v, float B) { return v >= -B && v <= B; }  // false for NaN

// Gradients of the softmax-parameterised knots: G_left, G_right are the gradients of bin k's left
// and right knots; writes the gradient of each of the K unnormalised sizes u_j:
//   dknot_i / dsize_j = 2B [j < i] for interior knots i, dsize_j / dp_j = scale, softmax backward
//   g_u_j = p_j (g_p_j - sum_i p_i g_p_i) with sum_i p_i g_p_i from prefix / suffix sums.
template <typename T>
GK_HD void rq_knot_grads(const T* u, T* grad_u, int64_t K, const RqSoftmax& sm, float B, int64_t k, float g_left,
                         float g_right) {
  const float a = k >= 1 ? g_left : 0.f;           // knot k interior
  const float c = k + 1 <= K - 1 ? g_right : 0.f;  // knot k + 1 interior
  float before = 0.f, after = 0.f;                 // P(j < k), P(j > k)
  for (int64_t j = 0; j < k; ++j) before += rq_prob(u, j, sm);
  for (int64_t j = k + 1; j < K; ++j) after += rq_prob(u, j, sm);
  const float pk = rq_prob(u, k, sm);
  const float f = 2.f * B * sm.scale;
  // g_p_j = f (a [j < k] + c [j <= k]); sum_i p_i g_p_i = f (a before + c (before + pk))
  //   j < k:  g_u_j = f p_j (a (1 - before) + c (1 - before - pk)) = f p_j (a (pk + after) + c after)
  //   j = k:  g_u_j = f p_j (-a before + c (1 - before - pk))      = f p_j (-a before + c after)
  //   j > k:  g_u_j = f p_j (-a before - c (before + pk))
  const float lo = a * (pk + after) + c * after, mid = -a * before + c * after, hi = -a * before - c * (before + pk);
  for (int64_t j = 0; j < K; ++j) {
    const float coef = j < k ? lo : (j == k ? mid : hi);
    store(grad_u, j, f * rq_prob(u, j, sm) * coef);
  }
}

// ---------------------------------------------------------------------------------------------
// Functors for the per-sample loops (common/per_sample_cpu.h, common/per_sample_cuda.cuh), built from
// their op's Args (flow_args.h). Element e = n * D + i: input e, parameters at e * K (widths,
// heights) and e * (K - 1) (derivatives).

template <typename T>
struct RqSplineForward {  // a reduction: stores the output, returns the log-derivative
  const T *x, *widths, *heights, *derivatives;
  T* y;
  int64_t D, K;
  float B, min_w, min_h, min_d;
  bool inverse;
  explicit RqSplineForward(const ops::rq_spline::Args& p)
      : x(as<const T>(p.x)), widths(as<const T>(p.widths)), heights(as<const T>(p.heights)),
        derivatives(as<const T>(p.derivatives)), y(as<T>(p.y)), D(p.D), K(p.K), B(static_cast<float>(p.tail_bound)),
        min_w(static_cast<float>(p.min_bin_width)), min_h(static_cast<float>(p.min_bin_height)),
        min_d(static_cast<float>(p.min_derivative)), inverse(p.inverse) {}
  GK_HD int64_t begin(int64_t n) const { return n * D; }
  GK_HD float term(int64_t base, int64_t, int64_t i) const {
    const int64_t e = base + i;
    const float v = load(x, e);
    if (!rq_inside(v, B)) {
      store(y, e, v);
      return v != v ? v : 0.f;  // NaN: the sample's logdet is NaN
    }
    const RqElement r = rq_element(v, widths + e * K, heights + e * K, derivatives + e * (K - 1), K, B, min_w, min_h,
                                   min_d, inverse);
    store(y, e, r.out);
    const float lad = rq_log_derivative(r.ev);
    return inverse ? -lad : lad;
  }
};

struct RqSampleState {
  int64_t base;  // n * D
  float g_logdet;
};

template <typename T>
struct RqSplineBackward {
  const T *grad_y, *x, *widths, *heights, *derivatives;
  const float* grad_logdet;
  T *grad_x, *grad_widths, *grad_heights, *grad_derivatives;
  int64_t D, K;
  float B, min_w, min_h, min_d;
  bool inverse;
  explicit RqSplineBackward(const ops::rq_spline_backward::Args& p)
      : grad_y(as<const T>(p.grad_y)), x(as<const T>(p.x)), widths(as<const T>(p.widths)),
        heights(as<const T>(p.heights)), derivatives(as<const T>(p.derivatives)),
        grad_logdet(as<const float>(p.grad_logdet)), grad_x(as<T>(p.grad_x)), grad_widths(as<T>(p.grad_widths)),
        grad_heights(as<T>(p.grad_heights)), grad_derivatives(as<T>(p.grad_derivatives)), D(p.D), K(p.K),
        B(static_cast<float>(p.tail_bound)), min_w(static_cast<float>(p.min_bin_width)),
        min_h(static_cast<float>(p.min_bin_height)), min_d(static_cast<float>(p.min_derivative)),
        inverse(p.inverse) {}
  GK_HD RqSampleState begin(int64_t n) const { return {n * D, grad_logdet ? grad_logdet[n] : 0.f}; }
  GK_HD void apply(const RqSampleState& st, int64_t, int64_t i) const {
    const int64_t e = st.base + i;
    const float v = load(x, e), gy = grad_y ? load(grad_y, e) : 0.f, gl = st.g_logdet;
    const T *uw = widths + e * K, *uh = heights + e * K, *ud = derivatives + e * (K - 1);
    T *guw = grad_widths + e * K, *guh = grad_heights + e * K, *gud = grad_derivatives + e * (K - 1);
    if (!rq_inside(v, B)) {  // identity: no parameter gradient
      store(grad_x, e, gy);
      for (int64_t j = 0; j < K; ++j) {
        store(guw, j, 0.f);
        store(guh, j, 0.f);
      }
      for (int64_t j = 0; j + 1 < K; ++j) store(gud, j, 0.f);
      return;
    }
    const RqElement r = rq_element(v, uw, uh, ud, K, B, min_w, min_h, min_d, inverse);
    const RqEval& ev = r.ev;
    const float w = r.bw.size, h = r.bh.size, s = ev.s, theta = ev.theta, om = 1.f - theta, t1t = ev.t1t;
    const float dk = r.dk, dk1 = r.dk1, den = ev.den, q = ev.q, den2 = den * den;
    // partial derivatives of y (at fixed theta, s, h) and of lad = log(s^2 Q) - 2 log den
    const float numer = s * theta * theta + dk * t1t;
    const float y_theta = h * s * q / den2;
    const float y_s = h * t1t * (dk1 * theta * theta - dk * om * om) / den2;
    const float y_dk = h * t1t * om * (s * om + dk1 * theta) / den2;
    const float y_dk1 = -h * t1t * numer / den2;
    const float y_h = numer / den;
    const float slopes = dk + dk1 - 2.f * s;
    const float l_theta = 2.f * (dk1 * theta + s * (1.f - 2.f * theta) - dk * om) / q
                          - 2.f * slopes * (1.f - 2.f * theta) / den;
    const float l_s = 2.f / s + 2.f * t1t / q - 2.f * (1.f - 2.f * t1t) / den;
    const float l_dk = om * om / q - 2.f * t1t / den;
    const float l_dk1 = theta * theta / q - 2.f * t1t / den;
    float g_in, g_xk, g_w, g_yk, g_h, g_s, g_dk, g_dk1;
    if (!inverse) {  // L = gy y + gl lad
      const float g_theta = gy * y_theta + gl * l_theta;
      g_s = gy * y_s + gl * l_s;
      g_dk = gy * y_dk + gl * l_dk;
      g_dk1 = gy * y_dk1 + gl * l_dk1;
      g_in = g_theta / w;
      g_xk = -g_in;
      g_w = -g_in * theta;
      g_yk = gy;
      g_h = gy * y_h;
    } else {  // L = gx (x_k + w theta) - gl lad, theta implicit in y = y_k + y_rel(theta, ...)
      const float g_theta = gy * w - gl * l_theta;
      const float qy = g_theta / y_theta;  // dL/dy through theta
      g_s = -gl * l_s - qy * y_s;
      g_dk = -gl * l_dk - qy * y_dk;
      g_dk1 = -gl * l_dk1 - qy * y_dk1;
      g_in = qy;
      g_yk = -qy;
      g_h = -qy * y_h;
      g_xk = gy;
      g_w = gy * theta;
    }
    // s = h / w
    g_h += g_s / w;
    g_w -= g_s * s / w;
    store(grad_x, e, g_in);
    // left knot = x_k, right knot = x_k + w
    rq_knot_grads(uw, guw, K, r.smw, B, r.k, g_xk - g_w, g_w);
    rq_knot_grads(uh, guh, K, r.smh, B, r.k, g_yk - g_h, g_h);
    for (int64_t j = 0; j + 1 < K; ++j) store(gud, j, 0.f);
    if (r.k >= 1) store(gud, r.k - 1, g_dk * rq_sigmoid(load(ud, r.k - 1)));
    if (r.k + 1 <= K - 1) store(gud, r.k, g_dk1 * rq_sigmoid(load(ud, r.k)));
  }
};

}  // namespace gk
