// C++ CPU entry points of what belongs to no family (common/common_launch.h).
#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/common_launch.h"
#include "common/per_sample_cpu.h"

namespace gk {

int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

namespace ops {
GK_COMMON_OPS(GK_DEFINE_CPU_ENTRY)
}  // namespace ops

}  // namespace gk
