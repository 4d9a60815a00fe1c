"""Affine and additive coupling of RealNVP / Glow (Dinh et al. 2017, "Density estimation using Real
NVP", eq. 4-6; Kingma & Dhariwal 2018, "Glow", table 1):

    forward   y1 = x1,  y2 = x2 * exp(s) + t,        logdet = sum(s)
    inverse   x1 = y1,  x2 = (y2 - t) * exp(-s),     logdet = -sum(s)

x1 is the identity part, x2 the transformed part (the mask says which is which), t = shift and s
the bounded log-scale of the conditioner's raw output: s = scale * tanh(raw / scale) ("tanh") or
s = log(sigmoid(raw + 2)) ("sigmoid", Glow). Without a log-scale the coupling is additive
(y2 = x2 + t, logdet 0).

The math (and its gradients) is written once in csrc/flow/affine_coupling.h for the C++ CPU and
CUDA kernels: one pass writes y (the identity part copied, no split / cat) and per-(sample, chunk)
partial sums of s, added in a fixed order (no atomics, independent of the thread count); one pass
writes every gradient, the log-determinant's included. Arithmetic in fp32 for fp16/bf16 storage.
The checkerboard mask is computed from the element's (h, w), never materialised.

Reading order: reference -> host launchers -> torch.library op + autograd -> public function.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from genkernels import _ext
from genkernels.ops import _args as args
from genkernels.ops._library import define

MASKS = ("channel", "checkerboard")
FORMS = ("tanh", "sigmoid")


# ---- reference --------------------------------------------------------------------------------
def _bounded_log_scale(raw: torch.Tensor, scale: float, form: str) -> torch.Tensor:
    if form == "tanh":
        return scale * torch.tanh(raw / scale)
    return F.logsigmoid(raw + 2.0)


def _logdet_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def checkerboard_mask(x: torch.Tensor, parity: int) -> torch.Tensor:
    """(H, W) bool, True at the transformed positions of a (N, C, H, W) x: (h + w) % 2 != parity."""
    h = torch.arange(x.shape[2], device=x.device).view(-1, 1)
    w = torch.arange(x.shape[3], device=x.device).view(1, -1)
    return (h + w) % 2 != parity


def _transform(x2, shift, raw, scale, form, inverse):
    """(y2, s) of the transformed part; s is None for additive coupling."""
    if raw is None:
        return (x2 - shift if inverse else x2 + shift), None
    s = _bounded_log_scale(raw, scale, form)
    return ((x2 - shift) * torch.exp(-s) if inverse else x2 * torch.exp(s) + shift), s


def affine_coupling_ref(x, shift, log_scale=None, mask="channel", parity=0, scale=2.0, form="tanh",
                        inverse=False):
    """Pure-PyTorch coupling in x's dtype (eager ops, differentiable by autograd); logdet is summed
    in float32 for fp16/bf16 inputs. Returns (y, logdet)."""
    n = x.shape[0]
    if mask == "channel":
        half = x.shape[1] // 2
        x1, x2 = x.narrow(1, 0, half), x.narrow(1, half, half)
        if parity:  # parity 1 transforms the first half
            x1, x2 = x2, x1
        y2, s = _transform(x2, shift, log_scale, scale, form, inverse)
        y = torch.cat([y2, x1] if parity else [x1, y2], dim=1)
    else:
        m = checkerboard_mask(x, parity)
        # identity positions of shift / log_scale are replaced before use, so they get exactly zero
        # gradient and their values (even inf / NaN) never reach y or logdet
        shift = torch.where(m, shift, torch.zeros((), dtype=shift.dtype, device=shift.device))
        if log_scale is not None:
            log_scale = torch.where(m, log_scale, torch.zeros((), dtype=log_scale.dtype, device=x.device))
        y2, s = _transform(x, shift, log_scale, scale, form, inverse)
        y = torch.where(m, y2, x)
        if s is not None:
            s = torch.where(m, s, torch.zeros((), dtype=s.dtype, device=x.device))
    if s is None:
        logdet = torch.zeros(n, dtype=_logdet_dtype(x), device=x.device)
    else:
        logdet = s.flatten(1).to(_logdet_dtype(x)).sum(1)
        if inverse:
            logdet = -logdet
    return y, logdet


def _backward_terms(raw, scale, form, inverse):
    """(multiplier exp(+-s), ds/draw) of the map's direction, computed without cancellation."""
    if form == "tanh":
        a = raw / scale
        e = torch.exp(-2.0 * a.abs())
        s, ds = scale * torch.tanh(a), 4.0 * e / ((1.0 + e) * (1.0 + e))
    else:
        z = raw + 2.0
        s, ds = F.logsigmoid(z), torch.sigmoid(-z)
    return torch.exp(-s if inverse else s), ds


def _grads_transformed(x2, shift, raw, g, gld, scale, form, inverse):
    """(grad_x2, grad_shift, grad_raw or None) of the transformed part; gld broadcasts per sample."""
    if raw is None:
        return g, (-g if inverse else g), None
    m, ds = _backward_terms(raw, scale, form, inverse)
    gx = g * m
    if inverse:
        return gx, -gx, (-(g * ((x2 - shift) * m)) - gld) * ds
    return gx, g, (g * x2 * m + gld) * ds


def affine_coupling_backward_ref(grad_y, grad_logdet, x, shift, log_scale, mask, parity, scale, form, inverse):
    """Closed-form gradients in float32 (float64 for float64 inputs): coupling_grads' twin
    (csrc/flow/affine_coupling.h). Returns (grad_x, grad_shift, grad_log_scale) in x's dtype;
    grad_log_scale is an empty tensor for additive coupling."""
    acc = torch.promote_types(x.dtype, torch.float32)
    g, xa, t = grad_y.to(acc), x.to(acc), shift.to(acc)
    raw = None if log_scale is None else log_scale.to(acc)
    gld = grad_logdet.to(acc).reshape((-1,) + (1,) * (x.dim() - 1))
    if mask == "channel":
        half = x.shape[1] // 2
        keep, moved = (half, 0) if parity else (0, half)  # start of the identity / transformed half
        gx2, gt, gr = _grads_transformed(xa.narrow(1, moved, half), t, raw, g.narrow(1, moved, half), gld,
                                         scale, form, inverse)
        g1 = g.narrow(1, keep, half)
        grad_x = torch.cat([gx2, g1] if parity else [g1, gx2], dim=1)
    else:
        m = checkerboard_mask(x, parity)
        zero = torch.zeros((), dtype=acc, device=x.device)
        t = torch.where(m, t, zero)
        raw = None if raw is None else torch.where(m, raw, zero)
        gx2, gt, gr = _grads_transformed(xa, t, raw, g, gld, scale, form, inverse)
        grad_x, gt = torch.where(m, gx2, g), torch.where(m, gt, zero)
        gr = None if gr is None else torch.where(m, gr, zero)
    grad_raw = x.new_empty((0,)) if gr is None else gr.to(x.dtype).contiguous()
    return grad_x.to(x.dtype).contiguous(), gt.to(x.dtype).contiguous(), grad_raw


# ---- host launchers (validate what only they see, allocate, launch) --------------------------
_MASK_CODES = {"channel": 0, "checkerboard": 1}
_FORM_CODES = {"tanh": 0, "sigmoid": 1}


def _layout(x: torch.Tensor, mask: str) -> dict:
    """Sizes of the kernels' (N, C, inner) view of x and the count of transformed elements per sample."""
    n, c = x.shape[0], x.shape[1]
    inner = math.prod(x.shape[2:])
    h, w = (x.shape[2], x.shape[3]) if mask == "checkerboard" else (1, 1)
    return dict(N=n, C=c, inner=inner, H=h, W=w)


def _transformed_count(x: torch.Tensor, mask: str) -> int:
    per_sample = math.prod(x.shape[1:])
    return per_sample // 2 if mask == "channel" else per_sample


def _affine_coupling_kernel(x, shift, log_scale, mask, parity, scale, form, inverse):
    backend = args.choose_backend("affine_coupling", x)
    if backend == "torch":
        y, logdet = affine_coupling_ref(x, shift, log_scale, mask, parity, scale, form, inverse)
        return y.contiguous(), logdet.contiguous()
    n = x.shape[0]
    count = _transformed_count(x, mask)
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    chunks = args.num_chunks(count)
    partials = args.partial_sums(n, chunks, x) if log_scale is not None else None
    if x.numel():
        # dense copies bound to names: they must outlive the launch
        x_dense, shift_dense, raw_dense = x.contiguous(), shift.contiguous(), args.dense(log_scale)
        args.kernel(backend, "affine_coupling", like=x)(
            x=x_dense.data_ptr(), shift=shift_dense.data_ptr(), log_scale=_ext.ptr(raw_dense), y=y.data_ptr(), logdet_partials=_ext.ptr(partials), **_layout(x, mask), mask=_MASK_CODES[mask],
            parity=parity, scale=scale, form=_FORM_CODES[form], inverse=inverse, dtype=_ext.dtype_code(x))
    if log_scale is None or not x.numel():
        return y, torch.zeros(n, dtype=_logdet_dtype(x), device=x.device)
    logdet = args.sum_partials(partials, n, chunks)
    return y, (-logdet if inverse else logdet)


def _affine_coupling_backward_kernel(grad_y, grad_logdet, x, shift, log_scale, mask, parity, scale, form, inverse):
    backend = args.choose_backend("affine_coupling", x)
    if backend == "torch":
        return affine_coupling_backward_ref(grad_y, grad_logdet, x, shift, log_scale, mask, parity, scale, form,
                                            inverse)
    grad_x = torch.empty_like(x, memory_format=torch.contiguous_format)
    grad_shift = torch.empty_like(shift, memory_format=torch.contiguous_format)
    grad_raw = x.new_empty((0,)) if log_scale is None else torch.empty_like(log_scale, memory_format=torch.contiguous_format)
    if x.numel():
        gld = grad_logdet.to(torch.float32).contiguous()
        grad_dense, x_dense, shift_dense = grad_y.to(x.dtype).contiguous(), x.contiguous(), shift.contiguous()
        raw_dense = args.dense(log_scale)
        args.kernel(backend, "affine_coupling_backward", like=x)(
            grad_y=grad_dense.data_ptr(), grad_logdet=gld.data_ptr(), x=x_dense.data_ptr(),
            shift=shift_dense.data_ptr(), log_scale=_ext.ptr(raw_dense), grad_x=grad_x.data_ptr(),
            grad_shift=grad_shift.data_ptr(),
            grad_log_scale=grad_raw.data_ptr() if log_scale is not None else 0, **_layout(x, mask),
            mask=_MASK_CODES[mask], parity=parity, scale=scale, form=_FORM_CODES[form], inverse=inverse,
            dtype=_ext.dtype_code(x))
    return grad_x, grad_shift, grad_raw


# ---- fakes and autograd --------------------------------------------------------------------------
def _affine_coupling_fake(x, shift, log_scale, mask, parity, scale, form, inverse):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            x.new_empty((x.shape[0],), dtype=_logdet_dtype(x)))


def _affine_coupling_backward_fake(grad_y, grad_logdet, x, shift, log_scale, mask, parity, scale, form, inverse):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(shift, memory_format=torch.contiguous_format),
            x.new_empty((0,)) if log_scale is None else torch.empty_like(log_scale, memory_format=torch.contiguous_format))


def _setup_context(ctx, inputs, output):
    x, shift, log_scale, mask, parity, scale, form, inverse = inputs
    ctx.save_for_backward(x, shift, log_scale)
    ctx.config = (mask, parity, scale, form, inverse)


def _backward(ctx, grad_y, grad_logdet):
    x, shift, log_scale = ctx.saved_tensors
    grad_x, grad_shift, grad_raw = affine_coupling_backward_op(grad_y, grad_logdet, x, shift, log_scale, *ctx.config)
    return grad_x, grad_shift, (grad_raw if log_scale is not None else None), None, None, None, None, None


# ---- registration (routing: ops/_library.py) ------------------------------------------------------
affine_coupling_op = define(
    "affine_coupling(Tensor x, Tensor shift, Tensor? log_scale, str mask, int parity, float scale, str form, "
    "bool inverse) -> (Tensor, Tensor)",
    impl=_affine_coupling_kernel, fake=_affine_coupling_fake, setup_context=_setup_context, backward=_backward)
affine_coupling_backward_op = define(
    "affine_coupling_backward(Tensor grad_y, Tensor grad_logdet, Tensor x, Tensor shift, Tensor? log_scale, "
    "str mask, int parity, float scale, str form, bool inverse) -> (Tensor, Tensor, Tensor)",
    impl=_affine_coupling_backward_kernel, fake=_affine_coupling_backward_fake)


# ---- public function --------------------------------------------------------------------------
def affine_coupling(x: torch.Tensor, shift: torch.Tensor, log_scale: torch.Tensor | None = None, *,
                    mask: str = "channel", parity: int = 0, scale: float = 2.0, form: str = "tanh",
                    inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine (or, with log_scale=None, additive) coupling and its log-determinant.

    forward:  y2 = x2 * exp(s) + shift,       logdet = sum of s over x2's elements of each sample
    inverse:  x2 = (y2 - shift) * exp(-s),    logdet = -sum(s)           (the identity part is copied)
    s = scale * tanh(log_scale / scale) (form "tanh") or log(sigmoid(log_scale + 2)) (form "sigmoid").

    x          (N, C, *rest) float32 / float16 / bfloat16 / float64 ((N, D) for vectors: C = D)
    mask       "channel": C even; parity 0 transforms channels [C//2:], parity 1 channels [:C//2];
               shift and log_scale are (N, C//2, *rest)
               "checkerboard": x is (N, C, H, W); positions with (h + w) % 2 == parity are the
               identity part; shift and log_scale are (N, C, H, W), their values at identity
               positions are ignored (and get zero gradient)
    shift, log_scale  in x's dtype and on its device (log_scale is the raw, unbounded output)
    scale      > 0, the bound of the "tanh" form
    inverse    apply the inverse map (x is then the output y of a forward call)

    Returns (y, logdet): y with x's shape and dtype; logdet (N,) float32 for fp16/bf16 x, else in
    x's dtype. Differentiable with respect to x, shift and log_scale, through y and logdet.
    """
    _check_inputs(x, shift, log_scale, mask, parity, scale, form, inverse)
    return affine_coupling_op(x, shift, log_scale, mask, parity, float(scale), form, inverse)


def _param_shape(x: torch.Tensor, mask: str) -> tuple[int, ...]:
    if mask == "channel":
        return (x.shape[0], x.shape[1] // 2, *x.shape[2:])
    return tuple(x.shape)


def _check_inputs(x, shift, log_scale, mask, parity, scale, form, inverse) -> None:
    args.check_tensor("x", x)
    if not isinstance(mask, str) or mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
    if isinstance(parity, bool) or parity not in (0, 1):
        raise ValueError(f"parity must be 0 or 1, got {parity!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    if not isinstance(form, str) or form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if not isinstance(inverse, bool):
        raise TypeError(f"inverse must be a bool, got {type(inverse).__name__}")
    if x.dim() < 2:
        raise ValueError(f"x must be (N, C, *rest), got shape {tuple(x.shape)}")
    if mask == "channel" and x.shape[1] % 2:
        raise ValueError(f"mask 'channel' splits x's dim 1 into two halves, so it must be even; "
                         f"x has shape {tuple(x.shape)} ({x.shape[1]} channels)")
    if mask == "checkerboard" and x.dim() != 4:
        raise ValueError(f"mask 'checkerboard' needs x of shape (N, C, H, W), got {tuple(x.shape)}")
    if mask == "checkerboard" and (math.prod(x.shape[1:]) >= 2**30 or x.shape[1] * x.shape[2] >= 2**22):
        raise ValueError(f"mask 'checkerboard' takes samples with C * H * W < 2^30 and C * H < 2^22 (the kernels "
                         f"find (h, w) with 32-bit arithmetic), got x of shape {tuple(x.shape)}")
    expected = _param_shape(x, mask)
    for name, t in (("shift", shift), ("log_scale", log_scale)):
        if t is None and name == "log_scale":
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if tuple(t.shape) != expected:
            raise ValueError(f"{name} must have shape {expected} for x of shape {tuple(x.shape)} and mask "
                             f"{mask!r}, got {tuple(t.shape)}")
        if t.dtype != x.dtype:
            raise TypeError(f"{name} must have x's dtype ({x.dtype}), got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} must be on x's device {x.device}, got {t.device}")
