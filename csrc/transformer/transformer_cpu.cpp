// C++ CPU entry points of the transformer-block ops. Elementwise ops: common/per_sample_cpu.h's
// loops. Row norms: an OpenMP loop over blocks of kRowBlock rows; a row's sums run in kRowLanes
// independent fp32 accumulators added pairwise at the end (fixed order: the results do not depend
// on the thread count); the backward's column partials add the block's rows in order, exactly as
// the CUDA column kernel does.
#include <algorithm>
#include <vector>

#include "common/per_sample_cpu.h"
#include "transformer/transformer_launch.h"

namespace gk {

constexpr int kRowLanes = 16;

template <class F>
inline float row_sum(int64_t count, const F& f) {
  float acc[kRowLanes] = {};
  int64_t i = 0;
  for (; i + kRowLanes <= count; i += kRowLanes)
    for (int j = 0; j < kRowLanes; ++j) acc[j] += f(i + j);
  for (int j = 0; i + j < count; ++j) acc[j] += f(i + j);
  for (int w = kRowLanes / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0];
}

// mean (0 for RMSNorm) and the second sum of row r
template <bool Rms, class Op>
inline void row_stats(const Op& op, int64_t base, float& mean, float& s2) {
  const int64_t D = op.D;
  if (Rms) {
    mean = 0.f;
    s2 = row_sum(D, [&](int64_t d) { const float v = op.in(base + d); return v * v; });
  } else {
    mean = row_sum(D, [&](int64_t d) { return op.in(base + d); }) / static_cast<float>(D);
    const float m = mean;
    s2 = row_sum(D, [&](int64_t d) { const float v = op.in(base + d) - m; return v * v; });
  }
}

template <>
struct RowNormLoops<CpuExec> {
  template <typename T, bool Rms>
  static void forward(const CpuExec&, const RowNormForward<T, Rms>& op) {
    const int64_t R = op.R, D = op.D;
#pragma omp parallel for schedule(static) if (R > 1 && R * D > 32768)
    for (int64_t r = 0; r < R; ++r) {
      const int64_t base = r * D;
      float mean, s2;
      row_stats<Rms>(op, base, mean, s2);
      op.stats_done(r, mean, s2);
      const float rstd = op.rstd_out[r];
      for (int64_t d = 0; d < D; ++d) op.out(base + d, d, mean, rstd);
    }
  }

  template <typename T, bool Rms>
  static void backward(const CpuExec&, const RowNormBackward<T, Rms>& op) {
    const int64_t R = op.R, D = op.D, blocks = op.blocks;
#pragma omp parallel if (blocks > 1 && R * D > 32768)
    {
      std::vector<float> ta(D), tb(D);
#pragma omp for schedule(static)
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t r0 = blk * kRowBlock, r1 = std::min(R, r0 + kRowBlock);
        float* pw = op.partials ? op.p_weight(blk) : nullptr;
        float* pb = op.partials ? op.p_bias(blk) : nullptr;
        if (pw)
          for (int64_t d = 0; d < D; ++d) pw[d] = pb[d] = 0.f;
        const float inv = 1.f / static_cast<float>(D);
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t base = r * D;
          const float mean = op.mean(r), rstd = op.rstd(r);
          for (int64_t d = 0; d < D; ++d) op.terms(base + d, d, mean, rstd, ta[d], tb[d]);
          const float A = Rms ? 0.f : row_sum(D, [&](int64_t d) { return ta[d]; }) * inv;
          const float B = row_sum(D, [&](int64_t d) { return tb[d]; }) * inv;
          for (int64_t d = 0; d < D; ++d) op.out(base + d, d, mean, rstd, A, B);
          if (pw) {
            for (int64_t d = 0; d < D; ++d) {
              float tw, tbias;
              op.column_terms(base + d, mean, rstd, tw, tbias);
              pw[d] += tw;
              pb[d] += tbias;
            }
          }
        }
      }
    }
  }
};

namespace ops {
GK_TRANSFORMER_OPS(GK_DEFINE_CPU_ENTRY)
}  // namespace ops

}  // namespace gk
