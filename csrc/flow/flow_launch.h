// Host bodies of the normalizing-flow ops, one `run` per op (entry points per common/entry.h,
// arguments in flow_args.h). Each builds the functor for the runtime dtype and codes and hands it
// to an executor: CpuExec (OpenMP) in flow_cpu.cpp, CudaExec (the given stream) in flow_cuda.cu.
#pragma once
#include <cstdint>
#include <type_traits>

#include "common/dispatch.h"
#include "common/dtype.h"
#include "flow/actnorm.h"
#include "flow/affine_coupling.h"
#include "flow/flow_args.h"
#include "flow/rq_spline.h"

namespace gk {

struct CpuExec;  // common/per_sample_cpu.h

// Runtime mask / form / direction of a coupling call -> compile-time constants for
// body(mask, form, inverse); the form is kAdditive when log_scale is absent.
template <class Args, class Body>
void dispatch_coupling(const Args& a, const char* op, Body&& body) {
  dispatch_code<kChannelMask, kCheckerboardMask>(a.mask, op, "mask", "0 (channel) or 1 (checkerboard)", [&](auto mask) {
    dispatch_code<kTanhForm, kSigmoidForm, kAdditive>(
        a.log_scale ? a.form : static_cast<int>(kAdditive), op, "form", "0 (tanh) or 1 (sigmoid)", [&](auto form) {
          if (a.inverse)
            body(mask, form, std::true_type{});
          else
            body(mask, form, std::false_type{});
        });
  });
}

// Per-(row, chunk) partial sums of an op's terms: exec.reduce, except on the CPU, where
// flow_cpu.cpp specialises it to a loop whose terms vectorise (same sums, same order).
template <class Exec>
struct FlowReducer {
  template <class Op>
  static void run(const Exec& exec, const Op& op, int64_t rows, int64_t D, float* partials, const char* name) {
    exec.reduce(op, rows, D, partials, name);
  }
};

// Elementwise loops: exec.apply, except on the CPU (flow_cpu.cpp: the same loop, told that its
// iterations are independent, so it vectorises without runtime alias checks).
template <class Exec>
struct FlowApplier {
  template <class Op>
  static void run(const Exec& exec, const Op& op, int64_t rows, int64_t D, const char* name) {
    exec.apply(op, rows, D, name);
  }
};

template <class Body>
void dispatch_inverse(bool inverse, Body&& body) {
  if (inverse)
    body(std::true_type{});
  else
    body(std::false_type{});
}

namespace ops::affine_coupling {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  GK_DISPATCH_DTYPE(a.dtype, "affine_coupling", [&] {
    dispatch_coupling(a, "affine_coupling", [&](auto mask, auto form, auto inverse) {
      const AffineCouplingForward<scalar_t, decltype(mask)::value, decltype(form)::value, decltype(inverse)::value> op(a);
      const int64_t count = op.L.template count<decltype(mask)::value>();
      if (a.logdet_partials && decltype(form)::value != kAdditive)
        FlowReducer<Exec>::run(exec, op, a.N, count, as<float>(a.logdet_partials), "affine_coupling_fwd");
      else
        FlowApplier<Exec>::run(exec, op, a.N, count, "affine_coupling_fwd");
    });
  });
}
}  // namespace ops::affine_coupling

namespace ops::affine_coupling_backward {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  GK_DISPATCH_DTYPE(a.dtype, "affine_coupling_backward", [&] {
    dispatch_coupling(a, "affine_coupling_backward", [&](auto mask, auto form, auto inverse) {
      const AffineCouplingBackward<scalar_t, decltype(mask)::value, decltype(form)::value, decltype(inverse)::value> op(a);
      FlowApplier<Exec>::run(exec, op, a.N, op.L.template count<decltype(mask)::value>(), "affine_coupling_bwd");
    });
  });
}
}  // namespace ops::affine_coupling_backward

namespace ops::actnorm {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  GK_DISPATCH_DTYPE(a.dtype, "actnorm", [&] {
    dispatch_inverse(a.inverse, [&](auto inverse) {
      constexpr bool kInverse = decltype(inverse)::value;
      // a CUDA block covers kChunk elements of one row, so there only rows that fill a block
      const int64_t row_min = std::is_same<Exec, CpuExec>::value ? kActNormRowMin : kChunk;
      if (a.inner >= row_min)
        FlowApplier<Exec>::run(exec, ActNormForwardRows<scalar_t, kInverse>(a), a.N * a.C, a.inner, "actnorm_fwd");
      else
        FlowApplier<Exec>::run(exec, ActNormForward<scalar_t, kInverse>(a), a.N, a.C * a.inner, "actnorm_fwd");
    });
  });
}
}  // namespace ops::actnorm

namespace ops::actnorm_backward {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  GK_DISPATCH_DTYPE(a.dtype, "actnorm_backward", [&] {
    dispatch_inverse(a.inverse, [&](auto inverse) {
      constexpr bool kInverse = decltype(inverse)::value;
      // the same split on CPU and GPU, so both add the same partial sums in the same order; the
      // bias rows (H = 0, which also store grad_x) fill the first half of the partials
      float* partials = as<float>(a.partials);
      if (actnorm_backward_rows(a.inner)) {
        const int64_t rows = a.C * a.N, half = rows * num_chunks(a.inner);
        FlowReducer<Exec>::run(exec, ActNormBackwardRows<scalar_t, kInverse, 0>(a), rows, a.inner, partials,
                               "actnorm_bwd_bias");
        FlowReducer<Exec>::run(exec, ActNormBackwardRows<scalar_t, kInverse, 1>(a), rows, a.inner, partials + half,
                               "actnorm_bwd_log_scale");
      } else {
        const int64_t half = a.C * num_chunks(a.N * a.inner);
        FlowReducer<Exec>::run(exec, ActNormBackward<scalar_t, kInverse, 0>(a), a.C, a.N * a.inner, partials,
                               "actnorm_bwd_bias");
        FlowReducer<Exec>::run(exec, ActNormBackward<scalar_t, kInverse, 1>(a), a.C, a.N * a.inner,
                               partials + half, "actnorm_bwd_log_scale");
      }
    });
  });
}
}  // namespace ops::actnorm_backward

namespace ops::rq_spline {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  if (a.K < 1) throw std::invalid_argument("rq_spline: K must be >= 1, got " + std::to_string(a.K));
  GK_DISPATCH_DTYPE(a.dtype, "rq_spline", [&] {
    exec.reduce(RqSplineForward<scalar_t>(a), a.N, a.D, as<float>(a.logdet_partials), "rq_spline_fwd");
  });
}
}  // namespace ops::rq_spline

namespace ops::rq_spline_backward {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  if (a.K < 1) throw std::invalid_argument("rq_spline_backward: K must be >= 1, got " + std::to_string(a.K));
  GK_DISPATCH_DTYPE(a.dtype, "rq_spline_backward",
                    [&] { exec.apply(RqSplineBackward<scalar_t>(a), a.N, a.D, "rq_spline_bwd"); });
}
}  // namespace ops::rq_spline_backward

}  // namespace gk
