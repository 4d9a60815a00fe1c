// The pointwise part of an LSTM step (Hochreiter & Schmidhuber 1997; torch.nn.LSTM's gate order
// i, f, g, o) and of the LayerNorm-LSTM (Ba, Kiros & Hinton 2016, "Layer normalization", sec. 3.1),
// written once for the C++ CPU kernels and the CUDA kernels:
//
//   i = sigmoid(a_i)  f = sigmoid(a_f)  g = tanh(a_g)  o = sigmoid(a_o)
//   c = f c_prev + i g                   h = o tanh(c)                (plain)
//   a = gates_x + LN(gates_h) w_h        h = o tanh(LN(c) w_c + b_c)  (LayerNorm: LN over the 4H
//                                                                      gates and over the H cells)
// backward (dh, dc the gradients of h and c; plain: cn = c, w_c = 1):
//   do = dh tanh(cn)   dcn = dh o (1 - tanh^2 cn)   dc_total = dc + dcn (LN: + through LN(c))
//   di = dc_total g    df = dc_total c_prev   dg = dc_total i   dc_prev = dc_total f
//   times sigmoid' = s (1 - s) or tanh' = 1 - t^2 for the pre-activation gradients.
// The backward recomputes the activations from the saved pre-activations (the forward saves
// nothing beyond its inputs). Arithmetic in fp32 whatever the storage; sigmoid / tanh are those of
// conv/gated_activation.h (branch-free, no overflow). NaN in any input propagates.
//
// Each functor processes one batch row b in `row(r, b)` through a row context r with
//   r.each(n, f)  f(j) for j < n (CPU: a loop; CUDA: the block's threads, then a barrier)
//   r.sum(n, f)   sum of f(j) over j < n in a fixed order (deterministic on each device)
//   r.scratch     kScratch * H fp32 values of this row (CPU: per thread; CUDA: shared memory)
// Recurrent dropout: keep(b, j) = uniform24(Philox at (seed, offset, b, j)) >= p, the layout of
// common/philox.h (element j = lane j % 4 of group j / 4, key hi ^ b), scaled by 1 / (1 - p). It
// does not depend on the time step, so a sequence drops the same units at every step.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/dtype.h"
#include "common/macros.h"
#include "common/philox.h"
#include "conv/gated_activation.h"
#include "lstm/lstm_args.h"

#if defined(__CUDACC__)
#define GK_LSTM_HD __host__ __device__ __forceinline__
#else
#define GK_LSTM_HD __attribute__((always_inline)) inline
#endif

namespace gk {

GK_LSTM_HD float lstm_keep_scale(uint64_t seed, uint64_t offset, int64_t b, int64_t j, float p, float inv_keep) {
  const uint64_t group = static_cast<uint64_t>(j) >> 2;
  const Uint4 r = philox4x32_10(
      Uint4{static_cast<uint32_t>(group), static_cast<uint32_t>(group >> 32), static_cast<uint32_t>(offset),
            static_cast<uint32_t>(offset >> 32)},
      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32) ^ static_cast<uint32_t>(b));
  const int lane = static_cast<int>(j & 3);
  const uint32_t bits = lane == 0 ? r.x : lane == 1 ? r.y : lane == 2 ? r.z : r.w;
  return uniform24(bits) >= p ? inv_keep : 0.f;
}

struct LstmActs {
  float i, f, g, o;
};

GK_LSTM_HD LstmActs lstm_acts(float ai, float af, float ag, float ao) {
  return {gate_sigmoid(ai), gate_sigmoid(af), gate_tanh(ag), gate_sigmoid(ao)};
}

// An activation and its derivative, the derivative from the same e = exp(-|x|) (sigmoid:
// e / (1 + e)^2) or exp(-2|x|) (tanh: 4 e / (1 + e)^2): no cancellation where s(1 - s) or 1 - t^2
// would lose the digits of a saturated gate.
struct LstmAct {
  float v, d;
};

GK_LSTM_HD LstmAct lstm_sigmoid_d(float x) {
  const float e = gate_exp_nonpos(-fabsf(x)), o = 1.f + e;
  return {gate_sigmoid_from(x, e), e / (o * o)};
}

GK_LSTM_HD LstmAct lstm_tanh_d(float x) {
  const float e = gate_exp_nonpos(-2.f * fabsf(x)), o = 1.f + e;
  return {gate_tanh_from(x, e), 4.f * e / (o * o)};
}

struct LstmDrop {
  uint64_t seed, offset;
  float p, inv_keep;
  template <class Args>
  explicit LstmDrop(const Args& a)
      : seed(a.seed), offset(a.offset), p(static_cast<float>(a.p)),
        inv_keep(a.p < 1.0 ? static_cast<float>(1.0 / (1.0 - a.p)) : 0.f) {}
  GK_LSTM_HD float at(int64_t b, int64_t j) const { return lstm_keep_scale(seed, offset, b, j, p, inv_keep); }
};

// ---- plain cell -------------------------------------------------------------------------------
template <typename T, bool Drop>
struct LstmCellForward {
  static constexpr int kScratch = 0;
  const T *gates, *c_prev;
  T *h, *c, *h_rec;
  int64_t H;
  LstmDrop drop;
  explicit LstmCellForward(const ops::lstm_cell::Args& a)
      : gates(as<const T>(a.gates)), c_prev(as<const T>(a.c_prev)), h(as<T>(a.h)), c(as<T>(a.c)),
        h_rec(as<T>(a.h_rec)), H(a.H), drop(a) {}
  template <class Row>
  GK_LSTM_HD void row(const Row& r, int64_t b) const {
    const int64_t gb = b * 4 * H, hb = b * H, n = H;
    r.each(n, [&](int64_t j) {
      const LstmActs a = lstm_acts(load(gates, gb + j), load(gates, gb + n + j), load(gates, gb + 2 * n + j),
                                   load(gates, gb + 3 * n + j));
      const float cv = a.f * load(c_prev, hb + j) + a.i * a.g;
      const float hv = a.o * gate_tanh(cv);
      store(c, hb + j, cv);
      store(h, hb + j, hv);
      if constexpr (Drop) store(h_rec, hb + j, hv * drop.at(b, j));
    });
  }
};

template <typename T, bool Drop>
struct LstmCellBackward {
  static constexpr int kScratch = 0;
  const T *grad_h, *grad_h_rec, *grad_c, *gates, *c_prev;
  T *grad_gates, *grad_c_prev;
  int64_t H;
  LstmDrop drop;
  explicit LstmCellBackward(const ops::lstm_cell_backward::Args& a)
      : grad_h(as<const T>(a.grad_h)), grad_h_rec(as<const T>(a.grad_h_rec)), grad_c(as<const T>(a.grad_c)),
        gates(as<const T>(a.gates)), c_prev(as<const T>(a.c_prev)), grad_gates(as<T>(a.grad_gates)),
        grad_c_prev(as<T>(a.grad_c_prev)), H(a.H), drop(a) {}
  template <class Row>
  GK_LSTM_HD void row(const Row& r, int64_t b) const {
    const int64_t gb = b * 4 * H, hb = b * H, n = H;
    r.each(n, [&](int64_t j) {
      const LstmAct i = lstm_sigmoid_d(load(gates, gb + j)), f = lstm_sigmoid_d(load(gates, gb + n + j));
      const LstmAct g = lstm_tanh_d(load(gates, gb + 2 * n + j)), o = lstm_sigmoid_d(load(gates, gb + 3 * n + j));
      const float cp = load(c_prev, hb + j);
      const LstmAct tc = lstm_tanh_d(f.v * cp + i.v * g.v);
      float dh = load(grad_h, hb + j);
      if constexpr (Drop) dh += load(grad_h_rec, hb + j) * drop.at(b, j);
      const float dct = load(grad_c, hb + j) + dh * o.v * tc.d;
      store(grad_gates, gb + j, dct * g.v * i.d);
      store(grad_gates, gb + n + j, dct * cp * f.d);
      store(grad_gates, gb + 2 * n + j, dct * i.v * g.d);
      store(grad_gates, gb + 3 * n + j, dh * tc.v * o.d);
      store(grad_c_prev, hb + j, dct * f.v);
    });
  }
};

// ---- LayerNorm cell -----------------------------------------------------------------------------
// mean and 1 / sqrt(var + eps) of n values f(j) (two passes; the mean divided, not multiplied by a
// rounded 1 / n)
template <class Row, class F>
GK_LSTM_HD void lstm_row_stats(const Row& r, int64_t n, float eps, const F& f, float& mean, float& rstd) {
  const float count = static_cast<float>(n);
  const float m = r.sum(n, f) / count;
  const float var = r.sum(n, [&](int64_t j) {
    const float d = f(j) - m;
    return d * d;
  }) / count;
  mean = m;
  rstd = 1.f / sqrtf(var + eps);
}

template <typename T, bool Drop>
struct LnLstmCellForward {
  static constexpr int kScratch = 2;  // c and o of each unit
  const T *gates_x, *gates_h, *c_prev, *weight_h, *weight_c, *bias_c;
  T *h, *c, *h_rec;
  int64_t H;
  float eps;
  LstmDrop drop;
  explicit LnLstmCellForward(const ops::ln_lstm_cell::Args& a)
      : gates_x(as<const T>(a.gates_x)), gates_h(as<const T>(a.gates_h)), c_prev(as<const T>(a.c_prev)),
        weight_h(as<const T>(a.weight_h)), weight_c(as<const T>(a.weight_c)), bias_c(as<const T>(a.bias_c)),
        h(as<T>(a.h)), c(as<T>(a.c)), h_rec(as<T>(a.h_rec)), H(a.H), eps(static_cast<float>(a.eps)), drop(a) {}
  template <class Row>
  GK_LSTM_HD void row(const Row& r, int64_t b) const {
    const int64_t n = H, G = 4 * n, gb = b * G, hb = b * n;
    float* cs = r.scratch;
    float* os = r.scratch + n;
    float mh, rh, mc, rc;
    lstm_row_stats(r, G, eps, [&](int64_t k) { return load(gates_h, gb + k); }, mh, rh);
    r.each(n, [&](int64_t j) {
      float pre[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t k = q * n + j;
        pre[q] = load(gates_x, gb + k) + (load(gates_h, gb + k) - mh) * rh * load(weight_h, k);
      }
      const LstmActs a = lstm_acts(pre[0], pre[1], pre[2], pre[3]);
      const float cv = a.f * load(c_prev, hb + j) + a.i * a.g;
      store(c, hb + j, cv);
      cs[j] = cv;
      os[j] = a.o;
    });
    lstm_row_stats(r, n, eps, [&](int64_t j) { return cs[j]; }, mc, rc);
    r.each(n, [&](int64_t j) {
      const float cn = (cs[j] - mc) * rc * load(weight_c, j) + load(bias_c, j);
      const float hv = os[j] * gate_tanh(cn);
      store(h, hb + j, hv);
      if constexpr (Drop) store(h_rec, hb + j, hv * drop.at(b, j));
    });
  }
};

template <typename T, bool Drop>
struct LnLstmCellBackward {
  static constexpr int kScratch = 6;  // A: 4H pre-activations, then gate gradients; C: cells; D: dLN(c)
  const T *grad_h, *grad_h_rec, *grad_c, *gates_x, *gates_h, *c_prev, *weight_h, *weight_c, *bias_c;
  T *grad_gates_x, *grad_gates_h, *grad_c_prev;
  float *terms_h, *terms_c, *terms_b;
  int64_t H;
  float eps;
  LstmDrop drop;
  explicit LnLstmCellBackward(const ops::ln_lstm_cell_backward::Args& a)
      : grad_h(as<const T>(a.grad_h)), grad_h_rec(as<const T>(a.grad_h_rec)), grad_c(as<const T>(a.grad_c)),
        gates_x(as<const T>(a.gates_x)), gates_h(as<const T>(a.gates_h)), c_prev(as<const T>(a.c_prev)),
        weight_h(as<const T>(a.weight_h)), weight_c(as<const T>(a.weight_c)), bias_c(as<const T>(a.bias_c)),
        grad_gates_x(as<T>(a.grad_gates_x)), grad_gates_h(as<T>(a.grad_gates_h)), grad_c_prev(as<T>(a.grad_c_prev)),
        terms_h(as<float>(a.terms_h)), terms_c(as<float>(a.terms_c)), terms_b(as<float>(a.terms_b)), H(a.H),
        eps(static_cast<float>(a.eps)), drop(a) {}
  template <class Row>
  GK_LSTM_HD void row(const Row& r, int64_t b) const {
    const int64_t n = H, G = 4 * n, gb = b * G, hb = b * n;
    float* A = r.scratch;
    float* C = A + G;
    float* D = C + n;
    float mh, rh, mc, rc;
    lstm_row_stats(r, G, eps, [&](int64_t k) { return load(gates_h, gb + k); }, mh, rh);
    r.each(n, [&](int64_t j) {
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t k = q * n + j;
        A[k] = load(gates_x, gb + k) + (load(gates_h, gb + k) - mh) * rh * load(weight_h, k);
      }
      C[j] = gate_sigmoid(A[n + j]) * load(c_prev, hb + j) + gate_sigmoid(A[j]) * gate_tanh(A[2 * n + j]);
    });
    lstm_row_stats(r, n, eps, [&](int64_t j) { return C[j]; }, mc, rc);
    r.each(n, [&](int64_t j) {
      const float ch = (C[j] - mc) * rc, wc = load(weight_c, j);
      const LstmAct tc = lstm_tanh_d(ch * wc + load(bias_c, j));
      const LstmAct o = lstm_sigmoid_d(A[3 * n + j]);
      float dh = load(grad_h, hb + j);
      if constexpr (Drop) dh += load(grad_h_rec, hb + j) * drop.at(b, j);
      const float dcn = dh * o.v * tc.d;
      D[j] = dcn * wc;
      terms_c[hb + j] = dcn * ch;
      terms_b[hb + j] = dcn;
      A[3 * n + j] = dh * tc.v * o.d;
    });
    const float s1c = r.sum(n, [&](int64_t j) { return D[j]; }) / static_cast<float>(n);
    const float s2c = r.sum(n, [&](int64_t j) { return D[j] * ((C[j] - mc) * rc); }) / static_cast<float>(n);
    r.each(n, [&](int64_t j) {
      const float ch = (C[j] - mc) * rc;
      const float dct = load(grad_c, hb + j) + rc * (D[j] - s1c - ch * s2c);
      const LstmAct i = lstm_sigmoid_d(A[j]), f = lstm_sigmoid_d(A[n + j]), g = lstm_tanh_d(A[2 * n + j]);
      const float cp = load(c_prev, hb + j);
      A[j] = dct * g.v * i.d;
      A[n + j] = dct * cp * f.d;
      A[2 * n + j] = dct * i.v * g.d;
      store(grad_c_prev, hb + j, dct * f.v);
#pragma unroll
      for (int q = 0; q < 4; ++q) store(grad_gates_x, gb + q * n + j, A[q * n + j]);
    });
    const float s1h = r.sum(G, [&](int64_t k) { return A[k] * load(weight_h, k); }) / static_cast<float>(G);
    const float s2h = r.sum(G, [&](int64_t k) {
      return A[k] * load(weight_h, k) * ((load(gates_h, gb + k) - mh) * rh);
    }) / static_cast<float>(G);
    r.each(G, [&](int64_t k) {
      const float hh = (load(gates_h, gb + k) - mh) * rh, dhh = A[k] * load(weight_h, k);
      store(grad_gates_h, gb + k, rh * (dhh - s1h - hh * s2h));
      terms_h[gb + k] = A[k] * hh;
    });
  }
};

// ---- dropout mask ---------------------------------------------------------------------------------
template <typename T>
struct LstmDropoutMask {
  static constexpr int kScratch = 0;
  T* out;
  int64_t H;
  LstmDrop drop;
  explicit LstmDropoutMask(const ops::lstm_dropout_mask::Args& a) : out(as<T>(a.out)), H(a.H), drop(a) {}
  template <class Row>
  GK_LSTM_HD void row(const Row& r, int64_t b) const {
    r.each(H, [&](int64_t j) { store(out, b * H + j, drop.at(b, j)); });
  }
};

}  // namespace gk
