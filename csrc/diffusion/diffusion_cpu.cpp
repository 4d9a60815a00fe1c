// C++ CPU entry points of the diffusion ops: the shared bodies run by OpenMP loops.
#include "common/per_sample_cpu.h"
#include "diffusion/diffusion_launch.h"

namespace gk::ops {
GK_DIFFUSION_OPS(GK_DEFINE_CPU_ENTRY)
}  // namespace gk::ops
