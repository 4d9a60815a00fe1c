// CUDA entry points of the normalisation ops: the shared math (group_norm_act.h, adaln.h) in
// kernels launched on the given stream. GroupNorm: one block per (sample, group) (grid-stride),
// block sums for the statistics, one warp per channel for the backward's per-channel sums (each
// warp adds its channels' terms in order, then the block adds the warps': deterministic), and a
// thread per channel for the weight/bias gradients (samples added in order). adaLN: one warp per
// row; the backward's column sums by a thread per (sample, row block, channel), rows in order,
// then a thread per (sample, channel) over the row blocks in order. No atomics anywhere.
#include "common/per_sample_cuda.cuh"
#include "norm/norm_launch.h"

namespace gk {

constexpr int kNormThreads = 256, kNormWarps = kNormThreads / 32;

__device__ __forceinline__ float norm_warp_sum(float v) {
  for (int s = 16; s > 0; s >>= 1) v += __shfl_xor_sync(0xffffffffu, v, s);
  return v;
}

// sum of v over the block, returned to every thread (shm: kNormWarps floats)
__device__ __forceinline__ float norm_block_sum(float v, float* shm) {
  v = norm_warp_sum(v);
  __syncthreads();  // shm may still be read by a previous call
  if ((threadIdx.x & 31) == 0) shm[threadIdx.x >> 5] = v;
  __syncthreads();
  return norm_warp_sum((threadIdx.x & 31) < kNormWarps ? shm[threadIdx.x & 31] : 0.f);
}

template <class Op>
__device__ __forceinline__ void gn_block_stats(const Op& op, int64_t base, float* shm, float& mean, float& rstd) {
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < op.M; i += kNormThreads) s += op.in(base + i);
  mean = norm_block_sum(s, shm) / static_cast<float>(op.M);
  float v = 0.f;
  for (int64_t i = threadIdx.x; i < op.M; i += kNormThreads) {
    const float d = op.in(base + i) - mean;
    v += d * d;
  }
  rstd = norm_rstd(norm_block_sum(v, shm) / static_cast<float>(op.M), op.eps);
}

template <class Op>
__global__ void __launch_bounds__(kNormThreads) gn_forward_kernel(Op op) {
  __shared__ float shm[kNormWarps];
  for (int64_t u = blockIdx.x; u < op.units(); u += gridDim.x) {
    const int64_t base = u * op.M;
    float mean, rstd;
    gn_block_stats(op, base, shm, mean, rstd);
    for (int64_t i = threadIdx.x; i < op.M; i += kNormThreads) {
      const NormCoef k = op.coef(u, i / op.inner, rstd);
      op.out(base + i, op.in(base + i), mean, k);
    }
  }
}

template <class Op>
__global__ void __launch_bounds__(kNormThreads) gn_backward_kernel(Op op) {
  __shared__ float shm[kNormWarps];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int64_t u = blockIdx.x; u < op.units(); u += gridDim.x) {
    const int64_t base = u * op.M;
    float mean, rstd;
    gn_block_stats(op, base, shm, mean, rstd);
    float a_acc = 0.f, b_acc = 0.f;  // this warp's channels' k S1, k S2 (lane 0)
    for (int64_t j = warp; j < op.Cg; j += kNormWarps) {
      const NormCoef k = op.coef(u, j, rstd);
      const int64_t cb = base + j * op.inner;
      float s1 = 0.f, s2 = 0.f;
      for (int64_t i = lane; i < op.inner; i += 32) {
        const float xv = op.in(cb + i), g = op.gh(cb + i, xv, mean, k);
        s1 += g;
        s2 += g * ((xv - mean) * rstd);
      }
      s1 = norm_warp_sum(s1);
      s2 = norm_warp_sum(s2);
      if (lane == 0) {
        op.channel_done(u, j, s1, s2);
        a_acc += k.k * s1;
        b_acc += k.k * s2;
      }
    }
    const float inv = 1.f / static_cast<float>(op.M);
    const float A = norm_block_sum(lane == 0 ? a_acc : 0.f, shm) * inv;
    const float B = norm_block_sum(lane == 0 ? b_acc : 0.f, shm) * inv;
    for (int64_t i = threadIdx.x; i < op.M; i += kNormThreads) {
      const NormCoef k = op.coef(u, i / op.inner, rstd);
      const float xv = op.in(base + i);
      op.out(base + i, op.gh(base + i, xv, mean, k), (xv - mean) * rstd, k, rstd, A, B);
    }
  }
}

template <class Op>
__global__ void __launch_bounds__(kNormThreads) gn_param_kernel(Op op) {
  for (int64_t c = blockIdx.x * static_cast<int64_t>(kNormThreads) + threadIdx.x; c < op.C;
       c += static_cast<int64_t>(gridDim.x) * kNormThreads)
    op.param_grads(c);
}

template <class Op>
__device__ __forceinline__ void adaln_warp_stats(const Op& op, int64_t base, float& mean, float& rstd) {
  const int lane = threadIdx.x & 31;
  float s = 0.f;
  for (int64_t d = lane; d < op.D; d += 32) s += op.in(base + d);
  mean = norm_warp_sum(s) / static_cast<float>(op.D);
  float v = 0.f;
  for (int64_t d = lane; d < op.D; d += 32) {
    const float e = op.in(base + d) - mean;
    v += e * e;
  }
  rstd = norm_rstd(norm_warp_sum(v) / static_cast<float>(op.D), op.eps);
}

template <class Op>
__global__ void __launch_bounds__(kNormThreads) adaln_forward_kernel(Op op) {
  const int lane = threadIdx.x & 31;
  const int64_t rows = op.N * op.L;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kNormWarps) + (threadIdx.x >> 5); r < rows;
       r += static_cast<int64_t>(gridDim.x) * kNormWarps) {
    float mean, rstd;
    adaln_warp_stats(op, r * op.D, mean, rstd);
    for (int64_t d = lane; d < op.D; d += 32) op.out(r, r / op.L, d, mean, rstd);
  }
}

template <class Op>
__global__ void __launch_bounds__(kNormThreads) adaln_backward_rows_kernel(Op op) {
  const int lane = threadIdx.x & 31;
  const int64_t rows = op.N * op.L;
  const float inv = 1.f / static_cast<float>(op.D);
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kNormWarps) + (threadIdx.x >> 5); r < rows;
       r += static_cast<int64_t>(gridDim.x) * kNormWarps) {
    const int64_t base = r * op.D, n = r / op.L;
    float mean, rstd;
    adaln_warp_stats(op, base, mean, rstd);
    float a = 0.f, b = 0.f;
    for (int64_t d = lane; d < op.D; d += 32) {
      const float gx = op.gxhat(base + d, n * op.D + d);
      a += gx;
      b += gx * ((op.in(base + d) - mean) * rstd);
    }
    const float A = norm_warp_sum(a) * inv, B = norm_warp_sum(b) * inv;
    if (lane == 0) {
      op.stats()[2 * r] = mean;
      op.stats()[2 * r + 1] = rstd;
    }
    for (int64_t d = lane; d < op.D; d += 32) op.out(r, n, d, mean, rstd, A, B);
  }
}

template <class Op>
__global__ void __launch_bounds__(kNormThreads) adaln_backward_columns_kernel(Op op) {
  const int64_t total = op.N * op.blocks * op.D;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(kNormThreads) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * kNormThreads) {
    const int64_t d = t % op.D, nb = t / op.D, n = nb / op.blocks, blk = nb % op.blocks;
    const int64_t r0 = n * op.L + blk * kAdaLNRowBlock;
    const int64_t r1 = r0 + kAdaLNRowBlock < (n + 1) * op.L ? r0 + kAdaLNRowBlock : (n + 1) * op.L;
    float ps = 0.f, pc = 0.f;
    for (int64_t r = r0; r < r1; ++r) {
      float a, b;
      op.column_terms(r * op.D + d, op.stats()[2 * r], op.stats()[2 * r + 1], a, b);
      ps += a;
      pc += b;
    }
    op.p_shift(n, blk)[d] = ps;
    op.p_scale(n, blk)[d] = pc;
  }
}

template <class Op>
__global__ void __launch_bounds__(kNormThreads) adaln_finish_kernel(Op op) {
  const int64_t total = op.N * op.D;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(kNormThreads) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * kNormThreads)
    op.finish(t / op.D, t % op.D);
}

inline unsigned norm_grid(int64_t work, int64_t per_block) { return grid_for((work + per_block - 1) / per_block); }

template <>
struct NormLoops<CudaExec> {
  template <class Op>
  static void group_forward(const CudaExec& e, const Op& op) {
    DeviceGuard guard(e.device);
    gn_forward_kernel<<<grid_for(op.units()), kNormThreads, 0, reinterpret_cast<cudaStream_t>(e.stream)>>>(op);
    check_launch("group_norm_act_fwd");
  }
  template <class Op>
  static void group_backward(const CudaExec& e, const Op& op) {
    DeviceGuard guard(e.device);
    const auto stream = reinterpret_cast<cudaStream_t>(e.stream);
    gn_backward_kernel<<<grid_for(op.units()), kNormThreads, 0, stream>>>(op);
    check_launch("group_norm_act_bwd");
    if (op.grad_weight || op.grad_bias) {
      gn_param_kernel<<<norm_grid(op.C, kNormThreads), kNormThreads, 0, stream>>>(op);
      check_launch("group_norm_act_bwd_params");
    }
  }
  template <class Op>
  static void adaln_forward(const CudaExec& e, const Op& op) {
    DeviceGuard guard(e.device);
    adaln_forward_kernel<<<norm_grid(op.N * op.L, kNormWarps), kNormThreads, 0,
                           reinterpret_cast<cudaStream_t>(e.stream)>>>(op);
    check_launch("adaln_modulate_fwd");
  }
  template <class Op>
  static void adaln_backward(const CudaExec& e, const Op& op) {
    DeviceGuard guard(e.device);
    const auto stream = reinterpret_cast<cudaStream_t>(e.stream);
    adaln_backward_rows_kernel<<<norm_grid(op.N * op.L, kNormWarps), kNormThreads, 0, stream>>>(op);
    check_launch("adaln_modulate_bwd_rows");
    adaln_backward_columns_kernel<<<norm_grid(op.N * op.blocks * op.D, kNormThreads), kNormThreads, 0, stream>>>(op);
    check_launch("adaln_modulate_bwd_columns");
    adaln_finish_kernel<<<norm_grid(op.N * op.D, kNormThreads), kNormThreads, 0, stream>>>(op);
    check_launch("adaln_modulate_bwd_finish");
  }
};

namespace ops {
GK_NORM_OPS(GK_DEFINE_CUDA_ENTRY)
}  // namespace ops

}  // namespace gk
