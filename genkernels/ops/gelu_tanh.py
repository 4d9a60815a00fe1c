"""GELU with the tanh approximation (Hendrycks & Gimpel 2016; GPT-2's MLP activation), a drop-in
for torch.nn.functional.gelu(x, approximate="tanh"):

    gelu(x) = x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) / 2

elementwise, forward and backward; the math is csrc/transformer/glu_act.h (shared with SwiGLU, whose
launchers in genkernels/ops/swiglu.py this file reuses), fp32 arithmetic for fp16/bf16 storage.

Reading order: reference -> host launchers (swiglu.py) -> torch.library op + autograd -> public function.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from genkernels.ops import _args as args
from genkernels.ops._library import define
from genkernels.ops.swiglu import GELU_TANH, glu_act_backward_kernel, glu_act_kernel


# ---- reference --------------------------------------------------------------------------------
def gelu_tanh_ref(x):
    """F.gelu(x, approximate="tanh") in x's dtype (differentiable by autograd)."""
    return F.gelu(x, approximate="tanh")


# ---- torch.library op + autograd ----------------------------------------------------------------
def _fake(x):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _backward(ctx, grad_y):
    (x,) = ctx.saved_tensors
    return gelu_tanh_backward_op(grad_y, x)


gelu_tanh_op = define("gelu_tanh(Tensor x) -> Tensor", impl=lambda x: glu_act_kernel(x, None, GELU_TANH),
                      fake=_fake, setup_context=_setup_context, backward=_backward)
gelu_tanh_backward_op = define("gelu_tanh_backward(Tensor grad_y, Tensor x) -> Tensor",
                               impl=lambda g, x: glu_act_backward_kernel(g, x, None, GELU_TANH)[0],
                               fake=lambda g, x: torch.empty_like(x, memory_format=torch.contiguous_format))


# ---- public function ----------------------------------------------------------------------------
def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """F.gelu(x, approximate="tanh"), elementwise; x any shape, float32 / float16 / bfloat16 / float64.
    Returns a tensor like x; differentiable with respect to x."""
    args.check_tensor("x", x)
    return gelu_tanh_op(x)
