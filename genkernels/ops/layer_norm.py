"""LayerNorm over the last dimension (Ba et al. 2016), a drop-in for torch.nn.functional.layer_norm
with normalized_shape = (D,):

    mean = sum x / D,  var = sum (x - mean)^2 / D,  y = (x - mean) / sqrt(var + eps) * weight + bias

The row math (and RMSNorm's, genkernels/ops/rms_norm.py, which reuses this file's launchers) is
written once in csrc/transformer/row_norm.h for the C++ CPU and CUDA kernels: fp32 statistics for
fp16/bf16 storage, the forward saves each row's mean and rstd (fp32) for the backward, and the
weight/bias gradients are per-(block of 32 rows, column) partial sums added in a fixed order (no
atomics; the result does not depend on the thread count). NaN propagates.

Reading order: reference -> host launchers -> torch.library op + autograd -> public function.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from genkernels import _ext
from genkernels.ops import _args as args
from genkernels.ops._library import define

ROW_BLOCK = 32  # gk::kRowBlock: rows per partial sum of the parameter gradients


# ---- reference --------------------------------------------------------------------------------
def layer_norm_ref(x, weight=None, bias=None, eps=1e-5):
    """torch.nn.functional.layer_norm over the last dim, in x's dtype (differentiable by autograd)."""
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def _acc(x):
    return torch.promote_types(x.dtype, torch.float32)


def row_norm_stats_ref(x2, eps, rms):
    """(mean, rstd) of the rows of x2 (R, D) in float32 (float64 for float64): the kernels' twin.
    mean is an empty tensor for RMSNorm."""
    xa = x2.to(_acc(x2))
    if rms:
        return xa.new_empty(0), torch.rsqrt(xa.square().mean(-1) + eps)
    mean = xa.mean(-1)
    return mean, torch.rsqrt((xa - mean[:, None]).square().mean(-1) + eps)


def _xhat(x2, mean, rstd, rms):
    xa = x2.to(_acc(x2))
    return xa * rstd[:, None] if rms else (xa - mean[:, None]) * rstd[:, None]


def row_norm_backward_ref(grad_y2, x2, weight, mean, rstd, rms):
    """Closed-form gradients (RowNormBackward's twin, csrc/transformer/row_norm.h) in float32
    (float64 for float64). Returns (grad_x (R, D), grad_weight (D,), grad_bias (D,)) in x's dtype."""
    acc = _acc(x2)
    g = grad_y2.to(acc)
    xhat = _xhat(x2, mean, rstd, rms)
    gp = g * weight.to(acc) if weight is not None else g
    B = (gp * xhat).mean(-1, keepdim=True)
    dx = gp - xhat * B if rms else gp - gp.mean(-1, keepdim=True) - xhat * B
    grad_x = rstd[:, None] * dx
    return grad_x.to(x2.dtype), (g * xhat).sum(0).to(x2.dtype), g.sum(0).to(x2.dtype)


# ---- host launchers (shared with rms_norm.py) ---------------------------------------------------
def _rows(x):
    d = x.shape[-1]
    return x.numel() // d if d else 0, d


def row_norm_kernel(x, weight, bias, eps, rms):
    """(y, mean, rstd): y like x, mean (R,) float32 ((0,) for RMSNorm), rstd (R,) float32 (float64
    for float64 x on the torch backend), R = x.numel() / D."""
    backend = args.choose_backend("rms_norm" if rms else "layer_norm", x)
    r, d = _rows(x)
    x2 = x.contiguous().view(r, d)
    if backend == "torch":
        mean, rstd = row_norm_stats_ref(x2, eps, rms)
        y = _xhat(x2, mean, rstd, rms)
        if weight is not None:
            y = y * weight.to(y.dtype)
        if bias is not None:
            y = y + bias.to(y.dtype)
        return y.to(x.dtype).view(x.shape), mean, rstd
    y = torch.empty_like(x2)
    mean = torch.empty(0 if rms else r, dtype=torch.float32, device=x.device)
    rstd = torch.empty(r, dtype=torch.float32, device=x.device)
    w, b = args.dense(weight), args.dense(bias)
    args.kernel(backend, "row_norm", like=x)(
        x=x2.data_ptr(), weight=w.data_ptr() if w is not None else 0, bias=b.data_ptr() if b is not None else 0,
        y=y.data_ptr(), mean=mean.data_ptr() if not rms else 0, rstd=rstd.data_ptr(), R=r, D=d, eps=float(eps),
        rms=rms, dtype=_ext.dtype_code(x))
    return y.view(x.shape), mean, rstd


def row_norm_backward_kernel(grad_y, x, weight, mean, rstd, rms):
    """(grad_x like x, grad_weight (D,), grad_bias (D,)) in x's dtype."""
    backend = args.choose_backend("rms_norm" if rms else "layer_norm", x)
    r, d = _rows(x)
    x2, g2 = x.contiguous().view(r, d), grad_y.to(x.dtype).contiguous().view(r, d)
    if backend == "torch":
        gx, gw, gb = row_norm_backward_ref(g2, x2, weight, mean, rstd, rms)
        return gx.view(x.shape), gw, gb
    grad_x = torch.empty_like(x2)
    blocks = (r + ROW_BLOCK - 1) // ROW_BLOCK
    if r * d == 0:
        zeros = torch.zeros(d, dtype=x.dtype, device=x.device)
        return grad_x.view(x.shape), zeros, zeros.clone()
    partials = torch.empty(2, blocks, d, dtype=torch.float32, device=x.device)
    w = args.dense(weight)
    mean_d, rstd_d = mean.contiguous(), rstd.contiguous()
    args.kernel(backend, "row_norm_backward", like=x)(
        grad_y=g2.data_ptr(), x=x2.data_ptr(), weight=w.data_ptr() if w is not None else 0,
        mean=mean_d.data_ptr() if not rms else 0, rstd=rstd_d.data_ptr(), grad_x=grad_x.data_ptr(),
        partials=partials.data_ptr(), R=r, D=d, rms=rms, dtype=_ext.dtype_code(x))
    sums = partials.sum(1)  # each column's block partials added in order
    # copies: the two gradients must not alias (one buffer's rows)
    return grad_x.view(x.shape), sums[0].to(x.dtype, copy=True), sums[1].to(x.dtype, copy=True)


def row_norm_fake(x, weight, bias, eps, rms):
    r, d = _rows(x)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            x.new_empty((0 if rms else r,), dtype=acc), x.new_empty((r,), dtype=acc))


def row_norm_backward_fake(grad_y, x, weight, mean, rstd, rms):
    d = x.shape[-1]
    return (torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty((d,)), x.new_empty((d,)))


# ---- torch.library op + autograd ----------------------------------------------------------------
def _impl(x, weight, bias, eps):
    return row_norm_kernel(x, weight, bias, eps, False)


def _fake(x, weight, bias, eps):
    return row_norm_fake(x, weight, bias, eps, False)


def _backward_impl(grad_y, x, weight, mean, rstd):
    return row_norm_backward_kernel(grad_y, x, weight, mean, rstd, False)


def _backward_fake(grad_y, x, weight, mean, rstd):
    return row_norm_backward_fake(grad_y, x, weight, mean, rstd, False)


def _setup_context(ctx, inputs, output):
    x, weight, bias, eps = inputs
    ctx.save_for_backward(x, weight, output[1], output[2])
    ctx.has_bias = bias is not None


def _backward(ctx, grad_y, _grad_mean, _grad_rstd):
    x, weight, mean, rstd = ctx.saved_tensors
    grad_x, grad_w, grad_b = layer_norm_backward_op(grad_y, x, weight, mean, rstd)
    return grad_x, grad_w if weight is not None else None, grad_b if ctx.has_bias else None, None


layer_norm_op = define("layer_norm(Tensor x, Tensor? weight, Tensor? bias, float eps) -> (Tensor, Tensor, Tensor)",
                       impl=_impl, fake=_fake, setup_context=_setup_context, backward=_backward)
layer_norm_backward_op = define(
    "layer_norm_backward(Tensor grad_y, Tensor x, Tensor? weight, Tensor mean, Tensor rstd) "
    "-> (Tensor, Tensor, Tensor)",
    impl=_backward_impl, fake=_backward_fake)


# ---- public function ----------------------------------------------------------------------------
def layer_norm(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
               eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last dimension: F.layer_norm(x, (D,), weight, bias, eps).

    x       (..., D) float32 / float16 / bfloat16 / float64
    weight  (D,) or None, in x's dtype and on its device; bias likewise
    Returns y with x's shape and dtype; differentiable with respect to x, weight and bias.
    """
    check_row_norm_inputs("layer_norm", x, (("weight", weight), ("bias", bias)), eps)
    return layer_norm_op(x, weight, bias, float(eps))[0]


def check_row_norm_inputs(op, x, params, eps) -> None:
    args.check_tensor("x", x)
    if x.shape[-1] == 0:
        raise ValueError(f"{op}: x must have a non-empty last dimension, got shape {tuple(x.shape)}")
    for name, t in params:
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor or None, got {type(t).__name__}")
        if tuple(t.shape) != (x.shape[-1],):
            raise ValueError(f"{op}: {name} must have shape (D,) = ({x.shape[-1]},) for x of shape "
                             f"{tuple(x.shape)}, got {tuple(t.shape)}")
        if t.dtype != x.dtype:
            raise TypeError(f"{op}: {name} must have x's dtype ({x.dtype}), got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{op}: {name} must be on x's device {x.device}, got {t.device}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"{op}: eps must be a non-negative float, got {eps!r}")
