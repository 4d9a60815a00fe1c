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
//   y = y_k + h_k (s theta^2 + d_k T) / den,   log dy/dx = log(s^2 Q / den^2)
//   inverse: theta = 2c / (-b - sqrt(b^2 - 4ac)) (b >= 0 there, so nothing cancels), x = x_k + w_k theta
//
// Outside [-B, B] the identity (log-derivative 0, no parameter gradient); NaN inputs take that path
// too, with a NaN log-derivative, so y and the sample's logdet are NaN. Arithmetic in fp32 whatever
// the storage, except where fp32 would set the error: the softmax, the knots (x - x_k, y_k + ...)
// and the inverse's quadratic are in double, since a knot off by eps * B is multiplied by a steep
// bin's slope (with them the kernel is several times more accurate than torch's fp32 chain, which
// the 2x rule needs element by element). The softmax is max-subtracted and its backward uses
// prefix and suffix sums of the probabilities (1 - P(before) would cancel). The backward
// recomputes the bin from the input (nothing is stored between the passes).
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

// The softmax of one element's K unnormalised sizes, in double (see the top). Up to
// kRqCachedBins bins the exponentials are computed once and kept (registers / local memory).
constexpr int64_t kRqCachedBins = 16;

GK_HD double rq_exp_nonpos(double x) { return exp(x); }  // x = u_j - max, an exact double

struct RqSoftmax {
  double max, inv_sum, min_size, scale;  // size_j = min_size + scale * exp(u_j - max) * inv_sum
  double e[kRqCachedBins];               // exp(u_j - max) when K <= kRqCachedBins
  bool cached;

  template <typename T>
  GK_HD double prob(const T* u, int64_t j) const {
    return (cached ? e[j] : rq_exp_nonpos(load(u, j) - max)) * inv_sum;
  }
  template <typename T>
  GK_HD double size(const T* u, int64_t j) const { return min_size + scale * prob(u, j); }
};

template <typename T>
GK_HD RqSoftmax rq_softmax(const T* u, int64_t K, float min_size) {
  RqSoftmax sm;
  sm.cached = K <= kRqCachedBins;
  double m = load(u, 0);
  for (int64_t j = 1; j < K; ++j) {
    const double v = load(u, j);
    m = v > m ? v : m;  // a NaN is skipped here and comes back through exp(NaN - m)
  }
  double sum = 0.0;
  for (int64_t j = 0; j < K; ++j) {
    const double e = rq_exp_nonpos(load(u, j) - m);
    if (sm.cached) sm.e[j] = e;
    sum += e;
  }
  sm.max = m;
  sm.inv_sum = 1.0 / sum;
  sm.min_size = min_size;
  sm.scale = 1.0 - static_cast<double>(K) * min_size;
  return sm;
}

// One bin of one coordinate (x or y): its left knot and its size (right knot - left knot).
struct RqBin {
  double left;  // the knot in double: x - x_k and y_k + (y - y_k) are then exact up to one rounding
  float size;
};

// Bin containing v (-B <= v <= B) among the knots of u: sets k.
template <typename T>
GK_HD RqBin rq_search(const T* u, int64_t K, const RqSoftmax& sm, float B, float v, int64_t& k) {
  const double b = B;
  double cum = 0.0, left = -b, right = b;
  k = 0;
  for (int64_t j = 0; j < K; ++j) {
    const double knot = j == 0 ? -b : 2.0 * b * cum - b;
    cum += sm.size(u, j);
    if (knot <= v) {
      k = j;
      left = knot;
      right = j == K - 1 ? b : 2.0 * b * cum - b;
    }
  }
  return {left, static_cast<float>(right - left)};
}

// Bin k of the knots of u (same arithmetic as rq_search).
template <typename T>
GK_HD RqBin rq_bin(const T* u, int64_t K, const RqSoftmax& sm, float B, int64_t k) {
  const double b = B;
  double cum = 0.0;
  for (int64_t j = 0; j < k; ++j) cum += sm.size(u, j);
  const double left = k == 0 ? -b : 2.0 * b * cum - b;
  cum += sm.size(u, k);
  const double right = k == K - 1 ? b : 2.0 * b * cum - b;
  return {left, static_cast<float>(right - left)};
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

// log(s^2 Q / den^2) as log(s) + log1p(Q / s - 1) - 2 log1p(den / s - 1), with Q = s + (d_{k+1} - s) theta^2 +
// (d_k - s)(1 - theta)^2 and den = s + (d_k + d_{k+1} - 2s) T: exactly 0 where the bin is linear
// (d_k = d_{k+1} = s, e.g. K = 1), where log(s^2 Q) - 2 log(den) keeps an ulp of each log.
GK_HD float rq_log_derivative(const RqEval& e, float dk, float dk1) {
  const float om = 1.f - e.theta;
  const float q_rel = ((dk1 - e.s) * e.theta * e.theta + (dk - e.s) * om * om) / e.s;
  const float den_rel = 1.f + (dk + dk1 - 2.f * e.s) * e.t1t / e.s;
  return logf(e.s * ((1.f + q_rel) / (den_rel * den_rel)));
}

// theta of the inverse: the root in [0, 1] of a theta^2 + b theta + c = 0, dy = y - y_k. In double:
// theta's rounding would otherwise dominate the inverse's error (a handful of operations).
GK_HD float rq_inverse_theta(double dy, float w, float h, float dk, float dk1) {
  const double s = static_cast<double>(h) / w, slopes = dk + dk1 - 2.0 * s;
  const double a = dy * slopes + h * (s - dk);
  const double b = h * dk - dy * slopes;
  const double c = -s * dy;
  const double disc = fmax(b * b - 4.0 * a * c, 0.0);  // >= 0 in exact arithmetic
  return static_cast<float>((2.0 * c) / (-b - sqrt(disc)));
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
                              : static_cast<float>(v - r.bw.left) / r.bw.size;
  r.ev = rq_eval(theta, r.bw.size, r.bh.size, r.dk, r.dk1);
  r.out = static_cast<float>(inverse ? r.bw.left + static_cast<double>(r.bw.size * theta)
                                     : r.bh.left + static_cast<double>(r.ev.y_rel));
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
  for (int64_t j = 0; j < k; ++j) before += sm.prob(u, j);
  for (int64_t j = k + 1; j < K; ++j) after += sm.prob(u, j);
  const float pk = static_cast<float>(sm.prob(u, k));
  const float f = static_cast<float>(2.0 * B * sm.scale);
  // g_p_j = f (a [j < k] + c [j <= k]); sum_i p_i g_p_i = f (a before + c (before + pk))
  //   j < k:  g_u_j = f p_j (a (1 - before) + c (1 - before - pk)) = f p_j (a (pk + after) + c after)
  //   j = k:  g_u_j = f p_j (-a before + c (1 - before - pk))      = f p_j (-a before + c after)
  //   j > k:  g_u_j = f p_j (-a before - c (before + pk))
  const float lo = a * (pk + after) + c * after, mid = -a * before + c * after, hi = -a * before - c * (before + pk);
  for (int64_t j = 0; j < K; ++j) {
    const float coef = j < k ? lo : (j == k ? mid : hi);
    store(grad_u, j, f * static_cast<float>(sm.prob(u, j)) * coef);
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
    const float lad = rq_log_derivative(r.ev, r.dk, r.dk1);
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
