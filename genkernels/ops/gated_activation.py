"""Gated activation of PixelCNN / WaveNet (van den Oord et al. 2016, "Conditional Image Generation
with PixelCNN Decoders", eq. 2; "WaveNet", eq. 2):

    y = tanh(a + ca) * sigmoid(b + cb)

a = the first C channels of x along `dim`, b = the last C; cond (optional) a per-sample (N, 2C) bias
[ca | cb] (a class embedding) broadcast over every other dimension. The math (and its gradients) is
written once in csrc/conv/gated_activation.h for the C++ CPU and CUDA kernels: fp32 arithmetic for
fp16/bf16 storage, tanh from expm1 and the logistic from exp(-|x|), so neither cancels in its tails,
and NaN propagates. The cond gradient is a sum over every position of a sample: the kernels write
per-(sample, channel, chunk) partial sums that are added in a fixed order (no atomics), so it does
not depend on the thread count.

Layout the kernels index: x contiguous as (outer, 2, C, inner) with outer = prod(shape[:dim]),
inner = prod(shape[dim + 1:]); the cond row of outer row o is o // mid, mid = outer // shape[0].

Reading order: reference -> host launchers -> torch.library op + autograd -> public function.
"""
from __future__ import annotations

import math

import torch

from genkernels import _ext
from genkernels.ops import _args as args
from genkernels.ops._library import define


# ---- reference --------------------------------------------------------------------------------
def _cond_view(cond: torch.Tensor, ndim: int, dim: int, half: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cond (N, 2C) -> its two halves shaped to broadcast against a (N, ..., C, ...) half of x."""
    shape = (cond.shape[0],) + (1,) * (dim - 1) + (half,) + (1,) * (ndim - dim - 1)
    ca, cb = cond.narrow(1, 0, half), cond.narrow(1, half, half)
    return ca.reshape(shape), cb.reshape(shape)


def _halves(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    half = x.shape[dim] // 2
    return x.narrow(dim, 0, half), x.narrow(dim, half, half)


def gated_activation_ref(x: torch.Tensor, cond: torch.Tensor | None = None, dim: int = 1) -> torch.Tensor:
    """Pure-PyTorch gated activation in x's dtype (eager ops, differentiable by autograd)."""
    dim = dim % x.dim()
    a, b = _halves(x, dim)
    if cond is not None:
        ca, cb = _cond_view(cond, x.dim(), dim, a.shape[dim])
        a, b = a + ca, b + cb
    return torch.tanh(a) * torch.sigmoid(b)


def gated_activation_backward_ref(grad, x, cond, dim, cond_grad):
    """Closed-form gradients in float32 (float64 for float64 inputs): gated_activation_grads' twin.
    Returns grad_x in x's dtype and grad_cond (N, 2C) in cond's dtype, or an empty tensor when
    cond_grad is False."""
    acc = torch.promote_types(x.dtype, torch.float32)
    a, b = _halves(x.to(acc), dim)
    if cond is not None:
        ca, cb = _cond_view(cond.to(acc), x.dim(), dim, a.shape[dim])
        a, b = a + ca, b + cb
    # 1 - tanh(a)^2 = 4 e / (1 + e)^2 with e = exp(-2|a|), sigmoid'(b) = sigmoid(b) sigmoid(-b): no
    # cancellation in the tails, where 1 - t * t and 1 - s round to 0
    e = torch.exp(-2.0 * a.abs())
    t, s, g = torch.tanh(a), torch.sigmoid(b), grad.to(acc)
    ga = g * s * (4.0 * e / ((1.0 + e) * (1.0 + e)))
    gb = g * t * (s * torch.sigmoid(-b))
    grad_x = torch.cat([ga, gb], dim=dim).to(x.dtype)
    if not cond_grad:
        return grad_x, x.new_empty((0,))
    others = [d for d in range(x.dim()) if d not in (0, dim)]
    sums = [h.sum(dim=others) if others else h for h in (ga, gb)]
    return grad_x, torch.cat(sums, dim=1).to(cond.dtype)


# ---- host launchers (validate what only they see, allocate, launch) --------------------------
def _layout(x: torch.Tensor, dim: int) -> tuple[int, int, int, int]:
    """(outer, mid, C, inner) of the kernels' (outer, 2, C, inner) view of x (see module doc)."""
    outer, inner = math.prod(x.shape[:dim]), math.prod(x.shape[dim + 1:])
    batch = x.shape[0] if dim > 0 else 1
    return outer, (outer // batch if batch else 0), x.shape[dim] // 2, inner


def _out_shape(x: torch.Tensor, dim: int) -> list[int]:
    shape = list(x.shape)
    shape[dim] //= 2
    return shape


def _gated_activation_kernel(x, cond, dim):
    backend = args.choose_backend("gated_activation", x)
    if backend == "torch":
        return gated_activation_ref(x, cond, dim)
    x_dense, cond_dense = x.contiguous(), args.dense(cond)
    y = x.new_empty(_out_shape(x, dim))
    outer, mid, c, inner = _layout(x, dim)
    if y.numel():
        args.kernel(backend, "gated_activation", like=x)(
            x=x_dense.data_ptr(), cond=_ext.ptr(cond_dense), y=y.data_ptr(), outer=outer, mid=mid, C=c, inner=inner,
            dtype=_ext.dtype_code(x))
    return y


def _gated_activation_backward_kernel(grad, x, cond, dim, cond_grad):
    backend = args.choose_backend("gated_activation", x)
    if backend == "torch":
        return gated_activation_backward_ref(grad, x, cond, dim, cond_grad)
    x_dense, cond_dense = x.contiguous(), args.dense(cond)
    grad_dense = grad.to(x.dtype).contiguous()
    grad_x = torch.empty_like(x, memory_format=torch.contiguous_format)
    outer, mid, c, inner = _layout(x, dim)
    rows, per_row = (x.shape[0] * 2 * c, mid * inner) if cond_grad else (0, 0)
    chunks = args.num_chunks(per_row)
    partials = args.partial_sums(rows, chunks, x) if cond_grad else None
    if x.numel():
        args.kernel(backend, "gated_activation_backward", like=x)(
            grad_y=grad_dense.data_ptr(), x=x_dense.data_ptr(), cond=_ext.ptr(cond_dense), grad_x=grad_x.data_ptr(),
            cond_partials=_ext.ptr(partials), outer=outer, mid=mid, C=c, inner=inner, dtype=_ext.dtype_code(x))
    if not cond_grad:
        return grad_x, x.new_empty((0,))
    if not x.numel():  # no position: the sums are zero (the kernel wrote nothing)
        return grad_x, torch.zeros_like(cond)
    return grad_x, args.sum_partials(partials, rows, chunks).view(cond.shape).to(cond.dtype)


# ---- fakes and autograd --------------------------------------------------------------------------
def _gated_activation_fake(x, cond, dim):
    return x.new_empty(_out_shape(x, dim))


def _gated_activation_backward_fake(grad, x, cond, dim, cond_grad):
    grad_x = torch.empty_like(x, memory_format=torch.contiguous_format)
    return grad_x, (torch.empty_like(cond, memory_format=torch.contiguous_format) if cond_grad else x.new_empty((0,)))


def _setup_context(ctx, inputs, output):
    x, cond, dim = inputs
    ctx.save_for_backward(x, cond)
    ctx.dim = dim
    ctx.cond_grad = cond is not None and bool(ctx.needs_input_grad[1])


def _backward(ctx, grad):
    x, cond = ctx.saved_tensors
    grad_x, grad_cond = gated_activation_backward_op(grad, x, cond, ctx.dim, ctx.cond_grad)
    return grad_x, (grad_cond if ctx.cond_grad else None), None


# ---- registration (routing: ops/_library.py) ------------------------------------------------------
gated_activation_op = define("gated_activation(Tensor x, Tensor? cond, int dim) -> Tensor",
                             impl=_gated_activation_kernel, fake=_gated_activation_fake,
                             setup_context=_setup_context, backward=_backward)
gated_activation_backward_op = define(
    "gated_activation_backward(Tensor grad, Tensor x, Tensor? cond, int dim, bool cond_grad) -> (Tensor, Tensor)",
    impl=_gated_activation_backward_kernel, fake=_gated_activation_backward_fake)


# ---- public function --------------------------------------------------------------------------
def gated_activation(x: torch.Tensor, cond: torch.Tensor | None = None, dim: int = 1) -> torch.Tensor:
    """tanh(a + ca) * sigmoid(b + cb) over the two halves a, b of x along `dim`.

    x     (N, 2C, ...) float32 / float16 / bfloat16 (float64 runs the reference); a = the first C
          channels along `dim`, b = the last C
    cond  None or (N, 2C) per-sample bias [ca | cb] (e.g. a class embedding) in x's dtype and on
          its device, broadcast over every dimension but 0 and `dim` (needs dim != 0)
    dim   the gated dimension (negative counts from the end); its size must be even

    Returns (N, C, ...) in x's dtype, differentiable with respect to x and cond.
    """
    dim = _check_inputs(x, cond, dim)
    return gated_activation_op(x, cond, dim)


def _check_inputs(x, cond, dim) -> int:
    args.check_tensor("x", x)
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    ndim = x.dim()
    if not -ndim <= dim < ndim:
        raise ValueError(f"dim {dim} is out of range for x with {ndim} dimensions {tuple(x.shape)}")
    dim %= ndim
    size = x.shape[dim]
    if size % 2:
        raise ValueError(f"gated_activation splits x along dim {dim} into two halves, so its size must be even; "
                         f"x has shape {tuple(x.shape)} (size {size} along dim {dim})")
    if cond is not None:
        if not isinstance(cond, torch.Tensor):
            raise TypeError(f"cond must be a torch.Tensor or None, got {type(cond).__name__}")
        if dim == 0:
            raise ValueError("cond is a per-sample bias over dim 0, so the gated dim must not be 0")
        if tuple(cond.shape) != (x.shape[0], size):
            raise ValueError(f"cond must have shape (N, 2C) = {(x.shape[0], size)} for x of shape {tuple(x.shape)} "
                             f"gated along dim {dim}, got {tuple(cond.shape)}")
        if cond.dtype != x.dtype:
            raise TypeError(f"cond must have x's dtype ({x.dtype}), got {cond.dtype}")
        if cond.device != x.device:
            raise ValueError(f"cond must be on x's device {x.device}, got {cond.device}")
    return dim
