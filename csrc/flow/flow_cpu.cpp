// C++ CPU entry points of the normalizing-flow ops: the shared bodies run by OpenMP loops.
//
// The loops are per_sample_apply_cpu / per_sample_reduce_cpu (common/per_sample_cpu.h) with two
// changes that let the flow functors vectorise: the inner loops carry `ivdep` (every functor reads
// its inputs and writes distinct, freshly allocated outputs, and without the hint GCC gives up on
// loops with more than 10 input/output pairs to check for overlap at run time), and a reduction
// first writes a chunk's terms to a local buffer (a loop with no reduction in it) and then sums
// the buffer exactly as per_sample_reduce_cpu does (four double accumulators, the same order), so
// the partials are bit-identical to it. Each loop is also compiled for AVX2 (without FMA, so the
// arithmetic and the results are the same as the SSE2 build's) and for AVX-512 with FMA (twice
// the lanes and fused multiply-adds: 1.8x faster on the coupling's exp / tanh chains; results
// differ from the SSE2 build's in the last bits, as the CUDA build's contracted FMAs do), chosen
// at run time.
#include <algorithm>

#include "common/per_sample_cpu.h"
#include "flow/flow_launch.h"

namespace gk {

template <class Op>
__attribute__((always_inline)) inline void flow_apply_unit(const Op& op, int64_t u, int64_t chunks, int64_t D) {
  const int64_t n = u / chunks, begin = (u % chunks) * kChunk, end = std::min(D, begin + kChunk);
  const auto state = op.begin(n);
#pragma GCC ivdep
  for (int64_t i = begin; i < end; ++i) op.apply(state, n, i);
}

template <class Op>
__attribute__((always_inline)) inline float flow_reduce_unit(const Op& op, int64_t u, int64_t chunks, int64_t D) {
  const int64_t n = u / chunks, begin = (u % chunks) * kChunk, count = std::min(D - begin, kChunk);
  const auto state = op.begin(n);
  float terms[kChunk];
#pragma GCC ivdep
  for (int64_t i = 0; i < count; ++i) terms[i] = op.term(state, n, begin + i);
  double acc[4] = {0.0, 0.0, 0.0, 0.0};
  int64_t i = 0;
  for (; i + 4 <= count; i += 4) {
    acc[0] += terms[i];
    acc[1] += terms[i + 1];
    acc[2] += terms[i + 2];
    acc[3] += terms[i + 3];
  }
  for (; i < count; ++i) acc[0] += terms[i];
  return static_cast<float>((acc[0] + acc[1]) + (acc[2] + acc[3]));
}

// The OpenMP loops, once per instruction set (the target attribute must sit on the function that
// holds the parallel region: its outlined body inherits it, and the unit bodies inline into it).
#define GK_FLOW_CPU_LOOPS(ATTRIBUTE, SUFFIX)                                                         \
  template <class Op>                                                                              \
  ATTRIBUTE void flow_apply_cpu_##SUFFIX(const Op& op, int64_t N, int64_t D) {                     \
    const int64_t chunks = num_chunks(D), units = N * chunks;                                      \
    _Pragma("omp parallel for schedule(static) if (units > 1 && N * D > 32768)")                   \
    for (int64_t u = 0; u < units; ++u) flow_apply_unit(op, u, chunks, D);                         \
  }                                                                                                \
  template <class Op>                                                                              \
  ATTRIBUTE void flow_reduce_cpu_##SUFFIX(const Op& op, int64_t N, int64_t D, float* partials) {  \
    const int64_t chunks = num_chunks(D), units = N * chunks;                                      \
    _Pragma("omp parallel for schedule(static) if (units > 1 && N * D > 32768)")                   \
    for (int64_t u = 0; u < units; ++u) partials[u] = flow_reduce_unit(op, u, chunks, D);          \
  }

GK_FLOW_CPU_LOOPS(, sse2)
GK_FLOW_CPU_LOOPS(__attribute__((target("avx2"))), avx2)
GK_FLOW_CPU_LOOPS(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma"))), avx512)
#undef GK_FLOW_CPU_LOOPS

inline bool flow_cpu_has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return has;
}

inline bool flow_cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}

template <>
struct FlowApplier<CpuExec> {
  template <class Op>
  static void run(const CpuExec&, const Op& op, int64_t rows, int64_t D, const char*) {
    if (flow_cpu_has_avx512())
      flow_apply_cpu_avx512(op, rows, D);
    else if (flow_cpu_has_avx2())
      flow_apply_cpu_avx2(op, rows, D);
    else
      flow_apply_cpu_sse2(op, rows, D);
  }
};

template <>
struct FlowReducer<CpuExec> {
  template <class Op>
  static void run(const CpuExec&, const Op& op, int64_t rows, int64_t D, float* partials, const char*) {
    if (flow_cpu_has_avx512())
      flow_reduce_cpu_avx512(op, rows, D, partials);
    else if (flow_cpu_has_avx2())
      flow_reduce_cpu_avx2(op, rows, D, partials);
    else
      flow_reduce_cpu_sse2(op, rows, D, partials);
  }
};

namespace ops {
GK_FLOW_OPS(GK_DEFINE_CPU_ENTRY)
}  // namespace ops

}  // namespace gk
