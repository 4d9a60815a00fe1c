// Host bodies of the convolution-family ops, one `run` per op (entry points per common/entry.h,
// arguments in conv_args.h). Each builds the functor for the runtime dtype and hands it to an
// executor: CpuExec (OpenMP) in conv_cpu.cpp, CudaExec (the given stream) in conv_cuda.cu.
#pragma once
#include <cstdint>
#include <type_traits>

#include "common/dtype.h"
#include "conv/conv_args.h"
#include "conv/gated_activation.h"

namespace gk {

struct CpuExec;  // common/per_sample_cpu.h

// Row layout (outer * C rows of `inner`, see gated_activation.h) or flat (outer rows of C * inner):
// on the CPU rows of 16 or more vectorise; a CUDA block covers kChunk elements of one row, so
// there only rows that fill a block.
template <class Exec>
bool gated_rows(int64_t inner) {
  return inner >= (std::is_same<Exec, CpuExec>::value ? kGatedRowMin : kChunk);
}

namespace ops::gated_activation {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  GK_DISPATCH_DTYPE(a.dtype, "gated_activation", [&] {
    if (gated_rows<Exec>(a.inner))
      exec.apply(GatedActivationForwardRows<scalar_t>(a), a.outer * a.C, a.inner, "gated_activation_fwd");
    else
      exec.apply(GatedActivationForward<scalar_t>(a), a.outer, a.C * a.inner, "gated_activation_fwd");
  });
}
}  // namespace ops::gated_activation

namespace ops::gated_activation_backward {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  GK_DISPATCH_DTYPE(a.dtype, "gated_activation_backward", [&] {
    const int64_t cond_rows = (a.mid ? a.outer / a.mid : 0) * 2 * a.C;
    if (a.cond_partials && !std::is_same<scalar_t, float>::value) {
      exec.reduce(GatedActivationBackwardCond<scalar_t>(a), cond_rows, a.mid * a.inner, as<float>(a.cond_partials),
                  "gated_activation_bwd_cond");
    } else {
      if (gated_rows<Exec>(a.inner))
        exec.apply(GatedActivationBackwardRows<scalar_t>(a), a.outer * a.C, a.inner, "gated_activation_bwd");
      else
        exec.apply(GatedActivationBackward<scalar_t>(a), a.outer, a.C * a.inner, "gated_activation_bwd");
      if (a.cond_partials)  // fp32: sum the grad_x just written (see GatedCondSum)
        exec.reduce(GatedCondSum(a), cond_rows, a.mid * a.inner, as<float>(a.cond_partials),
                    "gated_activation_cond_sum");
    }
  });
}
}  // namespace ops::gated_activation_backward

}  // namespace gk
