// Host bodies of the transformer-block ops, one `run` per op (entry points per common/entry.h,
// arguments in transformer_args.h). Each builds the functor for the runtime dtype and codes; the
// elementwise ones go to TransformerApplier (exec.apply, common/per_sample_*), the row norms to RowNormLoops<Exec>:
// OpenMP in transformer_cpu.cpp, CUDA kernels on the given stream in transformer_cuda.cu.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/dispatch.h"
#include "common/dtype.h"
#include "transformer/glu_act.h"
#include "transformer/rotary.h"
#include "transformer/row_norm.h"
#include "transformer/transformer_args.h"

namespace gk {

// forward(exec, op), backward(exec, op)
template <class Exec>
struct RowNormLoops;

// Elementwise loops: exec.apply, except on the CPU (transformer_cpu.cpp: the same loop told its
// iterations are independent and compiled per instruction set, so it vectorises).
template <class Exec>
struct TransformerApplier {
  template <class Op>
  static void run(const Exec& exec, const Op& op, int64_t rows, int64_t D, const char* name) {
    exec.apply(op, rows, D, name);
  }
};

template <class Body>
void dispatch_rms(bool rms, Body&& body) {
  if (rms)
    body(std::true_type{});
  else
    body(std::false_type{});
}

namespace ops::row_norm {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  if (a.R * a.D == 0) return;
  GK_DISPATCH_DTYPE(a.dtype, "row_norm", [&] {
    dispatch_rms(a.rms, [&](auto rms) {
      RowNormLoops<Exec>::forward(exec, RowNormForward<scalar_t, decltype(rms)::value>(a));
    });
  });
}
}  // namespace ops::row_norm

namespace ops::row_norm_backward {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  if (a.R * a.D == 0) return;
  GK_DISPATCH_DTYPE(a.dtype, "row_norm_backward", [&] {
    dispatch_rms(a.rms, [&](auto rms) {
      RowNormLoops<Exec>::backward(exec, RowNormBackward<scalar_t, decltype(rms)::value>(a));
    });
  });
}
}  // namespace ops::row_norm_backward

namespace ops::glu_act {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  if (a.n == 0) return;
  GK_DISPATCH_DTYPE(a.dtype, "glu_act", [&] {
    dispatch_code<kGluSilu, kGluGeluTanh>(a.act, "glu_act", "act", "0 (silu) or 1 (gelu_tanh)", [&](auto act) {
      constexpr int kAct = decltype(act)::value;
      if (a.b)
        TransformerApplier<Exec>::run(exec, GluActForward<scalar_t, kAct, true>(a), 1, a.n, "glu_act_fwd");
      else
        TransformerApplier<Exec>::run(exec, GluActForward<scalar_t, kAct, false>(a), 1, a.n, "glu_act_fwd");
    });
  });
}
}  // namespace ops::glu_act

namespace ops::glu_act_backward {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  if (a.n == 0) return;
  GK_DISPATCH_DTYPE(a.dtype, "glu_act_backward", [&] {
    dispatch_code<kGluSilu, kGluGeluTanh>(a.act, "glu_act_backward", "act", "0 (silu) or 1 (gelu_tanh)",
                                          [&](auto act) {
      constexpr int kAct = decltype(act)::value;
      if (a.b)
        TransformerApplier<Exec>::run(exec, GluActBackward<scalar_t, kAct, true>(a), 1, a.n, "glu_act_bwd");
      else
        TransformerApplier<Exec>::run(exec, GluActBackward<scalar_t, kAct, false>(a), 1, a.n, "glu_act_bwd");
    });
  });
}
}  // namespace ops::glu_act_backward

namespace ops::rotary {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  if (a.D % 2) throw std::invalid_argument("rotary: D must be even, got " + std::to_string(a.D));
  const int64_t rows = a.N * a.T * a.H;
  if (rows * a.D == 0) return;
  GK_DISPATCH_DTYPE(a.dtype, "rotary",
                    [&] { TransformerApplier<Exec>::run(exec, RotaryOp<scalar_t>(a), rows, a.D / 2, "rotary"); });
}
}  // namespace ops::rotary

}  // namespace gk
