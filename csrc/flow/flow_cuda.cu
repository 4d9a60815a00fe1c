// CUDA entry points of the normalizing-flow ops: the shared bodies launched on the given stream.
#include "common/per_sample_cuda.cuh"
#include "flow/flow_launch.h"

namespace gk::ops {
GK_FLOW_OPS(GK_DEFINE_CUDA_ENTRY)
}  // namespace gk::ops
