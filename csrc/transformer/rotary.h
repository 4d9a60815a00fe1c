// Rotary position embedding, GPT-NeoX / Llama half-split convention (genkernels/ops/rotary.py),
// written once for the C++ CPU and CUDA kernels. For x (N, T, H, D), half = D / 2, token t of
// sequence n at position p = offset_n + t, c = cos[p, j], s = sin[p, j] (j < half):
//
//   y[j]        = x[j] c - x[j + half] s
//   y[j + half] = x[j + half] c + x[j] s
//
// a rotation by theta = (p, j) per pair; inverse (the backward: the transpose of a rotation) uses
// -s. fp32 arithmetic; the executors run one row of D / 2 pairs per work-unit row. NaN propagates.
#pragma once
#include <cstdint>

#include "common/dtype.h"
#include "common/macros.h"
#include "transformer/transformer_args.h"

namespace gk {

// One row (n, t, h) of D elements per work unit row, one pair (j, j + half) per apply.
template <typename T>
struct RotaryOp {
  struct Row {
    int64_t base, table;  // the row's first element; its position's first table entry
  };
  const T* x;
  const float *cos, *sin;
  const int64_t* offsets;
  T* y;
  int64_t T_, H, D, half, offset;
  float sign;
  explicit RotaryOp(const ops::rotary::Args& p)
      : x(as<const T>(p.x)), cos(as<const float>(p.cos)), sin(as<const float>(p.sin)),
        offsets(as<const int64_t>(p.offsets)), y(as<T>(p.y)), T_(p.T), H(p.H), D(p.D), half(p.D / 2),
        offset(p.offset), sign(p.inverse ? -1.f : 1.f) {}
  // row = (n T + t) H + h
  GK_HD Row begin(int64_t row) const {
    const int64_t t = (row / H) % T_, n = row / (H * T_);
    return {row * D, ((offsets ? offsets[n] : offset) + t) * half};
  }
  GK_HD void apply(const Row& r, int64_t, int64_t j) const {
    const float c = cos[r.table + j], s = sign * sin[r.table + j];
    const float x1 = load(x, r.base + j), x2 = load(x, r.base + j + half);
    store(y, r.base + j, x1 * c - x2 * s);
    store(y, r.base + j + half, x2 * c + x1 * s);
  }
};

}  // namespace gk
