// CUDA kernels over (sample, chunk) work units: one block of 256 threads per unit of kChunk
// elements; each thread takes 4 runs of 4 consecutive elements (so a Philox call serves 4
// elements and a warp touches contiguous memory). 64-bit indices throughout.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/macros.h"

namespace gk {

constexpr int kThreads = 256;
static_assert(kChunk == kThreads * 16, "a block covers one chunk");

inline int64_t num_chunks(int64_t D) { return (D + kChunk - 1) / kChunk; }

template <class Op>
__global__ void __launch_bounds__(kThreads) per_sample_apply_kernel(Op op, int64_t N, int64_t D, int64_t chunks) {
  for (int64_t u = blockIdx.x; u < N * chunks; u += gridDim.x) {
    const int64_t n = u / chunks, base = (u % chunks) * kChunk;
    auto state = op.begin(n);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t i = base + k * (kThreads * 4) + threadIdx.x * 4 + j;
        if (i < D) op.apply(state, n, i);
      }
    }
  }
}

template <class Op>
__global__ void __launch_bounds__(kThreads) per_sample_reduce_kernel(Op op, int64_t N, int64_t D, int64_t chunks, float* partials) {
  __shared__ float warp_sums[kThreads / 32];
  for (int64_t u = blockIdx.x; u < N * chunks; u += gridDim.x) {
    const int64_t n = u / chunks, base = (u % chunks) * kChunk;
    auto state = op.begin(n);
    float acc = 0.f;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t i = base + k * (kThreads * 4) + threadIdx.x * 4 + j;
        if (i < D) acc += op.term(state, n, i);
      }
    }
    for (int s = 16; s > 0; s >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, s);
    if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = acc;
    __syncthreads();
    if (threadIdx.x < 32) {
      float v = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : 0.f;
      for (int s = 16; s > 0; s >>= 1) v += __shfl_xor_sync(0xffffffffu, v, s);
      if (threadIdx.x == 0) partials[u] = v;
    }
    __syncthreads();
  }
}

inline unsigned grid_for(int64_t units) {
  const int64_t cap = 1 << 30;
  return static_cast<unsigned>(units < cap ? units : cap);
}

// Raise (as a Python RuntimeError via pybind11) if the launch failed, naming the kernel.
inline void check_launch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("genkernels CUDA kernel ") + kernel + " failed: " + cudaGetErrorString(err));
}

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("genkernels: ") + what + ": " + cudaGetErrorString(err));
}

// Makes `device` current for the launch and restores the caller's device afterwards.
struct DeviceGuard {
  int previous = -1;
  explicit DeviceGuard(int device) {
    check_cuda(cudaGetDevice(&previous), "cudaGetDevice");
    if (previous != device) check_cuda(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() { if (previous >= 0) cudaSetDevice(previous); }
};

template <class Op>
void per_sample_apply_cuda(const Op& op, int64_t N, int64_t D, int device, uintptr_t stream, const char* name) {
  if (N == 0 || D == 0) return;
  DeviceGuard guard(device);
  const int64_t chunks = num_chunks(D);
  per_sample_apply_kernel<<<grid_for(N * chunks), kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(op, N, D, chunks);
  check_launch(name);
}

template <class Op>
void per_sample_reduce_cuda(const Op& op, int64_t N, int64_t D, float* partials, int device, uintptr_t stream, const char* name) {
  if (N == 0 || D == 0) return;
  DeviceGuard guard(device);
  const int64_t chunks = num_chunks(D);
  per_sample_reduce_kernel<<<grid_for(N * chunks), kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(op, N, D, chunks, partials);
  check_launch(name);
}

// Executor handed to the shared launcher bodies: launches on `stream` of `device`.
struct CudaExec {
  int device;
  uintptr_t stream;
  template <class Op> void apply(const Op& op, int64_t N, int64_t D, const char* name) const {
    per_sample_apply_cuda(op, N, D, device, stream, name);
  }
  template <class Op> void reduce(const Op& op, int64_t N, int64_t D, float* partials, const char* name) const {
    per_sample_reduce_cuda(op, N, D, partials, device, stream, name);
  }
};

}  // namespace gk
