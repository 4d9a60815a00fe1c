"""GroupNorm + per-sample scale-shift + SiLU in one pass, the chain of every residual block of a
diffusion UNet (Wu & He 2018 "Group Normalization"; the scale-shift time modulation of Dhariwal &
Nichol 2021, "Diffusion Models Beat GANs", appendix A):

    xhat = (x - mean_g) / sqrt(var_g + eps)          over each (sample, group) of C / G channels
    h    = xhat * weight[c] + bias[c]                 (affine, optional)
    h    = h * (1 + scale[n, c]) + shift[n, c]        (modulation, each optional)
    y    = silu(h) = h * sigmoid(h)                   (or act=None: y = h)

The math is written once in csrc/norm/group_norm_act.h for the C++ CPU and CUDA kernels. Forward:
one work unit per (sample, group) takes the group's mean and variance in fp32 (two passes over the
group, which then sits in cache) and writes y in a third. Backward recomputes the statistics and h,
takes per-(sample, channel) sums S1 = sum(g'), S2 = sum(g' * xhat) (g' = grad_y * act'(h)), from
which grad_shift = S1, grad_scale = weight * S2 + bias * S1 and grad_x follow, and writes the
weight/bias gradients by adding the per-sample terms of each channel in sample order (no atomics:
the result does not depend on the thread count). Arithmetic in fp32 for fp16/bf16 storage.

Reading order: reference -> host launchers -> torch.library op + autograd -> public function.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from genkernels import _ext
from genkernels.ops import _args as args
from genkernels.ops._library import define

ACTS = ("silu", None)
_ACT_CODES = {"none": 0, "silu": 1}  # the op's string -> gk::kNormAct* (csrc/norm/norm_args.h)


# ---- reference --------------------------------------------------------------------------------
def _per_channel(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """(N, C) -> (N, C, 1, ...) against an ndim-dimensional x."""
    return t.reshape(t.shape + (1,) * (ndim - 2))


def group_norm_act_ref(x, num_groups, weight=None, bias=None, scale=None, shift=None, eps=1e-5, act="silu"):
    """Pure-PyTorch chain in x's dtype (eager ops, differentiable by autograd): F.group_norm, the
    modulation, F.silu."""
    h = F.group_norm(x, num_groups, weight, bias, eps)
    if scale is not None:
        h = h * (1 + _per_channel(scale, x.dim()))
    if shift is not None:
        h = h + _per_channel(shift, x.dim())
    return F.silu(h) if act == "silu" else h


def group_norm_act_backward_ref(grad_y, x, num_groups, weight, bias, scale, shift, eps, act):
    """Closed-form gradients in float32 (float64 for float64 inputs), the twin of the kernels'
    (csrc/norm/group_norm_act.h). Returns (grad_x, grad_weight, grad_bias, grad_scale, grad_shift)
    in x's dtype, an empty tensor for each absent input."""
    acc = torch.promote_types(x.dtype, torch.float32)
    n, c = x.shape[0], x.shape[1]
    inner = math.prod(x.shape[2:])
    m = c // num_groups * inner
    xg = x.to(acc).reshape(n, num_groups, m)
    mean = xg.mean(-1, keepdim=True)
    rstd = torch.rsqrt(((xg - mean) ** 2).mean(-1, keepdim=True) + eps)
    xhat = ((xg - mean) * rstd).reshape(n, c, inner)
    ones = torch.ones(c, dtype=acc, device=x.device)
    w = ones if weight is None else weight.to(acc)
    b = torch.zeros_like(ones) if bias is None else bias.to(acc)
    s1 = torch.ones(n, c, dtype=acc, device=x.device) if scale is None else 1 + scale.to(acc)
    g = grad_y.to(acc).reshape(n, c, inner)
    if act == "silu":
        h = (xhat * w[:, None] + b[:, None]) * s1[..., None]
        if shift is not None:
            h = h + shift.to(acc)[..., None]
        sig = torch.sigmoid(h)
        g = g * sig * (1 + h * (1 - sig))
    s_1, s_2 = g.sum(-1), (g * xhat).sum(-1)                             # (N, C)
    k = w * s1                                                           # d h / d xhat
    a_term = (k * s_1).reshape(n, num_groups, c // num_groups).sum(-1, keepdim=True) / max(m, 1)  # mean of grad_xhat
    b_term = (k * s_2).reshape(n, num_groups, c // num_groups).sum(-1, keepdim=True) / max(m, 1)  # ... * xhat
    gxhat = (g * k[..., None]).reshape(n, num_groups, m)
    grad_x = rstd * (gxhat - a_term - xhat.reshape(n, num_groups, m) * b_term)
    empty = x.new_empty((0,))
    out = [grad_x.reshape(x.shape),
           empty if weight is None else (s_2 * s1).sum(0),
           empty if bias is None else (s_1 * s1).sum(0),
           empty if scale is None else s_2 * w + s_1 * b,
           empty if shift is None else s_1]
    return tuple(t.to(x.dtype).contiguous() for t in out)


# ---- host launchers (validate what only they see, allocate, launch) --------------------------
def _sizes(x: torch.Tensor) -> tuple[int, int, int]:
    """(N, C, inner) of the kernels' view of x."""
    return x.shape[0], x.shape[1], math.prod(x.shape[2:])


def _backend(x):
    backend = args.choose_backend("group_norm_act", x)
    return backend


def _group_norm_act_kernel(x, num_groups, weight, bias, scale, shift, eps, act):
    backend = _backend(x)
    if backend == "torch":
        with torch.no_grad():
            return group_norm_act_ref(x, num_groups, weight, bias, scale, shift, eps,
                                      None if act == "none" else act).contiguous()
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    n, c, inner = _sizes(x)
    if x.numel():
        # dense copies bound to names: they must outlive the launch
        x_d, w_d, b_d = x.contiguous(), args.dense(weight), args.dense(bias)
        s_d, t_d = args.dense(scale), args.dense(shift)
        args.kernel(backend, "group_norm_act", like=x)(
            x=x_d.data_ptr(), weight=_ext.ptr(w_d), bias=_ext.ptr(b_d), scale=_ext.ptr(s_d), shift=_ext.ptr(t_d),
            y=y.data_ptr(), N=n, C=c, G=num_groups, inner=inner, eps=eps, act=_ACT_CODES[act],
            dtype=_ext.dtype_code(x))
    return y


def _group_norm_act_backward_kernel(grad_y, x, num_groups, weight, bias, scale, shift, eps, act):
    backend = _backend(x)
    if backend == "torch":
        return group_norm_act_backward_ref(grad_y, x, num_groups, weight, bias, scale, shift, eps,
                                           None if act == "none" else act)
    n, c, inner = _sizes(x)
    grad_x = torch.empty_like(x, memory_format=torch.contiguous_format)
    grads = [x.new_empty((0,)) if t is None else torch.empty_like(t, memory_format=torch.contiguous_format)
             for t in (weight, bias, scale, shift)]
    if x.numel():
        # per-(sample, channel) sums S1, S2 in float32, added over samples in order by the kernel
        sums = torch.empty(2, n, c, dtype=torch.float32, device=x.device)
        g_d, x_d = grad_y.to(x.dtype).contiguous(), x.contiguous()
        w_d, b_d, s_d, t_d = args.dense(weight), args.dense(bias), args.dense(scale), args.dense(shift)
        gw, gb, gs, gt = (g if t is not None else None for g, t in zip(grads, (weight, bias, scale, shift)))
        args.kernel(backend, "group_norm_act_backward", like=x)(
            grad_y=g_d.data_ptr(), x=x_d.data_ptr(), weight=_ext.ptr(w_d), bias=_ext.ptr(b_d),
            scale=_ext.ptr(s_d), shift=_ext.ptr(t_d), grad_x=grad_x.data_ptr(), grad_weight=_ext.ptr(gw),
            grad_bias=_ext.ptr(gb), grad_scale=_ext.ptr(gs), grad_shift=_ext.ptr(gt), sums=sums.data_ptr(),
            N=n, C=c, G=num_groups, inner=inner, eps=eps, act=_ACT_CODES[act], dtype=_ext.dtype_code(x))
    else:  # no element: parameter gradients are zero (the kernel wrote nothing)
        for g in grads:
            g.zero_()
    return (grad_x, *grads)


# ---- fakes and autograd --------------------------------------------------------------------------
def _group_norm_act_fake(x, num_groups, weight, bias, scale, shift, eps, act):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _group_norm_act_backward_fake(grad_y, x, num_groups, weight, bias, scale, shift, eps, act):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            *(x.new_empty((0,)) if t is None else torch.empty_like(t, memory_format=torch.contiguous_format)
              for t in (weight, bias, scale, shift)))


def _setup_context(ctx, inputs, output):
    x, num_groups, weight, bias, scale, shift, eps, act = inputs
    ctx.save_for_backward(x, weight, bias, scale, shift)
    ctx.config = (num_groups, eps, act)


def _backward(ctx, grad_y):
    x, weight, bias, scale, shift = ctx.saved_tensors
    num_groups, eps, act = ctx.config
    grads = group_norm_act_backward_op(grad_y, x, num_groups, weight, bias, scale, shift, eps, act)
    gx, gw, gb, gs, gt = (g if t is not None else None
                          for g, t in zip(grads, (x, weight, bias, scale, shift)))
    return gx, None, gw, gb, gs, gt, None, None


# ---- registration (routing: ops/_library.py) ------------------------------------------------------
group_norm_act_op = define(
    "group_norm_act(Tensor x, int num_groups, Tensor? weight, Tensor? bias, Tensor? scale, Tensor? shift, "
    "float eps, str act) -> Tensor",
    impl=_group_norm_act_kernel, fake=_group_norm_act_fake, setup_context=_setup_context, backward=_backward)
group_norm_act_backward_op = define(
    "group_norm_act_backward(Tensor grad_y, Tensor x, int num_groups, Tensor? weight, Tensor? bias, Tensor? scale, "
    "Tensor? shift, float eps, str act) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    impl=_group_norm_act_backward_kernel, fake=_group_norm_act_backward_fake)


# ---- public function --------------------------------------------------------------------------
def group_norm_act(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None = None,
                   bias: torch.Tensor | None = None, *, scale: torch.Tensor | None = None,
                   shift: torch.Tensor | None = None, eps: float = 1e-5, act: str | None = "silu") -> torch.Tensor:
    """act(GroupNorm(x) * weight + bias) with optional per-sample modulation, fused.

    x           (N, C, *spatial) float32 / float16 / bfloat16 / float64 (spatial may be empty)
    num_groups  G >= 1 dividing C; statistics over each (sample, group) of C / G channels
    weight      (C,) or None (1); bias (C,) or None (0): GroupNorm's affine
    scale       (N, C) or None: h = h * (1 + scale); shift (N, C) or None: h = h + shift
    eps         > 0, added to the variance
    act         "silu" or None
    All tensors in x's dtype and on its device. Returns y with x's shape and dtype; differentiable
    with respect to x, weight, bias, scale and shift.
    """
    _check_inputs(x, num_groups, weight, bias, scale, shift, eps, act)
    return group_norm_act_op(x, num_groups, weight, bias, scale, shift, float(eps), "none" if act is None else act)


def _check_inputs(x, num_groups, weight, bias, scale, shift, eps, act) -> None:
    args.check_tensor("x", x)
    if x.dim() < 2:
        raise ValueError(f"x must be (N, C, *spatial), got shape {tuple(x.shape)}")
    if isinstance(num_groups, bool) or not isinstance(num_groups, int):
        raise TypeError(f"num_groups must be an int, got {type(num_groups).__name__}")
    if num_groups < 1 or x.shape[1] % num_groups:
        raise ValueError(f"num_groups must be >= 1 and divide the channel count, got num_groups={num_groups} for x "
                         f"of shape {tuple(x.shape)} ({x.shape[1]} channels)")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    if act not in ACTS:
        raise ValueError(f"act must be 'silu' or None, got {act!r}")
    n, c = x.shape[0], x.shape[1]
    for name, t, shape, what in (("weight", weight, (c,), "(C,)"), ("bias", bias, (c,), "(C,)"),
                                 ("scale", scale, (n, c), "(N, C)"), ("shift", shift, (n, c), "(N, C)")):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {what} = {shape} for x of shape {tuple(x.shape)}, "
                             f"got {tuple(t.shape)}")
        if t.dtype != x.dtype:
            raise TypeError(f"{name} must have x's dtype ({x.dtype}), got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} must be on x's device {x.device}, got {t.device}")
