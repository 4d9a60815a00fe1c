// CUDA entry points of the LSTM cell ops: one block per batch row (grid-stride over rows), the
// row's elements spread over the block's threads; row sums reduce each thread's strided partial
// with warp shuffles and add the warp sums in a fixed order (deterministic); the row's fp32
// scratch (kScratch * H values) lives in dynamic shared memory.
#include "common/per_sample_cuda.cuh"
#include "lstm/lstm_launch.h"

namespace gk {

struct LstmCudaRow {
  float* scratch;
  float* red;  // 32 floats of shared memory
  template <class F>
  __device__ __forceinline__ void each(int64_t n, const F& f) const {
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) f(j);
    __syncthreads();
  }
  template <class F>
  __device__ __forceinline__ float sum(int64_t n, const F& f) const {
    float acc = 0.f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) acc += f(j);
    for (int s = 16; s > 0; s >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, s);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = acc;
    __syncthreads();
    float total = 0.f;
    const int warps = static_cast<int>(blockDim.x >> 5);
    for (int w = 0; w < warps; ++w) total += red[w];
    __syncthreads();
    return total;
  }
};

template <class Op>
__global__ void __launch_bounds__(256) lstm_rows_kernel(Op op, int64_t B) {
  extern __shared__ float lstm_scratch[];
  __shared__ float red[32];
  const LstmCudaRow row{lstm_scratch, red};
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    op.row(row, b);
    __syncthreads();
  }
}

template <>
struct LstmLoops<CudaExec> {
  template <class Op>
  static void rows(const CudaExec& exec, const Op& op, int64_t B, int64_t H, const char* name) {
    const size_t bytes = static_cast<size_t>(Op::kScratch) * static_cast<size_t>(H) * sizeof(float);
    if (bytes > 48 * 1024)
      throw std::invalid_argument(std::string(name) + ": the CUDA kernel keeps " + std::to_string(Op::kScratch) +
                                  " * H floats of a row in shared memory (at most 48 KiB), got H=" + std::to_string(H));
    DeviceGuard guard(exec.device);
    const int threads = H <= 64 ? 64 : (H <= 128 ? 128 : 256);
    lstm_rows_kernel<<<grid_for(B), threads, bytes, reinterpret_cast<cudaStream_t>(exec.stream)>>>(op, B);
    check_launch(name);
  }
};

namespace ops {
GK_LSTM_OPS(GK_DEFINE_CUDA_ENTRY)
}  // namespace ops

}  // namespace gk
