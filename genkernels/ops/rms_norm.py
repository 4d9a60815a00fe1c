"""RMSNorm over the last dimension (Zhang & Sennrich 2019), a drop-in for
torch.nn.functional.rms_norm with normalized_shape = (D,):

    y = x / sqrt(sum x^2 / D + eps) * weight

The row math is csrc/transformer/row_norm.h (shared with LayerNorm; the launchers live in
genkernels/ops/layer_norm.py): fp32 statistics for fp16/bf16 storage, the forward saves each row's
rstd for the backward, the weight gradient is summed per block of 32 rows and then over the blocks
in a fixed order (deterministic, no atomics). NaN propagates.

Reading order: reference -> host launchers (layer_norm.py) -> torch.library op + autograd -> public function.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from genkernels.ops._library import define
from genkernels.ops.layer_norm import (
    check_row_norm_inputs,
    row_norm_backward_fake,
    row_norm_backward_kernel,
    row_norm_fake,
    row_norm_kernel,
)


# ---- reference --------------------------------------------------------------------------------
def rms_norm_ref(x, weight=None, eps=1e-6):
    """torch.nn.functional.rms_norm over the last dim, in x's dtype (differentiable by autograd)."""
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


# ---- torch.library op + autograd ----------------------------------------------------------------
def _impl(x, weight, eps):
    y, _, rstd = row_norm_kernel(x, weight, None, eps, True)
    return y, rstd


def _fake(x, weight, eps):
    y, _, rstd = row_norm_fake(x, weight, None, eps, True)
    return y, rstd


def _backward_impl(grad_y, x, weight, rstd):
    grad_x, grad_w, _ = row_norm_backward_kernel(grad_y, x, weight, rstd.new_empty(0), rstd, True)
    return grad_x, grad_w


def _backward_fake(grad_y, x, weight, rstd):
    return row_norm_backward_fake(grad_y, x, weight, rstd, rstd, True)[:2]


def _setup_context(ctx, inputs, output):
    x, weight, eps = inputs
    ctx.save_for_backward(x, weight, output[1])


def _backward(ctx, grad_y, _grad_rstd):
    x, weight, rstd = ctx.saved_tensors
    grad_x, grad_w = rms_norm_backward_op(grad_y, x, weight, rstd)
    return grad_x, grad_w if weight is not None else None, None


rms_norm_op = define("rms_norm(Tensor x, Tensor? weight, float eps) -> (Tensor, Tensor)",
                     impl=_impl, fake=_fake, setup_context=_setup_context, backward=_backward)
rms_norm_backward_op = define(
    "rms_norm_backward(Tensor grad_y, Tensor x, Tensor? weight, Tensor rstd) -> (Tensor, Tensor)",
    impl=_backward_impl, fake=_backward_fake)


# ---- public function ----------------------------------------------------------------------------
def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dimension: F.rms_norm(x, (D,), weight, eps).

    x       (..., D) float32 / float16 / bfloat16 / float64
    weight  (D,) or None, in x's dtype and on its device
    Returns y with x's shape and dtype; differentiable with respect to x and weight.
    """
    check_row_norm_inputs("rms_norm", x, (("weight", weight),), eps)
    return rms_norm_op(x, weight, float(eps))[0]
