"""Triton kernels for the masked 2D convolution (PixelCNN): implicit GEMM over the kept taps only.

Math. With the mask's kept taps t = 0..T-1 at offsets (dy_t, dx_t) from the centre ("same" padding,
zeros outside the image) and the taps' weights packed as W_t = weight[:, :, c + dy_t, c + dx_t]^T
(Cin x Cout, already multiplied by the mask, which matters only for colour groups at the centre):
    forward   pre[n, :, y, x] = bias + sum_t x[n, :, y + dy_t, x + dx_t] W_t        (a GEMM, K = T Cin)
    gate      out = tanh(a + ca) * sigmoid(b + cb),  (a, b) the two halves of pre's channels
    dX        dx[n, :, y, x] = sum_t dpre[n, :, y - dy_t, x - dx_t] W_t^T          (the forward kernel
              on the negated taps and transposed weights)
    dW        dW_t = sum_{n, y, x} x[n, :, y + dy_t, x + dx_t]^T dpre[n, :, y, x]  (a GEMM, K = N H W)
A dense conv2d on the masked weight multiplies zeros on about half the taps (k x k window, mask
"A": (k^2 - 1) / 2 taps kept); here the tap loop runs over the kept taps only.

Layout: tensors NCHW addressed through strides; a GEMM row is an output pixel (n, y, x) and
consecutive rows are consecutive x, the unit-stride axis of NCHW, so loads coalesce along rows.
Offsets of the sample axis are 64-bit (tensors past 2^31 elements).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from genkernels.kernels._conv import gate_epilogue, tiles as _tiles
from genkernels.kernels._conv import weight_grad_tiles as _weight_grad_tiles
from genkernels.kernels.attention import _dot, dot_mode


@triton.jit
def _masked_conv_fwd_kernel(
    # pointers
    X, WT, TAPS, BIAS, COND, OUT,
    # sizes
    N, C_IN, C_OUT, H, W, NUM_TAPS,
    # strides
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_cn, stride_cc,
    stride_on, stride_oc, stride_oh, stride_ow,
    # meta-parameters
    HAS_BIAS: tl.constexpr, GATED: tl.constexpr, HAS_COND: tl.constexpr, DOT_MODE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """out[n, co, y, x] = sum_t sum_ci X[n, ci, y + dy_t, x + dx_t] WT[t, ci, co] (+ bias); gated:
    co < C_OUT // 2 pairs with co + C_OUT // 2 and the gate is written at channel co."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)         # output pixels (n, y, x) flattened
    n_idx = rows // (H * W)
    rem = rows % (H * W)
    py = rem // W
    px = rem % W
    row_ok = rows < N * H * W
    x_base = X + n_idx.to(tl.int64) * stride_xn            # (BLOCK_M,) pointers
    half = C_OUT // 2 if GATED else C_OUT
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)        # output channels (the a half when gated)
    col_ok = cols < half
    ks = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    acc_b = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for t in range(0, NUM_TAPS):
        dy = tl.load(TAPS + 2 * t)
        dx = tl.load(TAPS + 2 * t + 1)
        sy = py + dy
        sx = px + dx
        pix_ok = row_ok & (sy >= 0) & (sy < H) & (sx >= 0) & (sx < W)
        pix = x_base + sy * stride_xh + sx * stride_xw
        w_tap = WT + t * C_IN * C_OUT
        for k0 in range(0, C_IN, BLOCK_K):
            ci = k0 + ks
            ci_ok = ci < C_IN
            a = tl.load(pix[:, None] + ci[None, :] * stride_xc, mask=pix_ok[:, None] & ci_ok[None, :], other=0.0)
            w_ptr = w_tap + ci[:, None] * C_OUT + cols[None, :]
            w_ok = ci_ok[:, None] & col_ok[None, :]
            acc = _dot(a, tl.load(w_ptr, mask=w_ok, other=0.0), acc, DOT_MODE)
            if GATED:
                acc_b = _dot(a, tl.load(w_ptr + half, mask=w_ok, other=0.0), acc_b, DOT_MODE)
    out_ok = row_ok[:, None] & col_ok[None, :]
    acc = gate_epilogue(acc, acc_b, BIAS, COND, cols, col_ok, out_ok, n_idx, half, stride_cn, stride_cc,
                        HAS_BIAS, HAS_COND, GATED)
    out = (OUT + n_idx.to(tl.int64)[:, None] * stride_on + cols[None, :] * stride_oc
           + py[:, None] * stride_oh + px[:, None] * stride_ow)
    tl.store(out, acc.to(OUT.dtype.element_ty), mask=out_ok)


@triton.jit
def _masked_conv_dw_kernel(
    # pointers
    X, DPRE, TAPS, DWT,
    # sizes
    N, C_IN, C_OUT, H, W, NUM_TAPS, SPLIT, PIXELS_PER_SPLIT,
    # strides
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_dn, stride_dc, stride_dh, stride_dw,
    # meta-parameters
    DOT_MODE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """DWT[s, t, ci, co] = sum over the pixels p = (n, y, x) of split s of
    X[n, ci, y + dy_t, x + dx_t] DPRE[n, co, y, x] (float32); one program per (input-channel block,
    output-channel block, tap, split). The host adds the SPLIT partial sums in a fixed order
    (deterministic, no atomics): splitting the pixel reduction fills the GPU when
    (channel blocks x taps) alone would leave most SMs idle."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    t = tl.program_id(2) // SPLIT
    split = tl.program_id(2) % SPLIT
    dy = tl.load(TAPS + 2 * t)
    dx = tl.load(TAPS + 2 * t + 1)
    ci = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    co = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ci_ok = ci < C_IN
    co_ok = co < C_OUT
    ks = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    p_start = split * PIXELS_PER_SPLIT
    p_end = tl.minimum(p_start + PIXELS_PER_SPLIT, N * H * W)
    for p0 in range(p_start, p_end, BLOCK_K):
        p = p0 + ks
        n_idx = p // (H * W)
        rem = p % (H * W)
        py = rem // W
        px = rem % W
        p_ok = p < p_end
        sy = py + dy
        sx = px + dx
        src_ok = p_ok & (sy >= 0) & (sy < H) & (sx >= 0) & (sx < W)
        xs = tl.load(X + n_idx.to(tl.int64)[None, :] * stride_xn + ci[:, None] * stride_xc
                     + sy[None, :] * stride_xh + sx[None, :] * stride_xw,
                     mask=ci_ok[:, None] & src_ok[None, :], other=0.0)            # (BLOCK_M, BLOCK_K)
        ds = tl.load(DPRE + n_idx.to(tl.int64)[:, None] * stride_dn + co[None, :] * stride_dc
                     + py[:, None] * stride_dh + px[:, None] * stride_dw,
                     mask=p_ok[:, None] & co_ok[None, :], other=0.0)              # (BLOCK_K, BLOCK_N)
        acc = _dot(xs, ds, acc, DOT_MODE)
    dwt = DWT + (split * NUM_TAPS + t) * C_IN * C_OUT + ci[:, None] * C_OUT + co[None, :]
    tl.store(dwt, acc, mask=ci_ok[:, None] & co_ok[None, :])


# ----------------------------------------------------------------------------------------------
# Launchers (called inside the op bodies, with `wrap` from genkernels.kernels._launch.launcher)
# ----------------------------------------------------------------------------------------------
def masked_conv_forward(wrap, x, weight_taps, taps, bias, cond_bias, out, gated, allow_tf32=False):
    """out (N, Cout or Cout // 2, H, W) from x (N, Cin, H, W), weight_taps (T, Cin, Cout)
    contiguous, taps (T, 2) int32 contiguous (dy, dx)."""
    n, c_in, h, w = x.shape
    c_out = weight_taps.shape[2]
    tiles = _tiles(n * h * w, c_out // 2 if gated else c_out, c_in)
    num_warps = tiles.pop("num_warps")
    grid = (triton.cdiv(n * h * w, tiles["BLOCK_M"]), triton.cdiv(c_out // 2 if gated else c_out, tiles["BLOCK_N"]))
    cond = cond_bias if cond_bias is not None else x
    wrap(_masked_conv_fwd_kernel)[grid](
        x, weight_taps, taps, bias if bias is not None else x, cond, out,
        n, c_in, c_out, h, w, taps.shape[0],
        *x.stride(), cond.stride(0), cond.stride(1), *out.stride(),
        HAS_BIAS=bias is not None, GATED=gated, HAS_COND=cond_bias is not None,
        DOT_MODE=dot_mode(x.dtype, allow_tf32), num_warps=num_warps, **tiles,
    )


def masked_conv_weight_grad(wrap, x, dpre, taps, allow_tf32=False):
    """(T, Cin, Cout) float32 weight gradient at the kept taps, from x (N, Cin, H, W) and
    dpre (N, Cout, H, W)."""
    n, c_in, h, w = x.shape
    c_out, num_taps, pixels = dpre.shape[1], taps.shape[0], n * h * w
    if num_taps == 0:  # a 1x1 mask "A" keeps no tap
        return x.new_zeros((0, c_in, c_out), dtype=torch.float32)
    tiles = _weight_grad_tiles(c_in, c_out, pixels)
    num_warps = tiles.pop("num_warps")
    programs = triton.cdiv(c_in, tiles["BLOCK_M"]) * triton.cdiv(c_out, tiles["BLOCK_N"]) * num_taps
    split = _pixel_splits(programs, pixels, tiles["BLOCK_K"], x.device)
    per_split = triton.cdiv(triton.cdiv(pixels, split), tiles["BLOCK_K"]) * tiles["BLOCK_K"]
    split = triton.cdiv(pixels, per_split)
    partial = x.new_empty((split, num_taps, c_in, c_out), dtype=torch.float32)
    grid = (triton.cdiv(c_in, tiles["BLOCK_M"]), triton.cdiv(c_out, tiles["BLOCK_N"]), num_taps * split)
    wrap(_masked_conv_dw_kernel)[grid](
        x, dpre, taps, partial,
        n, c_in, c_out, h, w, num_taps, split, per_split,
        *x.stride(), *dpre.stride(),
        DOT_MODE=dot_mode(x.dtype, allow_tf32), num_warps=num_warps, **tiles,
    )
    return partial.sum(0) if split > 1 else partial[0]


def _pixel_splits(programs: int, pixels: int, block_k: int, device) -> int:
    """How many slices the pixel reduction of dW is cut into: enough programs for two waves on the
    GPU, each slice at least 8 tiles long; 2 in the interpreter (so the tests cover the sum)."""
    if device.type != "cuda":
        return 2 if pixels > block_k else 1
    from genkernels.kernels._launch import multiprocessor_count

    wanted = triton.cdiv(2 * multiprocessor_count(device.index or 0), programs)
    return max(1, min(wanted, pixels // (8 * block_k)))


__all__ = ["masked_conv_forward", "masked_conv_weight_grad"]
