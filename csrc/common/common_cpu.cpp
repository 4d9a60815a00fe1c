#ifdef _OPENMP
#include <omp.h>
#endif

#include "diffusion/diffusion_launch.h"

namespace gk {

int cpu_num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace gk
