"""SwiGLU activation of the transformer MLP (Shazeer 2020, "GLU Variants Improve Transformer"):

    y = silu(gate) * up,   silu(a) = a * sigmoid(a)

elementwise, forward and backward. The math (shared with GELU-tanh, genkernels/ops/gelu_tanh.py,
which reuses this file's launchers) is written once in csrc/transformer/glu_act.h for the C++ CPU
and CUDA kernels: fp32 arithmetic for fp16/bf16 storage, the logistic from exp(-|a|) (no overflow),
NaN propagates.

Reading order: reference -> host launchers -> torch.library op + autograd -> public function.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from genkernels import _ext
from genkernels.ops import _args as args
from genkernels.ops._library import define

SILU, GELU_TANH = 0, 1  # gk::GluAct codes


# ---- reference --------------------------------------------------------------------------------
def swiglu_ref(gate, up):
    """silu(gate) * up in the inputs' dtype (differentiable by autograd)."""
    return F.silu(gate) * up


def _act_and_grad(a, act):
    """(act(a), act'(a)) in a's dtype: glu_act_and_grad's twin (csrc/transformer/glu_act.h)."""
    if act == SILU:
        s = torch.sigmoid(a)
        return a * s, s * (1 + a * (1 - s))
    c, k = math.sqrt(2.0 / math.pi), 0.044715
    t = torch.tanh(c * (a + k * a * a * a))
    return 0.5 * a * (1 + t), 0.5 * (1 + t) + 0.5 * a * (1 - t * t) * c * (1 + 3 * k * a * a)


# ---- host launchers (shared with gelu_tanh.py) ----------------------------------------------------
def glu_act_kernel(a, b, act):
    """act(a) * b (b None: act(a)), like a."""
    backend = args.choose_backend("swiglu" if act == SILU else "gelu_tanh", a)
    if backend == "torch":
        acc = torch.promote_types(a.dtype, torch.float32)
        f, _ = _act_and_grad(a.to(acc), act)
        return (f * b.to(acc) if b is not None else f).to(a.dtype)
    a_d, b_d = a.contiguous(), args.dense(b)
    y = torch.empty_like(a_d)
    args.kernel(backend, "glu_act", like=a)(
        a=a_d.data_ptr(), b=b_d.data_ptr() if b_d is not None else 0, y=y.data_ptr(), n=a.numel(), act=act,
        dtype=_ext.dtype_code(a))
    return y


def glu_act_backward_kernel(grad_y, a, b, act):
    """(grad_a, grad_b) like a (grad_b an empty tensor when b is None)."""
    backend = args.choose_backend("swiglu" if act == SILU else "gelu_tanh", a)
    if backend == "torch":
        acc = torch.promote_types(a.dtype, torch.float32)
        g = grad_y.to(acc)
        f, df = _act_and_grad(a.to(acc), act)
        if b is None:
            return (g * df).to(a.dtype), a.new_empty(0)
        return (g * b.to(acc) * df).to(a.dtype), (g * f).to(a.dtype)
    g_d, a_d, b_d = grad_y.to(a.dtype).contiguous(), a.contiguous(), args.dense(b)
    grad_a = torch.empty_like(a_d)
    grad_b = torch.empty_like(a_d) if b is not None else a.new_empty(0)
    args.kernel(backend, "glu_act_backward", like=a)(
        grad_y=g_d.data_ptr(), a=a_d.data_ptr(), b=b_d.data_ptr() if b_d is not None else 0,
        grad_a=grad_a.data_ptr(), grad_b=grad_b.data_ptr() if b is not None else 0, n=a.numel(), act=act,
        dtype=_ext.dtype_code(a))
    return grad_a, grad_b


# ---- torch.library op + autograd ----------------------------------------------------------------
def _fake(gate, up):
    return torch.empty_like(gate, memory_format=torch.contiguous_format)


def _backward_fake(grad_y, gate, up):
    return (torch.empty_like(gate, memory_format=torch.contiguous_format),
            torch.empty_like(up, memory_format=torch.contiguous_format))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_y):
    gate, up = ctx.saved_tensors
    return swiglu_backward_op(grad_y, gate, up)


swiglu_op = define("swiglu(Tensor gate, Tensor up) -> Tensor", impl=lambda gate, up: glu_act_kernel(gate, up, SILU),
                   fake=_fake, setup_context=_setup_context, backward=_backward)
swiglu_backward_op = define("swiglu_backward(Tensor grad_y, Tensor gate, Tensor up) -> (Tensor, Tensor)",
                            impl=lambda g, gate, up: glu_act_backward_kernel(g, gate, up, SILU), fake=_backward_fake)


# ---- public function ----------------------------------------------------------------------------
def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up, elementwise.

    gate  any shape, float32 / float16 / bfloat16 / float64
    up    gate's shape, dtype and device
    Returns a tensor like gate; differentiable with respect to gate and up.
    """
    args.check_tensor("gate", gate)
    args.check_tensor("up", up, like=gate, like_name="gate")
    return swiglu_op(gate, up)
