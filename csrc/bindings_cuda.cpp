// genkernels._cuda: pybind11 definitions only. Same entry points as genkernels._C plus the keyword
// arguments `device` (index) and `stream` (the raw cudaStream_t of the tensor's current stream, as
// an integer). The module links the CUDA runtime statically, so it imports on machines without a
// GPU or a driver; its kernels then raise a RuntimeError naming the kernel and the CUDA error.
#include "common/bind.h"
#include "common/common_launch.h"
#include "conv/conv_args.h"
#include "diffusion/diffusion_args.h"
#include "flow/flow_args.h"
#include "lstm/lstm_args.h"
#include "norm/norm_args.h"
#include "transformer/transformer_args.h"
#include "vae/vae_args.h"

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "genkernels CUDA kernels over the math shared with the C++ CPU kernels";
  m.def("device_count", &gk::device_count, "CUDA devices visible to the module (0 without a driver)");
  GK_COMMON_OPS(GK_BIND_CUDA)
  GK_DIFFUSION_OPS(GK_BIND_CUDA)
  GK_VAE_OPS(GK_BIND_CUDA)
  GK_CONV_OPS(GK_BIND_CUDA)
  GK_FLOW_OPS(GK_BIND_CUDA)
  GK_NORM_OPS(GK_BIND_CUDA)
  GK_TRANSFORMER_OPS(GK_BIND_CUDA)
  GK_LSTM_OPS(GK_BIND_CUDA)
  // --- further families add their GK_<FAMILY>_OPS(GK_BIND_CUDA) line above this one ---
}
