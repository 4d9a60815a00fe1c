// CUDA entry points of the diffusion ops: the shared bodies launched on the given stream.
#include "common/per_sample_cuda.cuh"
#include "diffusion/diffusion_launch.h"

namespace gk::ops {
GK_DIFFUSION_OPS(GK_DEFINE_CUDA_ENTRY)
}  // namespace gk::ops
