// C++ CPU entry points of the LSTM cell ops: the row functors of lstm_math.h in an OpenMP loop over
// batch rows (one row per iteration; rows are independent, so results do not depend on the thread
// count). Row sums run in kLstmLanes fp32 lanes combined pairwise (a fixed order that vectorises);
// elementwise loops carry `ivdep` (every output is a distinct buffer). As in flow_cpu.cpp the loop
// is compiled for SSE2, AVX2 and AVX-512 (+FMA) and the widest the CPU has is chosen at run time.
#include <algorithm>
#include <vector>

#include "common/per_sample_cpu.h"
#include "lstm/lstm_launch.h"

namespace gk {

constexpr int kLstmLanes = 16;

struct LstmCpuRow {
  float* scratch;
  template <class F>
  __attribute__((always_inline)) inline void each(int64_t n, const F& f) const {
#pragma GCC ivdep
    for (int64_t j = 0; j < n; ++j) f(j);
  }
  template <class F>
  __attribute__((always_inline)) inline float sum(int64_t n, const F& f) const {
    float acc[kLstmLanes] = {};
    int64_t i = 0;
    for (; i + kLstmLanes <= n; i += kLstmLanes) {
#pragma GCC unroll 16
      for (int j = 0; j < kLstmLanes; ++j) acc[j] += f(i + j);
    }
    for (int j = 0; i + j < n; ++j) acc[j] += f(i + j);
    for (int w = kLstmLanes / 2; w > 0; w /= 2)
      for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
    return acc[0];
  }
};

// One row in a function of its own that inlines everything it calls (`flatten`): the shared
// activations (conv/gated_activation.h) are plain `inline`, and GCC's inliner otherwise leaves
// them as calls in the longer backward rows, which keeps those loops scalar (10x slower).
#define GK_LSTM_CPU_LOOP(ATTRIBUTE, SUFFIX)                                                        \
  template <class Op>                                                                              \
  ATTRIBUTE __attribute__((flatten, noinline)) void lstm_row_cpu_##SUFFIX(const Op& op,            \
                                                                         const LstmCpuRow& row,    \
                                                                         int64_t b) {              \
    op.row(row, b);                                                                                \
  }                                                                                                \
  template <class Op>                                                                              \
  ATTRIBUTE void lstm_rows_cpu_##SUFFIX(const Op& op, int64_t B, int64_t H) {                      \
    const int64_t per_row = static_cast<int64_t>(Op::kScratch) * H;                               \
    _Pragma("omp parallel if (B > 1 && B * H > 16384)") {                                          \
      std::vector<float> scratch(static_cast<size_t>(std::max<int64_t>(per_row, 1)));              \
      const LstmCpuRow row{scratch.data()};                                                        \
      _Pragma("omp for schedule(static)") for (int64_t b = 0; b < B; ++b)                          \
          lstm_row_cpu_##SUFFIX(op, row, b);                                                       \
    }                                                                                              \
  }

GK_LSTM_CPU_LOOP(, sse2)
GK_LSTM_CPU_LOOP(__attribute__((target("avx2"))), avx2)
GK_LSTM_CPU_LOOP(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma"))), avx512)
#undef GK_LSTM_CPU_LOOP

inline bool lstm_cpu_has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return has;
}

inline bool lstm_cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}

template <>
struct LstmLoops<CpuExec> {
  template <class Op>
  static void rows(const CpuExec&, const Op& op, int64_t B, int64_t H, const char*) {
    if (lstm_cpu_has_avx512())
      lstm_rows_cpu_avx512(op, B, H);
    else if (lstm_cpu_has_avx2())
      lstm_rows_cpu_avx2(op, B, H);
    else
      lstm_rows_cpu_sse2(op, B, H);
  }
};

namespace ops {
GK_LSTM_OPS(GK_DEFINE_CPU_ENTRY)
}  // namespace ops

}  // namespace gk
