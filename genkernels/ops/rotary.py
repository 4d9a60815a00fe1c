"""Rotary position embedding (Su et al. 2021, "RoFormer"), GPT-NeoX / Llama half-split convention
(interleaved=False), applied to q or k laid out (N, T, H, D) with a position offset for cached
decoding. With half = D / 2, token t of sequence n at position p = offset_n + t and
theta_j = p / base^(2j / D):

    y[..., j]        = x[..., j] cos theta_j - x[..., j + half] sin theta_j
    y[..., j + half] = x[..., j + half] cos theta_j + x[..., j] sin theta_j

cos / sin are (P, D / 2) float32 tables (rotary_tables); the offset is one int or an (N,) int64
tensor (one per sequence, for batches whose prompts have different lengths). The backward is the
rotation by -theta (a rotation's transpose). The tables are constants: no gradient flows to them.
The math is csrc/transformer/rotary.h for the C++ CPU and CUDA kernels (fp32 arithmetic).

Reading order: reference -> host launchers -> torch.library op + autograd -> public function.
"""
from __future__ import annotations

import torch

from genkernels import _ext
from genkernels.ops import _args as args
from genkernels.ops._library import define


def rotary_tables(max_positions: int, dim: int, base: float = 10000.0, device=None):
    """(cos, sin), each (max_positions, dim // 2) float32: theta[p, j] = p / base^(2j / dim),
    computed in float64 and rounded once."""
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    inv = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    theta = torch.arange(max_positions, dtype=torch.float64)[:, None] * inv[None, :]
    return theta.cos().float().to(device), theta.sin().float().to(device)


# ---- reference --------------------------------------------------------------------------------
def _positions(x, offsets, offset):
    t = torch.arange(x.shape[1], device=x.device)
    if offsets is None:
        return (offset + t)[None, :].expand(x.shape[0], -1)
    return offsets.to(x.device)[:, None] + t[None, :]


def rotary_ref(x, cos, sin, offset=0, inverse=False):
    """Pure-PyTorch rotary embedding in x's dtype (tables cast to it; differentiable in x).
    offset: int or (N,) int64 tensor."""
    offsets = offset if isinstance(offset, torch.Tensor) else None
    pos = _positions(x, offsets, 0 if offsets is not None else offset)
    c = cos.to(x.dtype)[pos][:, :, None, :]  # (N, T, 1, half)
    s = sin.to(x.dtype)[pos][:, :, None, :]
    if inverse:
        s = -s
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)


# ---- host launchers ----------------------------------------------------------------------------
def _rotary_kernel(x, cos, sin, offsets, offset, inverse):
    backend = args.choose_backend("rotary", x)
    if backend == "torch":
        acc = torch.promote_types(x.dtype, torch.float32)
        y = rotary_ref(x.to(acc), cos, sin, offsets if offsets is not None else offset, inverse)
        return y.to(x.dtype).contiguous()
    x_d = x.contiguous()
    y = torch.empty_like(x_d)
    cos_d, sin_d = cos.contiguous(), sin.contiguous()
    off_d = offsets.contiguous() if offsets is not None else None
    n, t, h, d = x.shape
    args.kernel(backend, "rotary", like=x)(
        x=x_d.data_ptr(), cos=cos_d.data_ptr(), sin=sin_d.data_ptr(),
        offsets=off_d.data_ptr() if off_d is not None else 0, y=y.data_ptr(), N=n, T=t, H=h, D=d,
        offset=int(offset), inverse=bool(inverse), dtype=_ext.dtype_code(x))
    return y


# ---- torch.library op + autograd ----------------------------------------------------------------
def _fake(x, cos, sin, offsets, offset, inverse):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    x, cos, sin, offsets, offset, inverse = inputs
    ctx.save_for_backward(cos, sin, offsets)
    ctx.offset, ctx.inverse = offset, inverse


def _backward(ctx, grad_y):
    cos, sin, offsets = ctx.saved_tensors
    return rotary_op(grad_y.contiguous(), cos, sin, offsets, ctx.offset, not ctx.inverse), None, None, None, None, None


rotary_op = define("rotary(Tensor x, Tensor cos, Tensor sin, Tensor? offsets, int offset, bool inverse) -> Tensor",
                   impl=_rotary_kernel, fake=_fake, setup_context=_setup_context, backward=_backward)


# ---- public function ----------------------------------------------------------------------------
def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, offset: int | torch.Tensor = 0, *,
           inverse: bool = False) -> torch.Tensor:
    """Rotary position embedding of q or k (half-split convention).

    x        (N, T, H, D) float32 / float16 / bfloat16 / float64, D even
    cos/sin  (P, D // 2) float32 tables (rotary_tables), on x's device; float64 for float64 x is
             also accepted
    offset   position of token 0: an int >= 0, or an (N,) int64 tensor (one per sequence); every
             position offset + T - 1 must be < P
    inverse  rotate by -theta (undo the embedding)
    Returns a tensor like x; differentiable with respect to x (not the tables).
    """
    args.check_tensor("x", x)
    if x.dim() != 4:
        raise ValueError(f"rotary: x must be (N, T, H, D), got shape {tuple(x.shape)}")
    if x.shape[-1] % 2:
        raise ValueError(f"rotary: x's last dim D must be even, got {x.shape[-1]}")
    half = x.shape[-1] // 2
    for name, t in (("cos", cos), ("sin", sin)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"rotary: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2 or t.shape[1] != half:
            raise ValueError(f"rotary: {name} must be (P, D // 2) = (P, {half}), got {tuple(t.shape)}")
        if t.dtype not in (torch.float32, torch.float64) or (t.dtype == torch.float64 and x.dtype != torch.float64):
            raise TypeError(f"rotary: {name} must be float32 (or float64 for float64 x), got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"rotary: {name} must be on x's device {x.device}, got {t.device}")
    if cos.shape != sin.shape:
        raise ValueError(f"rotary: cos and sin must have the same shape, got {tuple(cos.shape)} and {tuple(sin.shape)}")
    if not isinstance(inverse, bool):
        raise TypeError(f"rotary: inverse must be a bool, got {type(inverse).__name__}")
    P, T = cos.shape[0], x.shape[1]
    if isinstance(offset, torch.Tensor):
        if offset.dtype != torch.int64 or tuple(offset.shape) != (x.shape[0],):
            raise ValueError(f"rotary: a tensor offset must be int64 of shape (N,) = ({x.shape[0]},), got "
                             f"{offset.dtype} {tuple(offset.shape)}")
        if offset.device != x.device:
            raise ValueError(f"rotary: offset must be on x's device {x.device}, got {offset.device}")
        if offset.numel() and not torch.compiler.is_compiling():
            lo, hi = int(offset.min()), int(offset.max())
            if lo < 0 or hi + T > P:
                raise ValueError(f"rotary: positions offset + t must lie in [0, P = {P}), got offsets in "
                                 f"[{lo}, {hi}] with T = {T}")
        return rotary_op(x, cos, sin, offset, 0, inverse)
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"rotary: offset must be an int or an int64 tensor, got {type(offset).__name__}")
    if offset < 0 or (T and offset + T > P):
        raise ValueError(f"rotary: positions offset + t must lie in [0, P = {P}), got offset {offset} with T = {T}")
    return rotary_op(x, cos, sin, None, offset, inverse)
