// ActNorm of Glow (Kingma & Dhariwal 2018, table 1), written once for the C++ CPU kernels and the
// CUDA kernels, per channel c of x (N, C, inner):
//
//   forward   y = (x + b) * exp(ls)          dx = g e^ls    db = sum g e^ls     dls = sum g y
//   inverse   y = x * exp(-ls) - b           dx = g e^-ls   db = -sum g         dls = -sum g x e^-ls
//
// (the log-determinant +-inner * sum(ls) and its gradient are the host's: one number per call).
// Arithmetic in fp32 whatever the storage; the per-channel sums are deterministic chunked
// reductions (no atomics). NaN propagates.
#pragma once
#include <cstdint>

#include "common/dtype.h"
#include "common/macros.h"
#include "flow/affine_coupling.h"
#include "flow/flow_args.h"

namespace gk {

// Rows of at least this many elements take the row loops (per-row constants, vectorised inner loop).
constexpr int64_t kActNormRowMin = 16;

struct ActNormChannel {
  float b, e;  // bias and exp(+-log_scale) of the row's channel
};

template <typename T, bool Inverse>
GK_FLOW_HD ActNormChannel actnorm_channel(const T* bias, const T* log_scale, int64_t c) {
  const float ls = load(log_scale, c);
  return {load(bias, c), flow_exp(Inverse ? -ls : ls)};
}

template <bool Inverse>
GK_FLOW_HD float actnorm_value(float x, const ActNormChannel& ch) {
  return Inverse ? x * ch.e - ch.b : (x + ch.b) * ch.e;
}

// Forward over N * C rows of `inner` elements (row r is channel r % C).
template <typename T, bool Inverse>
struct ActNormForwardRows {
  const T *x, *bias, *log_scale;
  T* y;
  int64_t C, inner;
  explicit ActNormForwardRows(const ops::actnorm::Args& p)
      : x(as<const T>(p.x)), bias(as<const T>(p.bias)), log_scale(as<const T>(p.log_scale)), y(as<T>(p.y)), C(p.C),
        inner(p.inner) {}
  GK_FLOW_HD ActNormChannel begin(int64_t r) const { return actnorm_channel<T, Inverse>(bias, log_scale, r % C); }
  GK_FLOW_HD void apply(const ActNormChannel& ch, int64_t r, int64_t i) const {
    const int64_t k = r * inner + i;
    store(y, k, actnorm_value<Inverse>(load(x, k), ch));
  }
};

// Forward over N rows of C * inner elements (short rows, e.g. (N, D) vectors).
template <typename T, bool Inverse>
struct ActNormForward {
  const T *x, *bias, *log_scale;
  T* y;
  int64_t C, inner;
  explicit ActNormForward(const ops::actnorm::Args& p)
      : x(as<const T>(p.x)), bias(as<const T>(p.bias)), log_scale(as<const T>(p.log_scale)), y(as<T>(p.y)), C(p.C),
        inner(p.inner) {}
  GK_FLOW_HD int64_t begin(int64_t n) const { return n * C * inner; }
  GK_FLOW_HD void apply(int64_t base, int64_t, int64_t i) const {
    const ActNormChannel ch = actnorm_channel<T, Inverse>(bias, log_scale, i / inner);
    store(y, base + i, actnorm_value<Inverse>(load(x, base + i), ch));
  }
};

// Backward: a reduction over C rows (one per channel c) of N * inner elements j = (n, i), run
// twice: H = 0 stores grad_x and sums the bias gradient, H = 1 sums the log-scale gradient (two
// launches with no branch inside, so each CPU loop vectorises; each element is visited twice and
// the sums take the fp32 terms, not their rounding to the storage dtype). Partials: rows (H, c).
template <bool Inverse, int H>
GK_FLOW_HD float actnorm_backward_term(float g, float xv, const ActNormChannel& ch) {
  if constexpr (H == 0) return Inverse ? -g : g * ch.e;
  else return Inverse ? -(g * (xv * ch.e)) : g * ((xv + ch.b) * ch.e);
}

template <typename T, bool Inverse, int H>
struct ActNormBackward {
  const T *grad_y, *x, *bias, *log_scale;
  T* grad_x;
  int64_t C, inner;
  explicit ActNormBackward(const ops::actnorm_backward::Args& p)
      : grad_y(as<const T>(p.grad_y)), x(as<const T>(p.x)), bias(as<const T>(p.bias)),
        log_scale(as<const T>(p.log_scale)), grad_x(as<T>(p.grad_x)), C(p.C), inner(p.inner) {}
  struct Row {
    int64_t c;
    ActNormChannel ch;
  };
  GK_FLOW_HD Row begin(int64_t c) const { return {c, actnorm_channel<T, Inverse>(bias, log_scale, c)}; }
  GK_FLOW_HD float term(const Row& row, int64_t, int64_t j) const {
    const int64_t n = j / inner, k = (n * C + row.c) * inner + (j - n * inner);
    const float g = load(grad_y, k);
    if constexpr (H == 0) {
      store(grad_x, k, g * row.ch.e);
      return actnorm_backward_term<Inverse, 0>(g, 0.f, row.ch);
    } else {
      return actnorm_backward_term<Inverse, 1>(g, load(x, k), row.ch);
    }
  }
};

// Long rows (inner >= kActNormBackwardRowMin, e.g. images): the same two reductions over C N rows
// r = (c, n) of `inner` contiguous elements, without the per-element division of the flat form;
// the host adds the (n, chunk) partials of each (H, c) in order. partials: float32
// (2, C, N, num_chunks(inner)).
constexpr int64_t kActNormBackwardRowMin = 1024;
GK_FLOW_HD bool actnorm_backward_rows(int64_t inner) { return inner >= kActNormBackwardRowMin; }

struct ActNormRowState {
  int64_t base;  // offset of the row's first element
  ActNormChannel ch;
};

template <typename T, bool Inverse, int H>
struct ActNormBackwardRows {
  const T *grad_y, *x, *bias, *log_scale;
  T* grad_x;
  int64_t C, N, inner;
  explicit ActNormBackwardRows(const ops::actnorm_backward::Args& p)
      : grad_y(as<const T>(p.grad_y)), x(as<const T>(p.x)), bias(as<const T>(p.bias)),
        log_scale(as<const T>(p.log_scale)), grad_x(as<T>(p.grad_x)), C(p.C), N(p.N), inner(p.inner) {}
  GK_FLOW_HD ActNormRowState begin(int64_t r) const {
    const int64_t c = r / N, n = r - c * N;
    return {(n * C + c) * inner, actnorm_channel<T, Inverse>(bias, log_scale, c)};
  }
  GK_FLOW_HD float term(const ActNormRowState& row, int64_t, int64_t i) const {
    const int64_t k = row.base + i;
    const float g = load(grad_y, k);
    if constexpr (H == 0) {
      store(grad_x, k, g * row.ch.e);
      return actnorm_backward_term<Inverse, 0>(g, 0.f, row.ch);
    } else {
      return actnorm_backward_term<Inverse, 1>(g, load(x, k), row.ch);
    }
  }
};

}  // namespace gk
