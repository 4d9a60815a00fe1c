// CUDA entry points of the convolution-family ops: the shared bodies launched on the given stream.
#include "common/per_sample_cuda.cuh"
#include "conv/conv_launch.h"

namespace gk::ops {
GK_CONV_OPS(GK_DEFINE_CUDA_ENTRY)
}  // namespace gk::ops
