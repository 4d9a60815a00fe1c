// C++ CPU entry points of the normalizing-flow ops: the shared bodies run by OpenMP loops.
#include <algorithm>

#include "common/per_sample_cpu.h"
#include "flow/flow_launch.h"

namespace gk {

// per_sample_reduce_cpu with the terms of a chunk first written to a local buffer: that loop has no
// reduction in it, so it vectorises like an elementwise one (the terms also store outputs), and
// the buffer is then summed exactly as per_sample_reduce_cpu sums (four double accumulators, the
// same order), so the partials are bit-identical to it.
template <class Op>
void per_sample_reduce_buffered_cpu(const Op& op, int64_t N, int64_t D, float* partials) {
  const int64_t chunks = num_chunks(D), units = N * chunks;
#pragma omp parallel for schedule(static) if (units > 1 && N * D > 32768)
  for (int64_t u = 0; u < units; ++u) {
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
    partials[u] = static_cast<float>((acc[0] + acc[1]) + (acc[2] + acc[3]));
  }
}

// per_sample_apply_cpu with `ivdep`: every flow functor reads its inputs and writes distinct,
// freshly allocated outputs, so iterations are independent; without the hint GCC gives up on loops
// with more than 10 input/output pairs to check for overlap at run time (the backward's 4 x 4).
template <class Op>
void per_sample_apply_ivdep_cpu(const Op& op, int64_t N, int64_t D) {
  const int64_t chunks = num_chunks(D), units = N * chunks;
#pragma omp parallel for schedule(static) if (units > 1 && N * D > 32768)
  for (int64_t u = 0; u < units; ++u) {
    const int64_t n = u / chunks, begin = (u % chunks) * kChunk, end = std::min(D, begin + kChunk);
    const auto state = op.begin(n);
#pragma GCC ivdep
    for (int64_t i = begin; i < end; ++i) op.apply(state, n, i);
  }
}

template <>
struct FlowApplier<CpuExec> {
  template <class Op>
  static void run(const CpuExec&, const Op& op, int64_t rows, int64_t D, const char*) {
    per_sample_apply_ivdep_cpu(op, rows, D);
  }
};

template <>
struct FlowReducer<CpuExec> {
  template <class Op>
  static void run(const CpuExec&, const Op& op, int64_t rows, int64_t D, float* partials, const char*) {
    per_sample_reduce_buffered_cpu(op, rows, D, partials);
  }
};

namespace ops {
GK_FLOW_OPS(GK_DEFINE_CPU_ENTRY)
}  // namespace ops

}  // namespace gk
