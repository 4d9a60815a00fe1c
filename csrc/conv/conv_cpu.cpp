// C++ CPU entry points of the convolution-family ops: the shared bodies run by OpenMP loops.
#include "common/per_sample_cpu.h"
#include "conv/conv_launch.h"

namespace gk::ops {
GK_CONV_OPS(GK_DEFINE_CPU_ENTRY)
}  // namespace gk::ops
