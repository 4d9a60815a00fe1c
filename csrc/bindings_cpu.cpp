// genkernels._C: pybind11 definitions only. Entry points take data pointers (uintptr_t), sizes and
// a dtype code, as keyword-only arguments named in each family's *_args.h (see common/entry.h);
// they never see a torch tensor, so the build needs no libtorch.
#include "common/bind.h"
#include "common/common_launch.h"
#include "conv/conv_args.h"
#include "diffusion/diffusion_args.h"
#include "flow/flow_args.h"
#include "lstm/lstm_args.h"
#include "norm/norm_args.h"
#include "transformer/transformer_args.h"
#include "vae/vae_args.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "genkernels C++ CPU kernels (OpenMP) over the math shared with the CUDA kernels";
  m.def("num_threads", &gk::num_threads, "OpenMP threads the kernels use");
  GK_COMMON_OPS(GK_BIND_CPU)
  GK_DIFFUSION_OPS(GK_BIND_CPU)
  GK_VAE_OPS(GK_BIND_CPU)
  GK_CONV_OPS(GK_BIND_CPU)
  GK_FLOW_OPS(GK_BIND_CPU)
  GK_NORM_OPS(GK_BIND_CPU)
  GK_TRANSFORMER_OPS(GK_BIND_CPU)
  GK_LSTM_OPS(GK_BIND_CPU)
  // --- further families add their GK_<FAMILY>_OPS(GK_BIND_CPU) line above this one ---
}
