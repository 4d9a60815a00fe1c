// genkernels._cuda: pybind11 definitions only. Same launchers as genkernels._C plus the device
// index and the raw cudaStream_t (as an integer) of the tensor's current stream. The module links
// the CUDA runtime statically, so it imports on machines without a GPU or a driver; its functions
// then raise a RuntimeError naming the kernel and the CUDA error.
#include <pybind11/pybind11.h>

#include "diffusion/diffusion_launch.h"
#include "vae/vae_launch.h"

namespace py = pybind11;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "genkernels CUDA kernels over the math shared with the C++ CPU kernels";
  m.def("device_count", &gk::cuda_device_count, "CUDA devices visible to the module (0 without a driver)");
  // diffusion
  m.def("philox_normal", &gk::philox_normal_cuda);
  m.def("q_sample", &gk::q_sample_cuda);
  m.def("q_sample_backward", &gk::q_sample_backward_cuda);
  m.def("diffusion_sse", &gk::diffusion_sse_cuda);
  m.def("diffusion_sse_backward", &gk::diffusion_sse_backward_cuda);
  m.def("sampler_step", &gk::sampler_step_cuda);
  m.def("sampler_step_backward", &gk::sampler_step_backward_cuda);
  // --- further families append their m.def lines below this line ---
  // vae
  m.def("reparam_kl", &gk::reparam_kl_cuda);
  m.def("reparam_kl_backward", &gk::reparam_kl_backward_cuda);
}
