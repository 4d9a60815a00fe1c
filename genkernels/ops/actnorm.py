"""Activation normalisation of Glow (Kingma & Dhariwal 2018, "Glow", table 1): a per-channel affine
map with learned parameters (initialised from the data by the layer) and its log-determinant:

    forward   y = (x + bias) * exp(log_scale),      logdet = prod(rest) * sum(log_scale)
    inverse   x = y * exp(-log_scale) - bias,       logdet = -prod(rest) * sum(log_scale)

per channel c of dim 1, for x of shape (N, C, *rest). The map and its gradients are written once
in csrc/flow/actnorm.h for the C++ CPU and CUDA kernels: one pass forward, one backward pass that
writes grad_x and per-(channel, chunk) partial sums of the bias and log-scale gradients, added in
a fixed order (no atomics, independent of the thread count). The log-determinant is one number
per call, computed on the host.

Reading order: reference -> host launchers -> torch.library op + autograd -> public function.
"""
from __future__ import annotations

import math

import torch

from genkernels import _ext
from genkernels.ops import _args as args
from genkernels.ops._library import define


# ---- reference --------------------------------------------------------------------------------
def _channel_view(p: torch.Tensor, ndim: int) -> torch.Tensor:
    return p.reshape((1, -1) + (1,) * (ndim - 2))


def _logdet_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def actnorm_ref(x, bias, log_scale, inverse=False):
    """Pure-PyTorch ActNorm in x's dtype (differentiable by autograd). Returns (y, logdet)."""
    b, ls = _channel_view(bias, x.dim()), _channel_view(log_scale, x.dim())
    y = x * torch.exp(-ls) - b if inverse else (x + b) * torch.exp(ls)
    return y, _logdet(x, log_scale, inverse)


def actnorm_backward_ref(grad_y, grad_logdet, x, bias, log_scale, inverse):
    """Closed-form gradients in float32 (float64 for float64 inputs): ActNormBackward's twin
    (csrc/flow/actnorm.h). Returns (grad_x, grad_bias, grad_log_scale) in x's dtype."""
    acc = torch.promote_types(x.dtype, torch.float32)
    g, xa = grad_y.to(acc), x.to(acc)
    b, ls = _channel_view(bias.to(acc), x.dim()), _channel_view(log_scale.to(acc), x.dim())
    e = torch.exp(-ls if inverse else ls)
    dims = [d for d in range(x.dim()) if d != 1]
    grad_x = g * e
    logdet_term = math.prod(x.shape[2:]) * grad_logdet.to(acc).sum()
    if inverse:
        grad_bias, grad_log_scale = -g.sum(dims), -(g * (xa * e)).sum(dims) - logdet_term
    else:
        grad_bias, grad_log_scale = grad_x.sum(dims), (g * ((xa + b) * e)).sum(dims) + logdet_term
    return tuple(t.to(x.dtype).contiguous() for t in (grad_x, grad_bias, grad_log_scale))


# ---- host launchers (validate what only they see, allocate, launch) --------------------------
_BACKWARD_ROW_MIN = 1024  # gk::kActNormBackwardRowMin
def _sizes(x: torch.Tensor) -> tuple[int, int, int]:
    """(N, C, inner) of the kernels' view of x."""
    return x.shape[0], x.shape[1], math.prod(x.shape[2:])


def _logdet(x, log_scale, inverse):
    per_sample = math.prod(x.shape[2:]) * log_scale.to(_logdet_dtype(x)).sum()
    return (-per_sample if inverse else per_sample).reshape(1).repeat(x.shape[0])


def _actnorm_kernel(x, bias, log_scale, inverse):
    backend = args.choose_backend("actnorm", x)
    if backend == "torch":
        y, logdet = actnorm_ref(x, bias, log_scale, inverse)
        return y.contiguous(), logdet
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    n, c, inner = _sizes(x)
    if x.numel():
        # dense copies bound to names: they must outlive the launch
        x_dense, bias_dense, ls_dense = x.contiguous(), bias.contiguous(), log_scale.contiguous()
        args.kernel(backend, "actnorm", like=x)(
            x=x_dense.data_ptr(), bias=bias_dense.data_ptr(), log_scale=ls_dense.data_ptr(), y=y.data_ptr(), N=n, C=c, inner=inner, inverse=inverse, dtype=_ext.dtype_code(x))
    return y, _logdet(x, log_scale, inverse)


def _actnorm_backward_kernel(grad_y, grad_logdet, x, bias, log_scale, inverse):
    backend = args.choose_backend("actnorm", x)
    if backend == "torch":
        return actnorm_backward_ref(grad_y, grad_logdet, x, bias, log_scale, inverse)
    n, c, inner = _sizes(x)
    grad_x = torch.empty_like(x, memory_format=torch.contiguous_format)
    # rows of `inner` per (sample, channel) for long rows, else one row of N * inner per channel:
    # csrc/flow/actnorm.h's actnorm_backward_rows (the threshold must match kActNormBackwardRowMin)
    rows, per_row = (2 * c * n, inner) if inner >= _BACKWARD_ROW_MIN else (2 * c, n * inner)
    chunks = args.num_chunks(per_row)
    if x.numel():
        partials = args.partial_sums(rows, chunks, x)
        grad_dense, x_dense = grad_y.to(x.dtype).contiguous(), x.contiguous()
        bias_dense, ls_dense = bias.contiguous(), log_scale.contiguous()
        args.kernel(backend, "actnorm_backward", like=x)(
            grad_y=grad_dense.data_ptr(), x=x_dense.data_ptr(), bias=bias_dense.data_ptr(),
            log_scale=ls_dense.data_ptr(), grad_x=grad_x.data_ptr(),
            partials=partials.data_ptr(), N=n, C=c, inner=inner, inverse=inverse, dtype=_ext.dtype_code(x))
        sums = partials.view(2, c, -1).sum(-1)  # each channel's partials added in order
    else:  # no element: the sums are zero (the kernel wrote nothing)
        sums = torch.zeros(2, c, dtype=torch.float32, device=x.device)
    logdet_term = inner * grad_logdet.to(torch.float32).sum()
    grad_log_scale = sums[1] - logdet_term if inverse else sums[1] + logdet_term
    return grad_x, sums[0].to(x.dtype), grad_log_scale.to(x.dtype)


# ---- fakes and autograd --------------------------------------------------------------------------
def _actnorm_fake(x, bias, log_scale, inverse):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            x.new_empty((x.shape[0],), dtype=_logdet_dtype(x)))


def _actnorm_backward_fake(grad_y, grad_logdet, x, bias, log_scale, inverse):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(bias, memory_format=torch.contiguous_format),
            torch.empty_like(log_scale, memory_format=torch.contiguous_format))


def _setup_context(ctx, inputs, output):
    x, bias, log_scale, inverse = inputs
    ctx.save_for_backward(x, bias, log_scale)
    ctx.inverse = inverse


def _backward(ctx, grad_y, grad_logdet):
    x, bias, log_scale = ctx.saved_tensors
    grads = actnorm_backward_op(grad_y, grad_logdet, x, bias, log_scale, ctx.inverse)
    return (*grads, None)


# ---- registration (routing: ops/_library.py) ------------------------------------------------------
actnorm_op = define("actnorm(Tensor x, Tensor bias, Tensor log_scale, bool inverse) -> (Tensor, Tensor)",
                    impl=_actnorm_kernel, fake=_actnorm_fake, setup_context=_setup_context, backward=_backward)
actnorm_backward_op = define(
    "actnorm_backward(Tensor grad_y, Tensor grad_logdet, Tensor x, Tensor bias, Tensor log_scale, bool inverse) "
    "-> (Tensor, Tensor, Tensor)",
    impl=_actnorm_backward_kernel, fake=_actnorm_backward_fake)


# ---- public function --------------------------------------------------------------------------
def actnorm(x: torch.Tensor, bias: torch.Tensor, log_scale: torch.Tensor, *,
            inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel affine map y = (x + bias) * exp(log_scale) and its log-determinant.

    x          (N, C, *rest) float32 / float16 / bfloat16 / float64 ((N, D) for vectors)
    bias       (C,) in x's dtype and on its device
    log_scale  (C,) likewise
    inverse    apply x = y * exp(-log_scale) - bias instead

    Returns (y, logdet): y with x's shape and dtype; logdet (N,) = prod(rest) * sum(log_scale)
    (negated for inverse), float32 for fp16/bf16 x, else x's dtype. Differentiable with respect to
    x, bias and log_scale.
    """
    _check_inputs(x, bias, log_scale, inverse)
    return actnorm_op(x, bias, log_scale, inverse)


def _check_inputs(x, bias, log_scale, inverse) -> None:
    args.check_tensor("x", x)
    if x.dim() < 2:
        raise ValueError(f"x must be (N, C, *rest), got shape {tuple(x.shape)}")
    if not isinstance(inverse, bool):
        raise TypeError(f"inverse must be a bool, got {type(inverse).__name__}")
    for name, t in (("bias", bias), ("log_scale", log_scale)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if tuple(t.shape) != (x.shape[1],):
            raise ValueError(f"{name} must have shape (C,) = ({x.shape[1]},) for x of shape {tuple(x.shape)}, "
                             f"got {tuple(t.shape)}")
        if t.dtype != x.dtype:
            raise TypeError(f"{name} must have x's dtype ({x.dtype}), got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} must be on x's device {x.device}, got {t.device}")
