// Portability macros: the same function compiles for the host (C++ CPU kernels) and the device.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define GK_HD __host__ __device__ __forceinline__
#define GK_DEVICE_CODE 1
#else
#define GK_HD inline
#define GK_DEVICE_CODE 0
#endif

namespace gk {

// Elements one (sample, chunk) work unit covers: one CUDA block (256 threads x 16) and one
// OpenMP task. Shared by both builds so reductions split identically on CPU and GPU.
constexpr int64_t kChunk = 4096;

}  // namespace gk
