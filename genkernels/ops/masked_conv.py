"""Masked 2D convolution (PixelCNN): out = conv2d(x, weight * mask, bias, padding=k // 2).

Reading order: masks and reference (pure PyTorch, also the CPU fallback) -> validation ->
torch.library registration of the forward and backward ops (Triton kernels in
genkernels.kernels.masked_conv, which loop over the kept taps only) -> autograd -> public function
`masked_conv2d`. Backends: "triton" on CUDA tensors (CPU only under TRITON_INTERPRET=1), "torch"
(conv2d on the masked weight) everywhere else.

Masks (van den Oord et al. 2016, "Pixel Recurrent Neural Networks" and "Conditional Image
Generation with PixelCNN Decoders"), over a k x k window with centre c = k // 2:
  "A"  / "B"   raster order: rows above the centre, and the centre row left of the centre; the
               centre tap itself is excluded by "A" and included by "B".
  "vA" / "vB"  the vertical stack of the Gated PixelCNN: rows above the centre ("vA"), or rows up
               to and including the centre row ("vB"), every column.
  "hA" / "hB"  the horizontal stack: the centre row only, left of the centre ("hA") or up to and
               including it ("hB").
Colour groups (color_groups=G > 1, "A"/"B"/"hA"/"hB"): input and output channels are split into G
equal consecutive groups (R, G, B for G = 3); at the centre tap output group g sees input groups
< g ("A", "hA") or <= g ("B", "hB"); every other kept tap sees every input channel. With gated=True
the output channels are two halves (a, b) and each half is grouped the same way. The vertical-stack
masks take no colour groups: they see only rows above the centre (or a row the caller guarantees
holds only such information, as the Gated PixelCNN's vertical stack does).
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch.library import triton_op

from genkernels._backend import select
from genkernels.kernels._launch import device_scope, launcher
from genkernels.ops._library import register, untraced

MASK_TYPES = ("A", "B", "vA", "vB", "hA", "hB")
COLOR_MASK_TYPES = ("A", "B", "hA", "hB")  # the masks whose centre tap colour groups split
BACKENDS = ("torch", "triton")
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# ----------------------------------------------------------------------------------------------
# Masks and reference
# ----------------------------------------------------------------------------------------------
def spatial_mask(kernel_size: int, mask_type: str) -> torch.Tensor:
    """(k, k) float mask of the taps `mask_type` keeps (the centre counted as kept by "A" only
    through colour groups: see conv_mask)."""
    k, c = kernel_size, kernel_size // 2
    mask = torch.zeros(k, k)
    if mask_type in ("A", "B"):
        mask[:c] = 1
        mask[c, :c] = 1
        if mask_type == "B":
            mask[c, c] = 1
    elif mask_type in ("vA", "vB"):
        mask[: c + (mask_type == "vB")] = 1
    else:  # "hA" / "hB"
        mask[c, : c + (mask_type == "hB")] = 1
    return mask


def conv_mask(out_channels: int, in_channels: int, kernel_size: int, mask_type: str = "A",
              color_groups: int = 1, gated: bool = False) -> torch.Tensor:
    """(out_channels, in_channels, k, k) float32 mask; out_channels counts both gate halves when
    gated."""
    mask = spatial_mask(kernel_size, mask_type).expand(out_channels, in_channels, -1, -1).clone()
    if color_groups > 1:
        c = kernel_size // 2
        period = out_channels // 2 if gated else out_channels
        out_group = (torch.arange(out_channels) % period) * color_groups // period
        in_group = torch.arange(in_channels) * color_groups // in_channels
        if mask_type in ("A", "hA"):
            sees = in_group[None, :] < out_group[:, None]
        else:
            sees = in_group[None, :] <= out_group[:, None]
        mask[:, :, c, c] = sees.float()
    return mask


def gate_ref(pre: torch.Tensor, cond_bias: torch.Tensor | None = None) -> torch.Tensor:
    """tanh(a + ca) * sigmoid(b + cb) over the two channel halves of pre (N, 2C, H, W)."""
    if cond_bias is not None:
        pre = pre + cond_bias[:, :, None, None].to(pre.dtype)
    a, b = pre.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def masked_conv2d_ref(x, weight, bias=None, mask_type="A", color_groups=1, gated=False, cond_bias=None,
                      mask=None):
    """conv2d on the masked weight, "same" padding; with gated, the gate over the output halves.
    x (N, Cin, H, W), weight (Cout, Cin, k, k), bias (Cout,), cond_bias (N, Cout) (gated only).
    `mask` (a prebuilt conv_mask, e.g. a module buffer) saves rebuilding it."""
    if mask is None:
        mask = conv_mask(weight.shape[0], weight.shape[1], weight.shape[2], mask_type, color_groups, gated)
    w = weight * mask.to(device=weight.device, dtype=weight.dtype)
    out = F.conv2d(x, w, bias, padding=weight.shape[-1] // 2)
    return gate_ref(out, cond_bias) if gated else out


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------
def check_conv_config(in_channels: int, out_channels: int, kernel_size: int, mask_type: str,
                      color_groups: int) -> None:
    """ValueError naming the argument for a configuration no masked conv can run."""
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd int (the mask is centred), got {kernel_size!r}")
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
    if not isinstance(color_groups, int) or color_groups < 1:
        raise ValueError(f"color_groups must be a positive int, got {color_groups!r}")
    if color_groups > 1:
        if mask_type not in COLOR_MASK_TYPES:
            raise ValueError(f"color_groups > 1 needs mask_type in {COLOR_MASK_TYPES}, got {mask_type!r}")
        if in_channels % color_groups or out_channels % color_groups:
            raise ValueError(f"color_groups={color_groups} must divide in_channels ({in_channels}) and "
                             f"out_channels ({out_channels})")


def _check_inputs(x, weight, bias, mask_type, color_groups, gated, cond_bias):
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a 4D tensor (N, C, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4 or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"weight must be a 4D tensor (Cout, Cin, k, k), got "
                         f"{tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__}")
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight has {weight.shape[1]} input channels but x has {x.shape[1]}")
    cout = weight.shape[0]
    if gated and cout % 2:
        raise ValueError(f"gated=True needs an even number of output channels (two gate halves), got {cout}")
    check_conv_config(x.shape[1], cout // 2 if gated else cout, weight.shape[2], mask_type, color_groups)
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != cout):
        raise ValueError(f"bias must have shape ({cout},), got {tuple(bias.shape)}")
    if cond_bias is not None:
        if not gated:
            raise ValueError("cond_bias is the per-sample bias of the gate halves: it needs gated=True")
        if cond_bias.dim() != 2 or tuple(cond_bias.shape) != (x.shape[0], cout):
            raise ValueError(f"cond_bias must have shape (N, Cout) = ({x.shape[0]}, {cout}), got "
                             f"{tuple(cond_bias.shape)}")


def masked_conv2d_backward_ref(grad, x, weight, bias, cond_bias, mask_type, color_groups, gated):
    """(dx, dweight, dbias, dcond) of masked_conv2d_ref, from conv2d's input and weight gradients;
    dbias (Cout,) and dcond (N, Cout) are always returned (the caller drops what it does not need)."""
    mask = conv_mask(weight.shape[0], weight.shape[1], weight.shape[2], mask_type, color_groups, gated)
    mask = mask.to(device=weight.device, dtype=weight.dtype)
    padding = weight.shape[-1] // 2
    dpre = grad
    if gated:
        pre = F.conv2d(x, weight * mask, bias, padding=padding)
        dpre = _gate_backward(grad, pre, cond_bias).to(x.dtype)
    dx = torch.nn.grad.conv2d_input(x.shape, weight * mask, dpre, padding=padding)
    dweight = torch.nn.grad.conv2d_weight(x, weight.shape, dpre, padding=padding) * mask
    return dx, dweight, dpre.sum((0, 2, 3)), dpre.sum((2, 3))


def _gate_backward(grad, pre, cond_bias):
    """d(tanh(a + ca) sigmoid(b + cb)) / d pre for pre (N, 2C, H, W), in float32 at least."""
    dtype = torch.promote_types(pre.dtype, torch.float32)
    pre = pre.to(dtype)
    if cond_bias is not None:
        pre = pre + cond_bias[:, :, None, None].to(dtype)
    a, b = pre.chunk(2, dim=1)
    ta, sb = torch.tanh(a), torch.sigmoid(b)
    g = grad.to(dtype)
    return torch.cat((g * sb * (1 - ta * ta), g * ta * sb * (1 - sb)), dim=1)


# ----------------------------------------------------------------------------------------------
# torch.library registration
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _kept_taps(kernel_size: int, mask_type: str) -> tuple[tuple[int, int], ...]:
    """(row, col) of every tap the mask keeps in some channel pair (the centre of a colour-group
    "A" / "hA" mask too: it keeps the pairs from earlier groups)."""
    keep = spatial_mask(kernel_size, mask_type)
    c = kernel_size // 2
    if mask_type in ("A", "hA"):
        keep[c, c] = 1  # with color_groups == 1 its weights are all masked to zero, see _plan
    return tuple((int(r), int(q)) for r, q in keep.nonzero().tolist())


class _Plan(NamedTuple):
    """What the kernels need to know about a mask, on the tensors' device."""
    rows: torch.Tensor       # (T,) int64: kernel row of each kept tap
    cols: torch.Tensor       # (T,) int64: kernel column
    offsets: torch.Tensor    # (T, 2) int32: (dy, dx) from the centre
    mask_taps: torch.Tensor  # (Cout, Cin, T) in the weight's dtype: the mask at the kept taps


_plans: dict[tuple, _Plan] = {}


def _plan(weight: torch.Tensor, mask_type: str, color_groups: int, gated: bool) -> _Plan:
    """The kept taps of this mask. Cached per configuration and device in eager calls, so a
    step on GPU copies nothing from the host (a pageable host-to-device copy would block)."""
    cout, cin, k = weight.shape[0], weight.shape[1], weight.shape[-1]
    key = (cout, cin, k, mask_type, color_groups, gated, weight.device, weight.dtype)
    cacheable = untraced(weight)
    if cacheable and key in _plans:
        return _plans[key]
    kept = _kept_taps(k, mask_type)
    if mask_type in ("A", "hA") and color_groups == 1:  # the centre holds nothing: skip it
        kept = tuple(t for t in kept if t != (k // 2, k // 2))
    rows = torch.tensor([r for r, _ in kept], dtype=torch.int64)
    cols = torch.tensor([q for _, q in kept], dtype=torch.int64)
    offsets = torch.stack((rows - k // 2, cols - k // 2), dim=1).to(torch.int32)
    mask_taps = conv_mask(cout, cin, k, mask_type, color_groups, gated)[:, :, rows, cols]
    plan = _Plan(rows.to(weight.device), cols.to(weight.device), offsets.to(weight.device),
                 mask_taps.to(weight.device, weight.dtype))
    if cacheable:
        _plans[key] = plan
    return plan


def _backend(device: torch.device) -> str:
    return select("masked_conv2d", device, BACKENDS)


def _forward_impl(x, weight, bias, cond_bias, mask_type, color_groups, gated):
    if _backend(x.device) != "triton" or x.numel() == 0:
        return masked_conv2d_ref(x, weight, bias, mask_type, color_groups, gated, cond_bias)
    from genkernels.kernels import masked_conv as kernels

    cout = weight.shape[0]
    plan = _plan(weight, mask_type, color_groups, gated)
    masked_taps = weight[:, :, plan.rows, plan.cols] * plan.mask_taps                  # (Cout, Cin, T)
    weight_taps = masked_taps.permute(2, 1, 0).contiguous()                            # (T, Cin, Cout)
    out = x.new_empty((x.shape[0], cout // 2 if gated else cout, *x.shape[2:]))
    launch = launcher(x, weight, bias, cond_bias)
    with device_scope(x, launch):
        kernels.masked_conv_forward(launch, x, weight_taps, plan.offsets, bias, cond_bias, out, gated)
    return out


@triton_op("genkernels::masked_conv2d", mutates_args=())
def _masked_conv2d_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                      cond_bias: Optional[torch.Tensor], mask_type: str, color_groups: int,
                      gated: bool) -> torch.Tensor:
    return _forward_impl(x, weight, bias, cond_bias, mask_type, color_groups, gated)


def _backward_impl(grad, x, weight, bias, cond_bias, mask_type, color_groups, gated):
    if _backend(x.device) != "triton" or x.numel() == 0:
        return masked_conv2d_backward_ref(grad, x, weight, bias, cond_bias, mask_type, color_groups, gated)
    from genkernels.kernels import masked_conv as kernels

    cout = weight.shape[0]
    plan = _plan(weight, mask_type, color_groups, gated)
    masked_taps = weight[:, :, plan.rows, plan.cols] * plan.mask_taps                  # (Cout, Cin, T)
    launch = launcher(grad, x, weight, bias, cond_bias)
    with device_scope(x, launch):
        dpre_exact = grad
        if gated:  # recompute the pre-activation (float32), then the gate's derivative
            pre = x.new_empty((x.shape[0], cout, *x.shape[2:]), dtype=torch.float32)
            kernels.masked_conv_forward(launch, x, masked_taps.permute(2, 1, 0).contiguous(), plan.offsets, bias,
                                        None, pre, False)
            dpre_exact = _gate_backward(grad, pre, cond_bias)
        dpre = dpre_exact.to(x.dtype)
        dx = torch.empty_like(x)
        # dX: the forward kernel on the negated taps with the transposed tap weights (T, Cout, Cin)
        kernels.masked_conv_forward(launch, dpre, masked_taps.permute(2, 0, 1).contiguous(), -plan.offsets, None,
                                    None, dx, False)
        dweight_taps = kernels.masked_conv_weight_grad(launch, x, dpre, plan.offsets)  # (T, Cin, Cout)
    dweight = weight.new_zeros(weight.shape)
    dweight[:, :, plan.rows, plan.cols] = (dweight_taps.permute(2, 1, 0) * plan.mask_taps).to(weight.dtype)
    # dbias and dcond sum many terms that largely cancel: sum the unrounded dpre in float64
    per_sample = dpre_exact.double().sum((2, 3))                                       # (N, Cout)
    return dx, dweight, per_sample.sum(0).to(weight.dtype), per_sample.to(x.dtype)


@triton_op("genkernels::masked_conv2d_backward", mutates_args=())
def _masked_conv2d_backward_op(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                               bias: Optional[torch.Tensor], cond_bias: Optional[torch.Tensor], mask_type: str,
                               color_groups: int, gated: bool
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward_impl(grad, x, weight, bias, cond_bias, mask_type, color_groups, gated)


# ----------------------------------------------------------------------------------------------
# Autograd, and the routed ops (ops/_library)
# ----------------------------------------------------------------------------------------------
def _setup_context(ctx, inputs, output):
    x, weight, bias, cond_bias, *flags = inputs
    ctx.save_for_backward(x, weight, bias, cond_bias)
    ctx.flags = flags  # mask_type, color_groups, gated


def _backward(ctx, grad):
    x, weight, bias, cond_bias = ctx.saved_tensors
    dx, dweight, dbias, dcond = masked_conv2d_backward_op(grad.contiguous(), x, weight, bias, cond_bias,
                                                          *ctx.flags)
    return (dx, dweight, None if bias is None else dbias.to(bias.dtype),
            None if cond_bias is None else dcond.to(cond_bias.dtype), None, None, None)


masked_conv2d_backward_op = register(_masked_conv2d_backward_op, impl=_backward_impl)
masked_conv2d_op = register(_masked_conv2d_op, impl=_forward_impl, setup_context=_setup_context,
                            backward=_backward)


# ----------------------------------------------------------------------------------------------
# Public function
# ----------------------------------------------------------------------------------------------
@torch.compiler.assume_constant_result
def _backend_for(device_type: str) -> str:
    # Resolved once per compiled graph: the choice reads a context variable dynamo cannot trace.
    return _backend(torch.device(device_type))


def masked_conv2d(x, weight, bias=None, mask_type="A", color_groups=1, gated=False, cond_bias=None):
    """Masked 2D convolution with "same" padding (k // 2), optionally gated.

    x: (N, Cin, H, W); weight: (Cout, Cin, k, k), k odd (taps outside the mask are ignored);
    bias: (Cout,) or None; mask_type: "A", "B", "vA", "vB", "hA", "hB" (module docstring);
    color_groups: channel groups in colour order (R before G before B), "A"/"B"/"hA"/"hB" only;
    gated: return tanh(a + ca) * sigmoid(b + cb) over the halves (a, b) of the Cout channels;
    cond_bias: (N, Cout) per-sample bias (ca, cb), gated only.
    Returns (N, Cout, H, W), or (N, Cout // 2, H, W) when gated, in x's dtype. On CUDA tensors the
    Triton kernel runs (fp16, bf16, fp32; only the kept taps); elsewhere conv2d on the masked weight.
    """
    _check_inputs(x, weight, bias, mask_type, color_groups, gated, cond_bias)
    backend = _backend_for(x.device.type)
    if backend == "torch" and untraced(x, weight, bias, cond_bias):
        # plain autograd through conv2d: no op dispatch, any dtype conv2d takes
        return masked_conv2d_ref(x, weight, bias, mask_type, color_groups, gated, cond_bias)
    if backend == "triton" and (x.dtype not in TRITON_DTYPES or weight.dtype != x.dtype):
        raise ValueError(f"the triton masked_conv2d takes x and weight of one dtype in {TRITON_DTYPES}, got "
                         f"{x.dtype} and {weight.dtype}")
    return masked_conv2d_op(x, weight, bias, cond_bias, mask_type, color_groups, gated)
