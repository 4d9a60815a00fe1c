// CUDA entry points of the VAE ops: the shared bodies launched on the given stream.
#include "common/per_sample_cuda.cuh"
#include "vae/vae_launch.h"

namespace gk::ops {
GK_VAE_OPS(GK_DEFINE_CUDA_ENTRY)
}  // namespace gk::ops
