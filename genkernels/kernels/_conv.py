"""What the implicit-GEMM convolution kernels share (masked_conv.py, causal_conv.py): tile choice
and the gate's tail-safe tanh and logistic."""
from __future__ import annotations

import triton
import triton.language as tl

from genkernels.kernels._launch import capability


def tiles(rows: int, cols: int, inner: int) -> dict:
    """Power-of-two tiles no larger than the problem (tl.dot needs every side >= 16)."""
    big = capability() >= (8, 0)
    block_m = 64 if big and rows >= 64 else 16 if rows <= 16 else 32
    block_n = min(64 if big else 32, max(16, triton.next_power_of_2(cols)))
    block_k = min(32, max(16, triton.next_power_of_2(inner)))
    return {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k, "num_warps": 4 if big else 1}


def weight_grad_tiles(c_in: int, c_out: int, positions: int) -> dict:
    """dW tiles: (Cin block) x (Cout block), reducing over positions 64 at a time on GPUs."""
    result = tiles(c_in, c_out, positions)
    result["BLOCK_M"] = min(result["BLOCK_M"], max(16, triton.next_power_of_2(c_in)))
    result["BLOCK_K"] = 64 if positions >= 64 and capability() >= (8, 0) else result["BLOCK_K"]
    return result


@triton.jit
def tanh(z):
    # tanh(z) = sign(z) (1 - e) / (1 + e), e = exp(-2|z|) <= 1: no overflow in either tail.
    e = tl.exp(-2.0 * tl.abs(z))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(z < 0, -t, t)


@triton.jit
def sigmoid(z):
    e = tl.exp(-tl.abs(z))
    return tl.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def gate_epilogue(acc, acc_b, BIAS, COND, cols, col_ok, out_ok, n_idx, half, stride_cn, stride_cc,
                  HAS_BIAS: tl.constexpr, HAS_COND: tl.constexpr, GATED: tl.constexpr):
    """The fused epilogue of a conv tile: acc (+ bias) (+ the per-sample cond row), and with GATED
    tanh(acc) * sigmoid(acc_b), where acc_b is the tile of the second half of the output channels."""
    if HAS_BIAS:
        acc += tl.load(BIAS + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        if GATED:
            acc_b += tl.load(BIAS + half + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_COND:
        cond = COND + n_idx.to(tl.int64)[:, None] * stride_cn + cols[None, :] * stride_cc
        acc += tl.load(cond, mask=out_ok, other=0.0).to(tl.float32)
        if GATED:
            acc_b += tl.load(cond + half * stride_cc, mask=out_ok, other=0.0).to(tl.float32)
    if GATED:
        acc = tanh(acc) * sigmoid(acc_b)
    return acc
