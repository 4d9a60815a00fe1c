// Gated activation of PixelCNN / WaveNet (van den Oord et al. 2016), written once for the C++ CPU
// kernels and the CUDA kernels:
//
//   y  = tanh(a') * sigmoid(b'),            a' = a + ca, b' = b + cb (cond optional)
//   da = g * sigmoid(b') * (1 - tanh(a')^2)
//   db = g * tanh(a') * sigmoid(b') * (1 - sigmoid(b'))
//
// Arithmetic in fp32 whatever the storage. Every exponential is taken of -|v| <= 0, so nothing
// overflows and nothing cancels: with e = exp(-2|a|), tanh|a| = (1 - e) / (1 + e) for |a| >= 0.625
// and an odd minimax polynomial below (where 1 - e would cancel), 1 - tanh^2 = 4e / (1 + e)^2
// (exact in the tails, where 1 - t * t is all rounding); with e = exp(-|b|), sigmoid(b) =
// 1 / (1 + e) or e / (1 + e) and sigmoid'(b) = e / (1 + e)^2. The exponential is our own (Cody-
// Waite reduction + Cephes polynomial, ~1 ulp), branch-free so the CPU loops vectorise and the
// CPU and GPU builds run the same operations. NaN in a or b (or cond) propagates to y and both
// gradients; +-inf give the limits.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/dtype.h"
#include "common/macros.h"
#include "conv/conv_args.h"

namespace gk {

// c ? a : b by bit masks: GCC (without -ffast-math) will not if-convert float selects in a loop,
// so a ternary there would keep the whole CPU loop scalar.
GK_HD float gate_select(bool c, float a, float b) {
  const uint32_t m = 0u - static_cast<uint32_t>(c);
  return bits_float((float_bits(a) & m) | (float_bits(b) & ~m));
}

// exp(x) for x <= 0 (NaN propagates): exact to ~1 ulp, subnormal results included,
// 0 below -104 (exp(-104) rounds to 0 in fp32).
GK_HD float gate_exp_nonpos(float x) {
  // x < -104 -> -104 (x <= 0: compared by magnitude bits, 0x42d00000 = 104); NaN is kept
  const uint32_t mag = float_bits(x) & 0x7fffffffu;
  x = gate_select((mag > 0x42d00000u) & (mag <= 0x7f800000u), -104.f, x);
  const float magic = 12582912.f;                                // 1.5 * 2^23: round to nearest
  const float shifted = x * 1.44269504088896341f + magic;        // x / ln 2 rounded, in the low bits
  const float n = shifted - magic;
  float r = x - n * 0.693359375f;                                // Cody-Waite ln 2 = hi + lo
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.f;                                     // exp(r), |r| <= ln 2 / 2
  // 2^n in two factors, so n down to -150 scales into the subnormals without a special case
  const int32_t ni = static_cast<int32_t>(float_bits(shifted) - float_bits(magic));  // = n, no UB on NaN
  const int32_t n1 = ni / 2, n2 = ni - n1;
  const float s1 = bits_float(static_cast<uint32_t>(n1 + 127) << 23);
  const float s2 = bits_float(static_cast<uint32_t>(n2 + 127) << 23);
  return (p * s1) * s2;                                          // NaN: p is NaN
}

// tanh(a) from e = exp(-2|a|).
GK_HD float gate_tanh_from(float a, float e) {
  const float z = a * a;                                         // Cephes tanhf, |a| < 0.625
  float q = -5.70498872745e-3f;
  q = q * z + 2.06390887954e-2f;
  q = q * z - 5.37397155531e-2f;
  q = q * z + 1.33314422036e-1f;
  q = q * z - 3.33332819422e-1f;
  const float small = q * z * a + a;
  const float large = copysignf((1.f - e) / (1.f + e), a);
  return gate_select(fabsf(a) < 0.625f, small, large);           // NaN: large, which is NaN
}

// sigmoid(b) from e = exp(-|b|).
GK_HD float gate_sigmoid_from(float b, float e) { return gate_select(b >= 0.f, 1.f, e) / (1.f + e); }

GK_HD float gate_tanh(float a) { return gate_tanh_from(a, gate_exp_nonpos(-2.f * fabsf(a))); }
GK_HD float gate_sigmoid(float b) { return gate_sigmoid_from(b, gate_exp_nonpos(-fabsf(b))); }

GK_HD float gated_activation_value(float a, float b) { return gate_tanh(a) * gate_sigmoid(b); }

// d/da and d/db of g * tanh(a) * sigmoid(b).
GK_HD void gated_activation_grads(float a, float b, float g, float& grad_a, float& grad_b) {
  const float ea = gate_exp_nonpos(-2.f * fabsf(a)), oa = 1.f + ea;
  const float t = gate_tanh_from(a, ea);
  const float sech2 = 4.f * ea / (oa * oa);
  const float eb = gate_exp_nonpos(-fabsf(b)), ob = 1.f + eb;
  const float s = gate_sigmoid_from(b, eb);
  const float ds = eb / (ob * ob);
  grad_a = g * s * sech2;
  grad_b = g * t * ds;
}

// ---------------------------------------------------------------------------------------------
// Functors for the per-sample loops (common/per_sample_cpu.h, common/per_sample_cuda.cuh), built
// from their op's Args (conv_args.h). Forward and the backward without a cond gradient run over
// outer rows of D = C * inner elements: element i of row o is channel c = i / inner, a at
// (o * 2 C inner + i), b at (o * 2 C inner + C inner + i), y / grad_y at (o * C inner + i).

template <typename T>
struct GatedActivationForward {
  const T *x, *cond;
  T* y;
  int64_t mid, C, inner;
  explicit GatedActivationForward(const ops::gated_activation::Args& p)
      : x(as<const T>(p.x)), cond(as<const T>(p.cond)), y(as<T>(p.y)), mid(p.mid), C(p.C), inner(p.inner) {}
  GK_HD int64_t begin(int64_t o) const { return (o / mid) * 2 * C; }  // this row's cond offset
  GK_HD void apply(int64_t cond_row, int64_t o, int64_t i) const {
    const int64_t half = C * inner, base = o * 2 * half + i;
    float a = load(x, base), b = load(x, base + half);
    if (cond) {
      const int64_t c = i / inner;
      a += load(cond, cond_row + c);
      b += load(cond, cond_row + C + c);
    }
    store(y, o * half + i, gated_activation_value(a, b));
  }
};

// With long rows (inner >= kGatedRowMin) the same ops run over outer * C rows of `inner` elements:
// a row's offsets and cond values are set once in begin(), the inner loop has no division and
// vectorises.
constexpr int64_t kGatedRowMin = 16;

struct GatedRowState {
  int64_t a, y;  // offsets of the row's first a element and first y / grad_y element
  float ca, cb;
};

template <typename T>
GK_HD GatedRowState gated_row_state(const T* cond, int64_t r, int64_t mid, int64_t C, int64_t inner) {
  const int64_t o = r / C, c = r - o * C;
  GatedRowState st{(o * 2 * C + c) * inner, r * inner, 0.f, 0.f};
  if (cond) {
    const int64_t row = (o / mid) * 2 * C + c;
    st.ca = load(cond, row);
    st.cb = load(cond, row + C);
  }
  return st;
}

template <typename T>
struct GatedActivationForwardRows {
  const T* x;
  const T* cond;
  T* y;
  int64_t mid, C, inner;
  explicit GatedActivationForwardRows(const ops::gated_activation::Args& p)
      : x(as<const T>(p.x)), cond(as<const T>(p.cond)), y(as<T>(p.y)), mid(p.mid), C(p.C), inner(p.inner) {}
  GK_HD GatedRowState begin(int64_t r) const { return gated_row_state(cond, r, mid, C, inner); }
  GK_HD void apply(const GatedRowState& st, int64_t, int64_t i) const {
    const float a = load(x, st.a + i) + st.ca, b = load(x, st.a + C * inner + i) + st.cb;
    store(y, st.y + i, gated_activation_value(a, b));
  }
};

template <typename T>
struct GatedActivationBackwardRows {
  const T *grad_y, *x, *cond;
  T* grad_x;
  int64_t mid, C, inner;
  explicit GatedActivationBackwardRows(const ops::gated_activation_backward::Args& p)
      : grad_y(as<const T>(p.grad_y)), x(as<const T>(p.x)), cond(as<const T>(p.cond)), grad_x(as<T>(p.grad_x)),
        mid(p.mid), C(p.C), inner(p.inner) {}
  GK_HD GatedRowState begin(int64_t r) const { return gated_row_state(cond, r, mid, C, inner); }
  GK_HD void apply(const GatedRowState& st, int64_t, int64_t i) const {
    const int64_t ia = st.a + i, ib = ia + C * inner;
    float ga, gb;
    gated_activation_grads(load(x, ia) + st.ca, load(x, ib) + st.cb, load(grad_y, st.y + i), ga, gb);
    store(grad_x, ia, ga);
    store(grad_x, ib, gb);
  }
};

template <typename T>
struct GatedActivationBackward {
  const T *grad_y, *x, *cond;
  T* grad_x;
  int64_t mid, C, inner;
  explicit GatedActivationBackward(const ops::gated_activation_backward::Args& p)
      : grad_y(as<const T>(p.grad_y)), x(as<const T>(p.x)), cond(as<const T>(p.cond)), grad_x(as<T>(p.grad_x)),
        mid(p.mid), C(p.C), inner(p.inner) {}
  GK_HD int64_t begin(int64_t o) const { return (o / mid) * 2 * C; }
  GK_HD void apply(int64_t cond_row, int64_t o, int64_t i) const {
    const int64_t half = C * inner, base = o * 2 * half + i;
    float a = load(x, base), b = load(x, base + half);
    if (cond) {
      const int64_t c = i / inner;
      a += load(cond, cond_row + c);
      b += load(cond, cond_row + C + c);
    }
    float ga, gb;
    gated_activation_grads(a, b, load(grad_y, o * half + i), ga, gb);
    store(grad_x, base, ga);
    store(grad_x, base + half, gb);
  }
};

// With a cond gradient and fp16/bf16 storage: a reduction over rows r = (n, h, c) of the cond gradient (n < N samples,
// h = 0 for a / 1 for b, c < C), each of mid * inner elements j = (m, i) at outer row
// o = n * mid + m. A row's term stores its half's grad_x element and returns it, so the partial
// sums come back per (row, chunk) in a fixed order (no atomics). Each (a, b) pair is visited by
// its two rows (the math runs twice, but the sums take the fp32 gradients, not their rounding to
// the storage dtype).
struct GatedRow {
  int64_t n, h, c;
};

template <typename T>
struct GatedActivationBackwardCond {
  const T *grad_y, *x, *cond;
  T* grad_x;
  int64_t mid, C, inner;
  explicit GatedActivationBackwardCond(const ops::gated_activation_backward::Args& p)
      : grad_y(as<const T>(p.grad_y)), x(as<const T>(p.x)), cond(as<const T>(p.cond)), grad_x(as<T>(p.grad_x)),
        mid(p.mid), C(p.C), inner(p.inner) {}
  GK_HD GatedRow begin(int64_t r) const {
    const int64_t n = r / (2 * C), hc = r - n * 2 * C, h = hc / C;
    return {n, h, hc - h * C};
  }
  GK_HD float term(GatedRow& row, int64_t, int64_t j) const {
    const int64_t m = j / inner, i = j - m * inner, o = row.n * mid + m, half = C * inner;
    const int64_t base = o * 2 * half + row.c * inner + i;
    const int64_t cond_row = row.n * 2 * C + row.c;
    const float a = load(x, base) + load(cond, cond_row), b = load(x, base + half) + load(cond, cond_row + C);
    float ga, gb;
    gated_activation_grads(a, b, load(grad_y, o * half + row.c * inner + i), ga, gb);
    const float v = row.h ? gb : ga;
    store(grad_x, base + row.h * half, v);
    return v;
  }
};

// fp32 storage: grad_x holds exactly the fp32 values GatedActivationBackwardCond would sum, so the
// cond gradient is a second, read-only pass over the grad_x the (vectorised) elementwise backward
// wrote: same rows, same chunks, same order, the same bits, and no second evaluation of the math.
struct GatedCondSum {
  const float* grad_x;
  int64_t mid, C, inner;
  explicit GatedCondSum(const ops::gated_activation_backward::Args& p)
      : grad_x(as<const float>(p.grad_x)), mid(p.mid), C(p.C), inner(p.inner) {}
  GK_HD int64_t begin(int64_t r) const {  // offset of the row's first element at m = 0
    const int64_t n = r / (2 * C), hc = r - n * 2 * C;
    return n * mid * 2 * C * inner + hc * inner;
  }
  GK_HD float term(int64_t base, int64_t, int64_t j) const {
    const int64_t m = j / inner;
    return grad_x[base + m * 2 * C * inner + (j - m * inner)];
  }
};

}  // namespace gk
