// C++ CPU entry points of the normalisation ops: the shared math (group_norm_act.h, adaln.h) in
// OpenMP loops over work units: one (sample, group) of GroupNorm, one (sample, block of
// kAdaLNRowBlock rows) of adaLN. Sums run in kNormLanes independent fp32 accumulators, combined
// pairwise at the end: the loops vectorise with no reassociation, and the order is fixed (the
// results do not depend on the thread count). A sum of computed terms (the backward's) first
// writes the terms to a per-thread buffer and sums that: fused into the reduction, GCC vectorises
// such a loop across lanes with transposes and spills (the GroupNorm backward ran 2.3x slower).
// Elementwise loops carry `ivdep` (outputs are fresh buffers). As in flow_cpu.cpp, each loop is
// compiled for SSE2, AVX2 and AVX-512 (+FMA) and the widest the CPU has is chosen at run time.
#include <algorithm>
#include <vector>

#include "common/per_sample_cpu.h"
#include "norm/norm_launch.h"

#define GK_NORM_INLINE __attribute__((always_inline))

namespace gk {

constexpr int kNormLanes = 16;

// sum of f(i) over i < count: lane j accumulates i = j (mod kNormLanes), lanes added pairwise
template <class F>
GK_NORM_INLINE inline float norm_sum(int64_t count, const F& f) {
  float acc[kNormLanes] = {};
  int64_t i = 0;
  for (; i + kNormLanes <= count; i += kNormLanes) {
#pragma GCC unroll 16
    for (int j = 0; j < kNormLanes; ++j) acc[j] += f(i + j);
  }
  for (int j = 0; i + j < count; ++j) acc[j] += f(i + j);
  for (int w = kNormLanes / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0];
}

// mean and rstd of `count` elements from `base` (two passes)
template <class Op>
GK_NORM_INLINE inline void norm_stats(const Op& op, int64_t base, int64_t count, float& mean, float& rstd) {
  // divided, not multiplied by a rounded 1 / count: the mean is then correctly rounded from the
  // sum, which x - mean would otherwise amplify for elements near the mean
  const float n = static_cast<float>(count);
  const float m = norm_sum(count, [&](int64_t i) GK_NORM_INLINE { return op.in(base + i); }) / n;
  const float var = norm_sum(count, [&](int64_t i) GK_NORM_INLINE {
                      const float d = op.in(base + i) - m;
                      return d * d;
                    }) / n;
  mean = m;
  rstd = norm_rstd(var, op.eps);
}

template <class Op>
GK_NORM_INLINE inline void gn_forward_unit(const Op& op, int64_t u) {
  const int64_t base = u * op.M, inner = op.inner;
  float mean, rstd;
  norm_stats(op, base, op.M, mean, rstd);
  for (int64_t j = 0; j < op.Cg; ++j) {
    const NormCoef k = op.coef(u, j, rstd);
    const int64_t cb = base + j * inner;
#pragma GCC ivdep
    for (int64_t i = 0; i < inner; ++i) op.out(cb + i, op.in(cb + i), mean, k);
  }
}

// scratch: M + inner floats of this thread: each element's g' between the two passes, then one
// channel's g' xhat terms (the sums read the terms back from a buffer, so the loop that computes
// them has no reduction in it and vectorises like the elementwise loops)
template <class Op>
GK_NORM_INLINE inline void gn_backward_unit(const Op& op, int64_t u, float* scratch) {
  const int64_t base = u * op.M, inner = op.inner;
  float* terms = scratch + op.M;
  float mean, rstd;
  norm_stats(op, base, op.M, mean, rstd);
  float A = 0.f, B = 0.f;
  for (int64_t j = 0; j < op.Cg; ++j) {
    const NormCoef k = op.coef(u, j, rstd);
    const int64_t cb = base + j * inner;
    float* gs = scratch + j * inner;
#pragma GCC ivdep
    for (int64_t i = 0; i < inner; ++i) {
      const float xv = op.in(cb + i), g = op.gh(cb + i, xv, mean, k);
      gs[i] = g;
      terms[i] = g * ((xv - mean) * rstd);
    }
    const float s1 = norm_sum(inner, [&](int64_t i) GK_NORM_INLINE { return gs[i]; });
    const float s2 = norm_sum(inner, [&](int64_t i) GK_NORM_INLINE { return terms[i]; });
    op.channel_done(u, j, s1, s2);
    A += k.k * s1;
    B += k.k * s2;
  }
  const float inv = 1.f / static_cast<float>(op.M);
  A *= inv;
  B *= inv;
  for (int64_t j = 0; j < op.Cg; ++j) {
    const NormCoef k = op.coef(u, j, rstd);
    const int64_t cb = base + j * inner;
    const float* gs = scratch + j * inner;
#pragma GCC ivdep
    for (int64_t i = 0; i < inner; ++i) op.out(cb + i, gs[i], (op.in(cb + i) - mean) * rstd, k, rstd, A, B);
  }
}

template <class Op>
GK_NORM_INLINE inline void adaln_forward_unit(const Op& op, int64_t u, int64_t blocks) {
  const int64_t n = u / blocks, r0 = n * op.L + (u % blocks) * kAdaLNRowBlock;
  const int64_t r1 = std::min(r0 + kAdaLNRowBlock, (n + 1) * op.L), D = op.D;
  for (int64_t r = r0; r < r1; ++r) {
    float mean, rstd;
    norm_stats(op, r * D, D, mean, rstd);
#pragma GCC ivdep
    for (int64_t d = 0; d < D; ++d) op.out(r, n, d, mean, rstd);
  }
}

// scratch: 2 D floats of this thread (a row's gx^ and gx^ xhat terms, summed from the buffer)
template <class Op>
GK_NORM_INLINE inline void adaln_backward_unit(const Op& op, int64_t u, float* scratch) {
  const int64_t n = u / op.blocks, blk = u % op.blocks, r0 = n * op.L + blk * kAdaLNRowBlock;
  const int64_t r1 = std::min(r0 + kAdaLNRowBlock, (n + 1) * op.L), D = op.D;
  float* ps = op.p_shift(n, blk);
  float* pc = op.p_scale(n, blk);
  float* ta = scratch;
  float* tb = scratch + D;
  for (int64_t d = 0; d < D; ++d) ps[d] = pc[d] = 0.f;
  const float inv = 1.f / static_cast<float>(D);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t base = r * D, nd = n * D;
    float mean, rstd;
    norm_stats(op, base, D, mean, rstd);
#pragma GCC ivdep
    for (int64_t d = 0; d < D; ++d) {
      const float gx = op.gxhat(base + d, nd + d);
      ta[d] = gx;
      tb[d] = gx * ((op.in(base + d) - mean) * rstd);
    }
    const float A = norm_sum(D, [&](int64_t d) GK_NORM_INLINE { return ta[d]; }) * inv;
    const float B = norm_sum(D, [&](int64_t d) GK_NORM_INLINE { return tb[d]; }) * inv;
#pragma GCC ivdep
    for (int64_t d = 0; d < D; ++d) {
      float a, b;
      op.column_terms(base + d, mean, rstd, a, b);
      ps[d] += a;
      pc[d] += b;
    }
#pragma GCC ivdep
    for (int64_t d = 0; d < D; ++d) op.out(r, n, d, mean, rstd, A, B);
  }
}

// The OpenMP loops, once per instruction set (the target attribute must sit on the function that
// holds the parallel region: its outlined body inherits it, and the unit bodies inline into it).
#define GK_NORM_CPU_LOOPS(ATTRIBUTE, SUFFIX)                                                         \
  template <class Op>                                                                              \
  ATTRIBUTE void gn_forward_##SUFFIX(const Op& op) {                                               \
    const int64_t units = op.units();                                                              \
    _Pragma("omp parallel for schedule(static) if (units > 1 && units * op.M > 32768)")            \
    for (int64_t u = 0; u < units; ++u) gn_forward_unit(op, u);                                    \
  }                                                                                                \
  template <class Op>                                                                              \
  ATTRIBUTE void gn_backward_##SUFFIX(const Op& op) {                                              \
    const int64_t units = op.units();                                                              \
    _Pragma("omp parallel if (units > 1 && units * op.M > 32768)") {                               \
      std::vector<float> scratch(op.M + op.inner);                                                 \
      _Pragma("omp for schedule(static)")                                                          \
      for (int64_t u = 0; u < units; ++u) gn_backward_unit(op, u, scratch.data());                 \
    }                                                                                              \
  }                                                                                                \
  template <class Op>                                                                              \
  ATTRIBUTE void adaln_forward_##SUFFIX(const Op& op) {                                            \
    const int64_t blocks = (op.L + kAdaLNRowBlock - 1) / kAdaLNRowBlock, units = op.N * blocks;    \
    _Pragma("omp parallel for schedule(static) if (units > 1 && op.N * op.L * op.D > 32768)")      \
    for (int64_t u = 0; u < units; ++u) adaln_forward_unit(op, u, blocks);                         \
  }                                                                                                \
  template <class Op>                                                                              \
  ATTRIBUTE void adaln_backward_##SUFFIX(const Op& op) {                                           \
    const int64_t units = op.N * op.blocks;                                                        \
    _Pragma("omp parallel if (units > 1 && op.N * op.L * op.D > 32768)") {                         \
      std::vector<float> scratch(2 * op.D);                                                        \
      _Pragma("omp for schedule(static)")                                                          \
      for (int64_t u = 0; u < units; ++u) adaln_backward_unit(op, u, scratch.data());              \
    }                                                                                              \
  }

GK_NORM_CPU_LOOPS(, sse2)
GK_NORM_CPU_LOOPS(__attribute__((target("avx2,fma"))), avx2)
GK_NORM_CPU_LOOPS(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma"))), avx512)
#undef GK_NORM_CPU_LOOPS

inline int norm_cpu_isa() {  // 2 AVX-512, 1 AVX2 + FMA, 0 SSE2
  static const int isa = (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
                             ? 2
                             : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 1 : 0;
  return isa;
}

#define GK_NORM_ISA_CALL(NAME, ...)        \
  switch (norm_cpu_isa()) {                \
    case 2: NAME##_avx512(__VA_ARGS__); break; \
    case 1: NAME##_avx2(__VA_ARGS__); break;   \
    default: NAME##_sse2(__VA_ARGS__); break;  \
  }

template <>
struct NormLoops<CpuExec> {
  template <class Op>
  static void group_forward(const CpuExec&, const Op& op) {
    GK_NORM_ISA_CALL(gn_forward, op)
  }
  template <class Op>
  static void group_backward(const CpuExec&, const Op& op) {
    GK_NORM_ISA_CALL(gn_backward, op)
    if (op.grad_weight || op.grad_bias) {
      const int64_t C = op.C;
#pragma omp parallel for schedule(static) if (C * op.N > 32768)
      for (int64_t c = 0; c < C; ++c) op.param_grads(c);
    }
  }
  template <class Op>
  static void adaln_forward(const CpuExec&, const Op& op) {
    GK_NORM_ISA_CALL(adaln_forward, op)
  }
  template <class Op>
  static void adaln_backward(const CpuExec&, const Op& op) {
    GK_NORM_ISA_CALL(adaln_backward, op)
    const int64_t units = op.N * op.D;
#pragma omp parallel for schedule(static) if (units * op.blocks > 32768)
    for (int64_t u = 0; u < units; ++u) op.finish(u / op.D, u % op.D);
  }
};

#undef GK_NORM_ISA_CALL

namespace ops {
GK_NORM_OPS(GK_DEFINE_CPU_ENTRY)
}  // namespace ops

}  // namespace gk
