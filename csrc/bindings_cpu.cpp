// genkernels._C: pybind11 definitions only. Launchers take data pointers (uintptr_t), sizes and
// a dtype code; they never see a torch tensor, so the build needs no libtorch.
#include <pybind11/pybind11.h>

#include "diffusion/diffusion_launch.h"
#include "vae/vae_launch.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "genkernels C++ CPU kernels (OpenMP) over the math shared with the CUDA kernels";
  m.def("num_threads", &gk::cpu_num_threads, "OpenMP threads the kernels use");
  // diffusion
  m.def("q_sample", &gk::q_sample_cpu);
  m.def("q_sample_backward", &gk::q_sample_backward_cpu);
  m.def("diffusion_sse", &gk::diffusion_sse_cpu);
  m.def("diffusion_sse_backward", &gk::diffusion_sse_backward_cpu);
  m.def("sampler_step", &gk::sampler_step_cpu);
  m.def("sampler_step_backward", &gk::sampler_step_backward_cpu);
  m.def("philox_normal", &gk::philox_normal_cpu);
  // --- further families append their m.def lines below this line ---
  // vae
  m.def("reparam_kl", &gk::reparam_kl_cpu);
  m.def("reparam_kl_backward", &gk::reparam_kl_backward_cpu);
}
