// CUDA entry points of what belongs to no family (common/common_launch.h).
#include "common/common_launch.h"
#include "common/per_sample_cuda.cuh"

namespace gk {

int device_count() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) { cudaGetLastError(); return 0; }
  check_cuda(err, "cudaGetDeviceCount");
  return count;
}

namespace ops {
GK_COMMON_OPS(GK_DEFINE_CUDA_ENTRY)
}  // namespace ops

}  // namespace gk
