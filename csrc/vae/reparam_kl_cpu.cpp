// C++ CPU entry points of the VAE ops: the shared bodies run by OpenMP loops.
#include "common/per_sample_cpu.h"
#include "vae/vae_launch.h"

namespace gk::ops {
GK_VAE_OPS(GK_DEFINE_CPU_ENTRY)
}  // namespace gk::ops
