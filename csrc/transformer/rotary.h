// Rotary position embedding, GPT-NeoX / Llama half-split convention (genkernels/ops/rotary.py),
// written once for the C++ CPU and CUDA kernels. For x (N, T, H, D), half = D / 2, token t of
// sequence n at position p = offset_n + t, c = cos[p, j], s = sin[p, j] (j < half):
//
//   y[j]        = x[j] c - x[j + half] s
//   y[j + half] = x[j + half] c + x[j] s
//
// a rotation by theta = (p, j) per pair; inverse (the backward: the transpose of a rotation) uses
// -s. fp32 arithmetic, one element per call (the pair partner is re-read). NaN propagates.
#pragma once
#include <cstdint>

#include "common/dtype.h"
#include "common/macros.h"
#include "transformer/transformer_args.h"

namespace gk {

template <typename T>
struct RotaryOp {
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
  GK_HD int begin(int64_t) const { return 0; }
  GK_HD void apply(int, int64_t, int64_t i) const {
    const int64_t d = i % D, row = i / D, t = (row / H) % T_, n = row / (H * T_);
    const int64_t pos = (offsets ? offsets[n] : offset) + t;
    const bool lo = d < half;
    const int64_t j = lo ? d : d - half;
    const float c = cos[pos * half + j], s = sign * sin[pos * half + j];
    const float xv = load(x, i), partner = load(x, lo ? i + half : i - half);
    store(y, i, lo ? xv * c - partner * s : xv * c + partner * s);
  }
};

}  // namespace gk
