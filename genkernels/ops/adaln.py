"""adaLN modulation of the DiT blocks (Peebles & Xie 2023, "Scalable Diffusion Models with
Transformers", section 3.2): a parameter-free LayerNorm over the last dimension, then a per-sample
scale and shift regressed from the conditioning,

    y[n, l, :] = (x[n, l, :] - mean) / sqrt(var + eps) * (1 + scale[n, :]) + shift[n, :]

for x (N, L, D) and shift / scale (N, D). (The adaLN-Zero gate multiplies the block's output and is
left to the caller: it is one broadcast multiply that autograd handles.)

The math is written once in csrc/norm/adaln.h for the C++ CPU and CUDA kernels: one work unit per
(sample, block of rows) takes each row's mean and variance in fp32 (two passes over the row) and
writes y. Backward recomputes the statistics and writes grad_x per row, and per-(sample, row block,
channel) partial sums of grad_y * xhat and grad_y, which the kernel then adds over the row blocks in
order into grad_scale and grad_shift (no atomics: independent of the thread count). Arithmetic in
fp32 for fp16/bf16 storage.

Reading order: reference -> host launchers -> torch.library op + autograd -> public function.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from genkernels import _ext
from genkernels.ops import _args as args
from genkernels.ops._library import define

ROW_BLOCK = 32  # rows of one work unit; must match gk::kAdaLNRowBlock (csrc/norm/adaln.h)


# ---- reference --------------------------------------------------------------------------------
def adaln_modulate_ref(x, shift, scale, eps=1e-6):
    """Pure-PyTorch adaLN in x's dtype (eager ops, differentiable by autograd)."""
    return F.layer_norm(x, x.shape[-1:], eps=eps) * (1 + scale[:, None]) + shift[:, None]


def adaln_modulate_backward_ref(grad_y, x, shift, scale, eps):
    """Closed-form gradients in float32 (float64 for float64 inputs), the twin of the kernels'
    (csrc/norm/adaln.h). Returns (grad_x, grad_shift, grad_scale) in x's dtype."""
    acc = torch.promote_types(x.dtype, torch.float32)
    xa, g = x.to(acc), grad_y.to(acc)
    mean = xa.mean(-1, keepdim=True)
    rstd = torch.rsqrt(((xa - mean) ** 2).mean(-1, keepdim=True) + eps)
    xhat = (xa - mean) * rstd
    gxhat = g * (1 + scale.to(acc)[:, None])
    grad_x = rstd * (gxhat - gxhat.mean(-1, keepdim=True) - xhat * (gxhat * xhat).mean(-1, keepdim=True))
    out = (grad_x, g.sum(1), (g * xhat).sum(1))
    return tuple(t.to(x.dtype).contiguous() for t in out)


# ---- host launchers (validate what only they see, allocate, launch) --------------------------
def _backend(x):
    backend = args.choose_backend("adaln_modulate", x)
    return backend


def _adaln_kernel(x, shift, scale, eps):
    backend = _backend(x)
    if backend == "torch":
        with torch.no_grad():
            return adaln_modulate_ref(x, shift, scale, eps).contiguous()
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    n, l, d = x.shape
    if x.numel():
        x_d, t_d, s_d = x.contiguous(), shift.contiguous(), scale.contiguous()
        args.kernel(backend, "adaln_modulate", like=x)(
            x=x_d.data_ptr(), shift=t_d.data_ptr(), scale=s_d.data_ptr(), y=y.data_ptr(), N=n, L=l, D=d, eps=eps,
            dtype=_ext.dtype_code(x))
    return y


def _adaln_backward_kernel(grad_y, x, shift, scale, eps):
    backend = _backend(x)
    if backend == "torch":
        return adaln_modulate_backward_ref(grad_y, x, shift, scale, eps)
    n, l, d = x.shape
    grad_x = torch.empty_like(x, memory_format=torch.contiguous_format)
    grad_shift = torch.empty_like(shift, memory_format=torch.contiguous_format)
    grad_scale = torch.empty_like(scale, memory_format=torch.contiguous_format)
    if x.numel():
        blocks = (l + ROW_BLOCK - 1) // ROW_BLOCK
        # (2, N, blocks, D) partial sums, then (N * L, 2) row statistics (csrc/norm/norm_args.h)
        partials = torch.empty(2 * n * blocks * d + 2 * n * l, dtype=torch.float32, device=x.device)
        g_d, x_d, s_d = grad_y.to(x.dtype).contiguous(), x.contiguous(), scale.contiguous()
        args.kernel(backend, "adaln_modulate_backward", like=x)(
            grad_y=g_d.data_ptr(), x=x_d.data_ptr(), scale=s_d.data_ptr(), grad_x=grad_x.data_ptr(),
            grad_shift=grad_shift.data_ptr(), grad_scale=grad_scale.data_ptr(), partials=partials.data_ptr(),
            N=n, L=l, D=d, eps=eps, dtype=_ext.dtype_code(x))
    else:
        grad_shift.zero_()
        grad_scale.zero_()
    return grad_x, grad_shift, grad_scale


# ---- fakes and autograd --------------------------------------------------------------------------
def _adaln_fake(x, shift, scale, eps):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _adaln_backward_fake(grad_y, x, shift, scale, eps):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (x, shift, scale))


def _setup_context(ctx, inputs, output):
    x, shift, scale, eps = inputs
    ctx.save_for_backward(x, shift, scale)
    ctx.eps = eps


def _backward(ctx, grad_y):
    x, shift, scale = ctx.saved_tensors
    grad_x, grad_shift, grad_scale = adaln_modulate_backward_op(grad_y, x, shift, scale, ctx.eps)
    return grad_x, grad_shift, grad_scale, None


# ---- registration (routing: ops/_library.py) ------------------------------------------------------
adaln_modulate_op = define("adaln_modulate(Tensor x, Tensor shift, Tensor scale, float eps) -> Tensor",
                           impl=_adaln_kernel, fake=_adaln_fake, setup_context=_setup_context, backward=_backward)
adaln_modulate_backward_op = define(
    "adaln_modulate_backward(Tensor grad_y, Tensor x, Tensor shift, Tensor scale, float eps) "
    "-> (Tensor, Tensor, Tensor)",
    impl=_adaln_backward_kernel, fake=_adaln_backward_fake)


# ---- public function --------------------------------------------------------------------------
def adaln_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, *, eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm(x, no affine) * (1 + scale[:, None]) + shift[:, None], fused.

    x       (N, L, D) float32 / float16 / bfloat16 / float64: N samples of L tokens of width D
    shift   (N, D) in x's dtype and on its device; scale (N, D) likewise
    eps     > 0, added to the variance
    Returns y (N, L, D) in x's dtype; differentiable with respect to x, shift and scale.
    """
    _check_inputs(x, shift, scale, eps)
    return adaln_modulate_op(x, shift, scale, float(eps))


def _check_inputs(x, shift, scale, eps) -> None:
    args.check_tensor("x", x)
    if x.dim() != 3:
        raise ValueError(f"x must be (N, L, D), got shape {tuple(x.shape)}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    expected = (x.shape[0], x.shape[2])
    for name, t in (("shift", shift), ("scale", scale)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if tuple(t.shape) != expected:
            raise ValueError(f"{name} must have shape (N, D) = {expected} for x of shape {tuple(x.shape)}, "
                             f"got {tuple(t.shape)}")
        if t.dtype != x.dtype:
            raise TypeError(f"{name} must have x's dtype ({x.dtype}), got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} must be on x's device {x.device}, got {t.device}")
