// CUDA entry points of the diffusion ops: the shared bodies launched on the given stream.
#include "common/per_sample_cuda.cuh"
#include "diffusion/diffusion_launch.h"

namespace gk {
int cuda_device_count() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) { cudaGetLastError(); return 0; }
  check_cuda(err, "cudaGetDeviceCount");
  return count;
}

void philox_normal_cuda(uintptr_t out, int64_t N, int64_t D, uint64_t seed, uint64_t offset, int dtype, int device, uintptr_t stream) {
  philox_normal_impl(CudaExec{device, stream}, out, N, D, seed, offset, dtype);
}

void q_sample_cuda(uintptr_t x0, uintptr_t noise, uintptr_t t, int64_t t_scalar, uintptr_t table, int64_t T,
                  uintptr_t x_t, uintptr_t velocity, int64_t N, int64_t D, int dtype, int device, uintptr_t stream) {
  q_sample_impl(CudaExec{device, stream}, x0, noise, t, t_scalar, table, T, x_t, velocity, N, D, dtype);
}

void q_sample_backward_cuda(uintptr_t grad_x_t, uintptr_t grad_velocity, uintptr_t t, int64_t t_scalar,
                           uintptr_t table, int64_t T, uintptr_t grad_x0, uintptr_t grad_noise, int64_t N,
                           int64_t D, int dtype, int device, uintptr_t stream) {
  q_sample_backward_impl(CudaExec{device, stream}, grad_x_t, grad_velocity, t, t_scalar, table, T, grad_x0, grad_noise, N, D, dtype);
}

void diffusion_sse_cuda(uintptr_t model_output, uintptr_t x0, uintptr_t noise, uintptr_t t, int64_t t_scalar,
                       uintptr_t table, int64_t T, int prediction, uintptr_t partials, int64_t N, int64_t D,
                       int dtype, int device, uintptr_t stream) {
  diffusion_sse_impl(CudaExec{device, stream}, model_output, x0, noise, t, t_scalar, table, T, prediction, partials, N, D, dtype);
}

void diffusion_sse_backward_cuda(uintptr_t grad_sse, uintptr_t model_output, uintptr_t x0, uintptr_t noise,
                                uintptr_t t, int64_t t_scalar, uintptr_t table, int64_t T, int prediction,
                                uintptr_t grad_output, uintptr_t grad_x0, uintptr_t grad_noise, int64_t N,
                                int64_t D, int dtype, int device, uintptr_t stream) {
  diffusion_sse_backward_impl(CudaExec{device, stream}, grad_sse, model_output, x0, noise, t, t_scalar, table, T, prediction,
                              grad_output, grad_x0, grad_noise, N, D, dtype);
}

void sampler_step_cuda(int kind, int prediction, uintptr_t model_output, uintptr_t model_output_uncond,
                      uintptr_t x_t, uintptr_t out, uintptr_t t, int64_t t_scalar, uintptr_t t_prev,
                      int64_t t_prev_scalar, uintptr_t table, int64_t T, double guidance, double clip,
                      double eta, bool large_variance, uint64_t seed, uint64_t offset, int64_t N, int64_t D,
                      int dtype, int device, uintptr_t stream) {
  sampler_step_impl(CudaExec{device, stream}, kind, prediction, model_output, model_output_uncond, x_t, out, t, t_scalar, t_prev,
                    t_prev_scalar, table, T, guidance, clip, eta, large_variance, seed, offset, N, D, dtype);
}

void sampler_step_backward_cuda(int kind, int prediction, uintptr_t grad, uintptr_t model_output,
                               uintptr_t model_output_uncond, uintptr_t x_t, uintptr_t grad_output,
                               uintptr_t grad_output_uncond, uintptr_t grad_x_t, uintptr_t t, int64_t t_scalar,
                               uintptr_t t_prev, int64_t t_prev_scalar, uintptr_t table, int64_t T,
                               double guidance, double clip, double eta, bool large_variance, int64_t N,
                               int64_t D, int dtype, int device, uintptr_t stream) {
  sampler_step_backward_impl(CudaExec{device, stream}, kind, prediction, grad, model_output, model_output_uncond, x_t, grad_output,
                             grad_output_uncond, grad_x_t, t, t_scalar, t_prev, t_prev_scalar, table, T, guidance,
                             clip, eta, large_variance, N, D, dtype);
}

}  // namespace gk
