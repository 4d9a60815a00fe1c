"""Triton kernels for the causal dilated 1D convolution (WaveNet), gate fused: implicit GEMMs.

Math. With K taps, dilation d and the tap weights packed as W_k = weight[:, :, k]^T (Cin x Cout),
tap k reads the input (K - 1 - k) d steps back (zeros before t = 0):
    forward   pre[n, :, t] = bias + cond[n] + sum_k x[n, :, t - (K-1-k) d] W_k        (a GEMM, depth K Cin)
    gate      out = tanh(a) * sigmoid(b),  (a, b) the two halves of pre's channels
    dX        dx[n, :, s] = sum_k dpre[n, :, s + (K-1-k) d] W_k^T     (the forward kernel run anti-causally:
              the same tap offsets negated, on the transposed weights)
    dW        dW_k = sum_{n, t} x[n, :, t - (K-1-k) d]^T dpre[n, :, t]                  (a GEMM, depth N T)
One kernel serves forward and dX: tap k reads position t + (k - (K-1)) STEP, STEP = d forward and
-d for dX; reads outside [0, T) are zeros.

Layout: tensors (N, C, T) addressed through strides; a GEMM row is an output position (n, t) and
consecutive rows are consecutive t, the unit-stride axis, so loads coalesce along rows. The weight
gradient is reduced over (n, t) in slices whose float32 partial sums the host adds in a fixed order:
deterministic, no atomics. Offsets of the sample axis are 64-bit (tensors past 2^31 elements).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from genkernels.kernels._conv import gate_epilogue, tiles as _tiles
from genkernels.kernels._conv import weight_grad_tiles as _weight_grad_tiles
from genkernels.kernels.attention import _dot, dot_mode


@triton.jit
def _causal_conv_fwd_kernel(
    # pointers
    X, WT, BIAS, COND, OUT,
    # sizes
    N, C_IN, C_OUT, T, NUM_TAPS, STEP,
    # strides
    stride_xn, stride_xc, stride_xt,
    stride_cn, stride_cc,
    stride_on, stride_oc, stride_ot,
    # meta-parameters
    HAS_BIAS: tl.constexpr, GATED: tl.constexpr, HAS_COND: tl.constexpr, DOT_MODE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """out[n, co, t] = sum_k sum_ci X[n, ci, t + (k - (K-1)) STEP] WT[k, ci, co] (+ bias, + cond);
    gated: co < C_OUT // 2 pairs with co + C_OUT // 2 and the gate is written at channel co."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)         # output positions (n, t) flattened
    n_idx = rows // T
    pos = rows % T
    row_ok = rows < N * T
    x_base = X + n_idx.to(tl.int64) * stride_xn            # (BLOCK_M,) pointers
    half = C_OUT // 2 if GATED else C_OUT
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)        # output channels (the a half when gated)
    col_ok = cols < half
    ks = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    acc_b = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k in range(0, NUM_TAPS):
        src = pos + (k - (NUM_TAPS - 1)) * STEP
        src_ok = row_ok & (src >= 0) & (src < T)
        x_tap = x_base + src * stride_xt
        w_tap = WT + k * C_IN * C_OUT
        for k0 in range(0, C_IN, BLOCK_K):
            ci = k0 + ks
            ci_ok = ci < C_IN
            a = tl.load(x_tap[:, None] + ci[None, :] * stride_xc, mask=src_ok[:, None] & ci_ok[None, :], other=0.0)
            w_ptr = w_tap + ci[:, None] * C_OUT + cols[None, :]
            w_ok = ci_ok[:, None] & col_ok[None, :]
            acc = _dot(a, tl.load(w_ptr, mask=w_ok, other=0.0), acc, DOT_MODE)
            if GATED:
                acc_b = _dot(a, tl.load(w_ptr + half, mask=w_ok, other=0.0), acc_b, DOT_MODE)
    out_ok = row_ok[:, None] & col_ok[None, :]
    acc = gate_epilogue(acc, acc_b, BIAS, COND, cols, col_ok, out_ok, n_idx, half, stride_cn, stride_cc,
                        HAS_BIAS, HAS_COND, GATED)
    out = OUT + n_idx.to(tl.int64)[:, None] * stride_on + cols[None, :] * stride_oc + pos[:, None] * stride_ot
    tl.store(out, acc.to(OUT.dtype.element_ty), mask=out_ok)


@triton.jit
def _causal_conv_dw_kernel(
    # pointers
    X, DPRE, DWT,
    # sizes
    N, C_IN, C_OUT, T, NUM_TAPS, DILATION, SPLIT, POSITIONS_PER_SPLIT,
    # strides
    stride_xn, stride_xc, stride_xt,
    stride_dn, stride_dc, stride_dt,
    # meta-parameters
    DOT_MODE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """DWT[s, k, ci, co] = sum over the positions p = (n, t) of slice s of
    X[n, ci, t - (K-1-k) DILATION] DPRE[n, co, t] (float32); one program per (input-channel block,
    output-channel block, tap, slice)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    k = tl.program_id(2) // SPLIT
    split = tl.program_id(2) % SPLIT
    lag = (NUM_TAPS - 1 - k) * DILATION
    ci = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    co = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ci_ok = ci < C_IN
    co_ok = co < C_OUT
    ks = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    p_start = split * POSITIONS_PER_SPLIT
    p_end = tl.minimum(p_start + POSITIONS_PER_SPLIT, N * T)
    for p0 in range(p_start, p_end, BLOCK_K):
        p = p0 + ks
        n_idx = p // T
        pos = p % T
        p_ok = p < p_end
        src = pos - lag
        src_ok = p_ok & (src >= 0)
        xs = tl.load(X + n_idx.to(tl.int64)[None, :] * stride_xn + ci[:, None] * stride_xc + src[None, :] * stride_xt,
                     mask=ci_ok[:, None] & src_ok[None, :], other=0.0)              # (BLOCK_M, BLOCK_K)
        ds = tl.load(DPRE + n_idx.to(tl.int64)[:, None] * stride_dn + co[None, :] * stride_dc
                     + pos[:, None] * stride_dt,
                     mask=p_ok[:, None] & co_ok[None, :], other=0.0)                # (BLOCK_K, BLOCK_N)
        acc = _dot(xs, ds, acc, DOT_MODE)
    dwt = DWT + (split * NUM_TAPS + k) * C_IN * C_OUT + ci[:, None] * C_OUT + co[None, :]
    tl.store(dwt, acc, mask=ci_ok[:, None] & co_ok[None, :])


# ----------------------------------------------------------------------------------------------
# Launchers (called inside the op bodies, with `wrap` from genkernels.kernels._launch.launcher)
# ----------------------------------------------------------------------------------------------
def causal_conv_forward(wrap, x, weight_taps, step, bias, cond, out, gated, allow_tf32=False):
    """out (N, Cout or Cout // 2, T) from x (N, Cin, T) and weight_taps (K, Cin, Cout) contiguous;
    tap k reads position t + (k - (K-1)) step (step = dilation: causal; -dilation: the dX pass)."""
    n, c_in, length = x.shape
    num_taps, c_out = weight_taps.shape[0], weight_taps.shape[2]
    cols = c_out // 2 if gated else c_out
    tiles = _tiles(n * length, cols, c_in)
    num_warps = tiles.pop("num_warps")
    grid = (triton.cdiv(n * length, tiles["BLOCK_M"]), triton.cdiv(cols, tiles["BLOCK_N"]))
    cond_arg = cond if cond is not None else x
    wrap(_causal_conv_fwd_kernel)[grid](
        x, weight_taps, bias if bias is not None else x, cond_arg, out,
        n, c_in, c_out, length, num_taps, step,
        *x.stride(), cond_arg.stride(0), cond_arg.stride(1), *out.stride(),
        HAS_BIAS=bias is not None, GATED=gated, HAS_COND=cond is not None,
        DOT_MODE=dot_mode(x.dtype, allow_tf32), num_warps=num_warps, **tiles,
    )


def causal_conv_weight_grad(wrap, x, dpre, num_taps, dilation, allow_tf32=False):
    """(K, Cin, Cout) float32 weight gradient from x (N, Cin, T) and dpre (N, Cout, T)."""
    n, c_in, length = x.shape
    c_out, positions = dpre.shape[1], n * length
    tiles = _weight_grad_tiles(c_in, c_out, positions)
    num_warps = tiles.pop("num_warps")
    programs = triton.cdiv(c_in, tiles["BLOCK_M"]) * triton.cdiv(c_out, tiles["BLOCK_N"]) * num_taps
    split = _position_splits(programs, positions, tiles["BLOCK_K"], x.device)
    per_split = triton.cdiv(triton.cdiv(positions, split), tiles["BLOCK_K"]) * tiles["BLOCK_K"]
    split = triton.cdiv(positions, per_split)
    partial = x.new_empty((split, num_taps, c_in, c_out), dtype=torch.float32)
    grid = (triton.cdiv(c_in, tiles["BLOCK_M"]), triton.cdiv(c_out, tiles["BLOCK_N"]), num_taps * split)
    wrap(_causal_conv_dw_kernel)[grid](
        x, dpre, partial,
        n, c_in, c_out, length, num_taps, dilation, split, per_split,
        *x.stride(), *dpre.stride(),
        DOT_MODE=dot_mode(x.dtype, allow_tf32), num_warps=num_warps, **tiles,
    )
    return partial.sum(0) if split > 1 else partial[0]


def _position_splits(programs: int, positions: int, block_k: int, device) -> int:
    """How many slices the (n, t) reduction of dW is cut into: enough programs for two waves on the
    GPU, each slice at least 8 tiles long; 2 in the interpreter (so the tests cover the sum)."""
    if device.type != "cuda":
        return 2 if positions > block_k else 1
    from genkernels.kernels._launch import multiprocessor_count

    wanted = triton.cdiv(2 * multiprocessor_count(device.index or 0), programs)
    return max(1, min(wanted, positions // (8 * block_k)))


__all__ = ["causal_conv_forward", "causal_conv_weight_grad"]
