// CUDA entry points of the transformer-block ops. Elementwise ops: common/per_sample_cuda.cuh's
// kernels. Row norms: one warp per row (warp-shuffle sums, fp32); the backward's parameter
// gradients by a thread per (block of kRowBlock rows, column), rows added in order (the CPU
// loop's order), the blocks then added in order by the host. No atomics.
#include "common/per_sample_cuda.cuh"
#include "transformer/transformer_launch.h"

namespace gk {

constexpr int kRowThreads = 256, kRowWarps = kRowThreads / 32;

__device__ __forceinline__ float row_warp_sum(float v) {
  for (int s = 16; s > 0; s >>= 1) v += __shfl_xor_sync(0xffffffffu, v, s);
  return v;
}

template <bool Rms, class Op>
__global__ void __launch_bounds__(kRowThreads) row_norm_forward_kernel(Op op) {
  const int lane = threadIdx.x & 31;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kRowWarps) + (threadIdx.x >> 5); r < op.R;
       r += static_cast<int64_t>(gridDim.x) * kRowWarps) {
    const int64_t base = r * op.D;
    float mean = 0.f, s2 = 0.f;
    if (Rms) {
      for (int64_t d = lane; d < op.D; d += 32) {
        const float v = op.in(base + d);
        s2 += v * v;
      }
    } else {
      float s = 0.f;
      for (int64_t d = lane; d < op.D; d += 32) s += op.in(base + d);
      mean = row_warp_sum(s) / static_cast<float>(op.D);
      for (int64_t d = lane; d < op.D; d += 32) {
        const float v = op.in(base + d) - mean;
        s2 += v * v;
      }
    }
    s2 = row_warp_sum(s2);
    const float rstd = row_norm_rstd(s2 / static_cast<float>(op.D), op.eps);
    if (lane == 0) op.stats_done(r, mean, s2);
    for (int64_t d = lane; d < op.D; d += 32) op.out(base + d, d, mean, rstd);
  }
}

template <bool Rms, class Op>
__global__ void __launch_bounds__(kRowThreads) row_norm_backward_rows_kernel(Op op) {
  const int lane = threadIdx.x & 31;
  const float inv = 1.f / static_cast<float>(op.D);
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kRowWarps) + (threadIdx.x >> 5); r < op.R;
       r += static_cast<int64_t>(gridDim.x) * kRowWarps) {
    const int64_t base = r * op.D;
    const float mean = op.mean(r), rstd = op.rstd(r);
    float a = 0.f, b = 0.f;
    for (int64_t d = lane; d < op.D; d += 32) {
      float g, gx;
      op.terms(base + d, d, mean, rstd, g, gx);
      a += g;
      b += gx;
    }
    const float A = row_warp_sum(a) * inv, B = row_warp_sum(b) * inv;
    for (int64_t d = lane; d < op.D; d += 32) op.out(base + d, d, mean, rstd, A, B);
  }
}

template <class Op>
__global__ void __launch_bounds__(kRowThreads) row_norm_backward_columns_kernel(Op op) {
  const int64_t total = op.blocks * op.D;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(kRowThreads) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * kRowThreads) {
    const int64_t d = t % op.D, blk = t / op.D, r0 = blk * kRowBlock;
    const int64_t r1 = r0 + kRowBlock < op.R ? r0 + kRowBlock : op.R;
    float pw = 0.f, pb = 0.f;
    for (int64_t r = r0; r < r1; ++r) {
      float tw, tb;
      op.column_terms(r * op.D + d, op.mean(r), op.rstd(r), tw, tb);
      pw += tw;
      pb += tb;
    }
    op.p_weight(blk)[d] = pw;
    op.p_bias(blk)[d] = pb;
  }
}

inline unsigned row_grid(int64_t work, int64_t per_block) { return grid_for((work + per_block - 1) / per_block); }

template <>
struct RowNormLoops<CudaExec> {
  template <typename T, bool Rms>
  static void forward(const CudaExec& e, const RowNormForward<T, Rms>& op) {
    DeviceGuard guard(e.device);
    row_norm_forward_kernel<Rms><<<row_grid(op.R, kRowWarps), kRowThreads, 0,
                                   reinterpret_cast<cudaStream_t>(e.stream)>>>(op);
    check_launch("row_norm_fwd");
  }
  template <typename T, bool Rms>
  static void backward(const CudaExec& e, const RowNormBackward<T, Rms>& op) {
    DeviceGuard guard(e.device);
    const auto stream = reinterpret_cast<cudaStream_t>(e.stream);
    row_norm_backward_rows_kernel<Rms><<<row_grid(op.R, kRowWarps), kRowThreads, 0, stream>>>(op);
    check_launch("row_norm_bwd_rows");
    if (op.partials) {
      row_norm_backward_columns_kernel<<<row_grid(op.blocks * op.D, kRowThreads), kRowThreads, 0, stream>>>(op);
      check_launch("row_norm_bwd_columns");
    }
  }
};

namespace ops {
GK_TRANSFORMER_OPS(GK_DEFINE_CUDA_ENTRY)
}  // namespace ops

}  // namespace gk
