// Host bodies of the normalisation ops, one `run` per op (entry points per common/entry.h,
// arguments in norm_args.h). Each builds the functor for the runtime dtype and activation and hands
// it to NormLoops<Exec>, the executor's loops: OpenMP in norm_cpu.cpp, CUDA kernels on the given
// stream in norm_cuda.cu.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/dispatch.h"
#include "common/dtype.h"
#include "norm/adaln.h"
#include "norm/group_norm_act.h"
#include "norm/norm_args.h"

namespace gk {

// group_forward(exec, op), group_backward(exec, op), adaln_forward(exec, op), adaln_backward(exec, op)
template <class Exec>
struct NormLoops;

template <class Body>
void dispatch_norm_act(int act, const char* op, Body&& body) {
  dispatch_code<kNormActNone, kNormActSilu>(act, op, "act", "0 (none) or 1 (silu)", body);
}

inline void check_groups(int64_t C, int64_t G, const char* op) {
  if (G < 1 || C % G)
    throw std::invalid_argument(std::string(op) + ": G must be >= 1 and divide C, got C=" + std::to_string(C) +
                                ", G=" + std::to_string(G));
}

namespace ops::group_norm_act {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  check_groups(a.C, a.G, "group_norm_act");
  if (a.N * a.C * a.inner == 0) return;
  GK_DISPATCH_DTYPE(a.dtype, "group_norm_act", [&] {
    dispatch_norm_act(a.act, "group_norm_act", [&](auto act) {
      NormLoops<Exec>::group_forward(exec, GroupNormActForward<scalar_t, decltype(act)::value>(a));
    });
  });
}
}  // namespace ops::group_norm_act

namespace ops::group_norm_act_backward {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  check_groups(a.C, a.G, "group_norm_act_backward");
  if (a.N * a.C * a.inner == 0) return;
  GK_DISPATCH_DTYPE(a.dtype, "group_norm_act_backward", [&] {
    dispatch_norm_act(a.act, "group_norm_act_backward", [&](auto act) {
      NormLoops<Exec>::group_backward(exec, GroupNormActBackward<scalar_t, decltype(act)::value>(a));
    });
  });
}
}  // namespace ops::group_norm_act_backward

namespace ops::adaln_modulate {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  if (a.N * a.L * a.D == 0) return;
  GK_DISPATCH_DTYPE(a.dtype, "adaln_modulate",
                    [&] { NormLoops<Exec>::adaln_forward(exec, AdaLNForward<scalar_t>(a)); });
}
}  // namespace ops::adaln_modulate

namespace ops::adaln_modulate_backward {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  if (a.N * a.L * a.D == 0) return;
  GK_DISPATCH_DTYPE(a.dtype, "adaln_modulate_backward",
                    [&] { NormLoops<Exec>::adaln_backward(exec, AdaLNBackward<scalar_t>(a)); });
}
}  // namespace ops::adaln_modulate_backward

}  // namespace gk
