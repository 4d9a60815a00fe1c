// OpenMP loops over (sample, chunk) work units, shared by every per-sample elementwise op.
// An Op provides:  State begin(int64_t n) const;  and either
//                  void apply(State&, int64_t n, int64_t i) const            (elementwise), or
//                  float term(State&, int64_t n, int64_t i) const            (reduction).
#pragma once
#include <algorithm>
#include <cstdint>

#include "common/macros.h"

namespace gk {

inline int64_t num_chunks(int64_t D) { return (D + kChunk - 1) / kChunk; }

template <class Op>
void per_sample_apply_cpu(const Op& op, int64_t N, int64_t D) {
  const int64_t chunks = num_chunks(D), units = N * chunks;
#pragma omp parallel for schedule(static) if (units > 1 && N * D > 32768)
  for (int64_t u = 0; u < units; ++u) {
    const int64_t n = u / chunks, begin = (u % chunks) * kChunk, end = std::min(D, begin + kChunk);
    auto state = op.begin(n);
    for (int64_t i = begin; i < end; ++i) op.apply(state, n, i);
  }
}

// partials[u] = sum of op.term over unit u (double accumulation; same unit split as CUDA).
template <class Op>
void per_sample_reduce_cpu(const Op& op, int64_t N, int64_t D, float* partials) {
  const int64_t chunks = num_chunks(D), units = N * chunks;
#pragma omp parallel for schedule(static) if (units > 1 && N * D > 32768)
  for (int64_t u = 0; u < units; ++u) {
    const int64_t n = u / chunks, begin = (u % chunks) * kChunk, end = std::min(D, begin + kChunk);
    auto state = op.begin(n);
    // Four independent double accumulators: breaks the add dependency chain (the compiler may not
    // reassociate FP adds itself) while keeping a fixed, thread-count-independent order.
    double acc[4] = {0.0, 0.0, 0.0, 0.0};
    int64_t i = begin;
    for (; i + 4 <= end; i += 4) {
      acc[0] += op.term(state, n, i);
      acc[1] += op.term(state, n, i + 1);
      acc[2] += op.term(state, n, i + 2);
      acc[3] += op.term(state, n, i + 3);
    }
    for (; i < end; ++i) acc[0] += op.term(state, n, i);
    partials[u] = static_cast<float>((acc[0] + acc[1]) + (acc[2] + acc[3]));
  }
}

// Executor handed to the shared launcher bodies (e.g. csrc/diffusion/diffusion_launch.h).
struct CpuExec {
  template <class Op> void apply(const Op& op, int64_t N, int64_t D, const char*) const {
    per_sample_apply_cpu(op, N, D);
  }
  template <class Op> void reduce(const Op& op, int64_t N, int64_t D, float* partials, const char*) const {
    per_sample_reduce_cpu(op, N, D, partials);
  }
};

}  // namespace gk
