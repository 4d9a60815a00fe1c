// C++ CPU entry points of the normalizing-flow ops: the shared bodies run by OpenMP loops.
#include "common/per_sample_cpu.h"
#include "flow/flow_launch.h"

namespace gk::ops {
GK_FLOW_OPS(GK_DEFINE_CPU_ENTRY)
}  // namespace gk::ops
