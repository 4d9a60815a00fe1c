// C++ CPU entry points of the transformer-block ops.
//
// Elementwise ops (SwiGLU, GELU-tanh, rotary): OpenMP loops over (row, chunk) units as in
// common/per_sample_cpu.h, the inner loop marked `ivdep` (outputs are fresh buffers). Row norms:
// an OpenMP loop over rows (forward) or blocks of kRowBlock rows (backward); a row's sums run in
// kRowLanes independent fp32 accumulators added pairwise at the end (a fixed order: the results
// do not depend on the thread count); the backward's column partials add the block's rows in
// order, as the CUDA column kernel does. A sum of computed terms first writes the terms to a
// per-thread buffer and sums that (the loop computing them then has no reduction and vectorises).
// As in flow_cpu.cpp / norm_cpu.cpp, every loop is compiled for SSE2, AVX2+FMA and AVX-512+FMA and
// the widest the CPU has is chosen at run time.
#include <algorithm>
#include <vector>

#include "common/per_sample_cpu.h"
#include "transformer/transformer_launch.h"

#define GK_TF_INLINE __attribute__((always_inline))

namespace gk {

constexpr int kRowLanes = 16;

template <class F>
GK_TF_INLINE inline float row_sum(int64_t count, const F& f) {
  float acc[kRowLanes] = {};
  int64_t i = 0;
  for (; i + kRowLanes <= count; i += kRowLanes) {
#pragma GCC unroll 16
    for (int j = 0; j < kRowLanes; ++j) acc[j] += f(i + j);
  }
  for (int j = 0; i + j < count; ++j) acc[j] += f(i + j);
  for (int w = kRowLanes / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0];
}

template <class Op>
GK_TF_INLINE inline void tf_apply_unit(const Op& op, int64_t u, int64_t chunks, int64_t D) {
  const int64_t n = u / chunks, begin = (u % chunks) * kChunk, end = std::min(D, begin + kChunk);
  const auto state = op.begin(n);
#pragma GCC ivdep
  for (int64_t i = begin; i < end; ++i) op.apply(state, n, i);
}

template <bool Rms, class Op>
GK_TF_INLINE inline void row_norm_forward_row(const Op& op, int64_t r) {
  const int64_t D = op.D, base = r * D;
  float mean = 0.f, s2;
  if (Rms) {
    s2 = row_sum(D, [&](int64_t d) GK_TF_INLINE { const float v = op.in(base + d); return v * v; });
  } else {
    mean = row_sum(D, [&](int64_t d) GK_TF_INLINE { return op.in(base + d); }) / static_cast<float>(D);
    const float m = mean;
    s2 = row_sum(D, [&](int64_t d) GK_TF_INLINE { const float v = op.in(base + d) - m; return v * v; });
  }
  op.stats_done(r, mean, s2);
  const float rstd = op.rstd_out[r];
#pragma GCC ivdep
  for (int64_t d = 0; d < D; ++d) op.out(base + d, d, mean, rstd);
}

// scratch: 2 D floats of this thread
template <bool Rms, class Op>
GK_TF_INLINE inline void row_norm_backward_block(const Op& op, int64_t blk, float* scratch) {
  const int64_t R = op.R, D = op.D, r0 = blk * kRowBlock, r1 = std::min(R, r0 + kRowBlock);
  float* ta = scratch;
  float* tb = scratch + D;
  float* pw = op.partials ? op.p_weight(blk) : nullptr;
  float* pb = op.partials ? op.p_bias(blk) : nullptr;
  if (pw)
    for (int64_t d = 0; d < D; ++d) pw[d] = pb[d] = 0.f;
  const float inv = 1.f / static_cast<float>(D);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t base = r * D;
    const float mean = op.mean(r), rstd = op.rstd(r);
#pragma GCC ivdep
    for (int64_t d = 0; d < D; ++d) op.terms(base + d, d, mean, rstd, ta[d], tb[d]);
    const float A = Rms ? 0.f : row_sum(D, [&](int64_t d) GK_TF_INLINE { return ta[d]; }) * inv;
    const float B = row_sum(D, [&](int64_t d) GK_TF_INLINE { return tb[d]; }) * inv;
    if (pw) {  // grad_x and the column terms in one pass over the row
#pragma GCC ivdep
      for (int64_t d = 0; d < D; ++d) {
        op.out(base + d, d, mean, rstd, A, B);
        float tw, tbias;
        op.column_terms(base + d, mean, rstd, tw, tbias);
        pw[d] += tw;
        pb[d] += tbias;
      }
    } else {
#pragma GCC ivdep
      for (int64_t d = 0; d < D; ++d) op.out(base + d, d, mean, rstd, A, B);
    }
  }
}

// The OpenMP loops, once per instruction set (the target attribute must sit on the function that
// holds the parallel region: its outlined body inherits it, and the unit bodies inline into it).
#define GK_TF_CPU_LOOPS(ATTRIBUTE, SUFFIX)                                                           \
  template <class Op>                                                                              \
  ATTRIBUTE void tf_apply_##SUFFIX(const Op& op, int64_t N, int64_t D) {                           \
    const int64_t chunks = num_chunks(D), units = N * chunks;                                      \
    _Pragma("omp parallel for schedule(static) if (units > 1 && N * D > 32768)")                   \
    for (int64_t u = 0; u < units; ++u) tf_apply_unit(op, u, chunks, D);                           \
  }                                                                                                \
  template <bool Rms, class Op>                                                                    \
  ATTRIBUTE void row_norm_forward_##SUFFIX(const Op& op) {                                         \
    const int64_t R = op.R;                                                                        \
    _Pragma("omp parallel for schedule(static) if (R > 1 && R * op.D > 32768)")                    \
    for (int64_t r = 0; r < R; ++r) row_norm_forward_row<Rms>(op, r);                              \
  }                                                                                                \
  template <bool Rms, class Op>                                                                    \
  ATTRIBUTE void row_norm_backward_##SUFFIX(const Op& op) {                                        \
    const int64_t blocks = op.blocks;                                                              \
    _Pragma("omp parallel if (blocks > 1 && op.R * op.D > 32768)") {                               \
      std::vector<float> scratch(2 * op.D);                                                        \
      _Pragma("omp for schedule(static)")                                                          \
      for (int64_t blk = 0; blk < blocks; ++blk) row_norm_backward_block<Rms>(op, blk, scratch.data()); \
    }                                                                                              \
  }

GK_TF_CPU_LOOPS(, sse2)
GK_TF_CPU_LOOPS(__attribute__((target("avx2,fma"))), avx2)
GK_TF_CPU_LOOPS(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma"))), avx512)
#undef GK_TF_CPU_LOOPS

inline int tf_cpu_isa() {
  static const int isa = (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
                             ? 2
                             : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 1 : 0;
  return isa;
}

#define GK_TF_ISA_CALL(NAME, ...)      \
  switch (tf_cpu_isa()) {              \
    case 2: NAME##_avx512 __VA_ARGS__; break; \
    case 1: NAME##_avx2 __VA_ARGS__; break;   \
    default: NAME##_sse2 __VA_ARGS__; break;  \
  }

template <>
struct TransformerApplier<CpuExec> {
  template <class Op>
  static void run(const CpuExec&, const Op& op, int64_t rows, int64_t D, const char*) {
    GK_TF_ISA_CALL(tf_apply, (op, rows, D))
  }
};

template <>
struct RowNormLoops<CpuExec> {
  template <typename T, bool Rms>
  static void forward(const CpuExec&, const RowNormForward<T, Rms>& op) {
    GK_TF_ISA_CALL(row_norm_forward, <Rms>(op))
  }
  template <typename T, bool Rms>
  static void backward(const CpuExec&, const RowNormBackward<T, Rms>& op) {
    GK_TF_ISA_CALL(row_norm_backward, <Rms>(op))
  }
};

#undef GK_TF_ISA_CALL

namespace ops {
GK_TRANSFORMER_OPS(GK_DEFINE_CPU_ENTRY)
}  // namespace ops

}  // namespace gk
