"""Masked 2D convolutions for autoregressive image models (PixelCNN).

MaskedConv2d is an nn.Conv2d ("same" padding k // 2) whose weight is multiplied by a fixed mask, so
an output pixel sees only the pixels before it in raster order (and, with colour groups, only the
colour channels before it at its own pixel). GatedMaskedConv2d is the gated block of van den Oord et
al. 2016 ("Conditional Image Generation with PixelCNN Decoders"), whose vertical and horizontal
stacks remove the blind spot of a stack of plain masked convolutions.

Both run genkernels.ops.masked_conv2d, the Triton kernel (only the kept taps), where the backend is
"triton" (CUDA tensors), and conv2d on the masked weight (the reference) elsewhere. The masks are
non-persistent buffers, so MaskedConv2d's state dict holds exactly nn.Conv2d's "weight" and "bias".
On the reference path GatedMaskedConv2d convolves causally padded inputs with its compact
(k // 2 + 1) x k and 1 x (k // 2 + 1) weights, so it multiplies no zero taps either. Both layers take
colour groups (color_groups=3: R, G, B) for RGB images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genkernels.ops.gated_activation import gated_activation
from genkernels.ops.masked_conv import _backend_for, check_conv_config, conv_mask, masked_conv2d, masked_conv2d_ref


def _check_image(name: str, x, channels: int):
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a 4D tensor (N, C, H, W), got {got}")
    if x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels, got shape {tuple(x.shape)}")


def _check_cond(cond, batch: int, cond_channels: int | None):
    if cond is None:
        return
    if cond_channels is None:
        raise ValueError("cond was given but the layer was built with cond_channels=None")
    if not isinstance(cond, torch.Tensor) or cond.dim() != 2 or tuple(cond.shape) != (batch, cond_channels):
        got = tuple(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__
        raise ValueError(f"cond must have shape (N, cond_channels) = ({batch}, {cond_channels}), got {got}")


def _use_op(x: torch.Tensor) -> bool:
    """The op where its backend is Triton (CUDA tensors, or forced under the interpreter); elsewhere
    conv2d on the masked weight with the module's cached mask, the op's reference without
    rebuilding the mask."""
    return _backend_for(x.device.type) == "triton"


class MaskedConv2d(nn.Conv2d):
    """nn.Conv2d with a PixelCNN mask; "same" padding (kernel_size // 2), kernel_size odd.

    mask_type "A" excludes the centre pixel (first layer), "B" includes it (later layers); the
    vertical/horizontal-stack masks "vA", "vB", "hA", "hB" are accepted too (ops/masked_conv.py).
    color_groups=3 splits in and out channels into R, G, B groups: at the centre, output group g
    sees input groups < g (A) or <= g (B). gated=True: the conv makes 2 * out_channels and returns
    tanh(a) * sigmoid(b) over the halves, out_channels wide; with cond_channels, forward's cond
    (N, cond_channels) is mapped linearly to a per-sample bias of both halves.
    state_dict: "weight" (out or 2 * out, in, k, k) and "bias", loadable from an nn.Conv2d of the
    same shape (plus "cond_proj.weight" with cond_channels).
    """

    def __init__(self, in_channels, out_channels, kernel_size, mask_type="A", color_groups=1, bias=True,
                 gated=False, cond_channels=None, device=None, dtype=None):
        check_conv_config(in_channels, out_channels, kernel_size, mask_type, color_groups)
        if cond_channels is not None and not gated:
            raise ValueError("cond_channels needs gated=True (cond is a bias of the gate halves)")
        conv_out = 2 * out_channels if gated else out_channels
        super().__init__(in_channels, conv_out, kernel_size, padding=kernel_size // 2, bias=bias,
                         device=device, dtype=dtype)
        self.mask_type, self.color_groups, self.gated = mask_type, color_groups, gated
        self.cond_channels = cond_channels
        mask = conv_mask(conv_out, in_channels, kernel_size, mask_type, color_groups, gated)
        self.register_buffer("mask", mask.to(device=device, dtype=dtype or torch.get_default_dtype()),
                             persistent=False)
        self.cond_proj = (None if cond_channels is None else
                          nn.Linear(cond_channels, conv_out, bias=False, device=device, dtype=dtype))

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", mask_type={self.mask_type!r}, color_groups={self.color_groups}"
                + (", gated=True" if self.gated else ""))

    def forward(self, x, cond=None):
        _check_image("x", x, self.in_channels)
        _check_cond(cond, x.shape[0], self.cond_channels)
        cond_bias = None if cond is None else self.cond_proj(cond)
        if _use_op(x):
            return masked_conv2d(x, self.weight, self.bias, self.mask_type, self.color_groups, self.gated,
                                 cond_bias)
        pre = masked_conv2d_ref(x, self.weight, self.bias, mask=self.mask)
        return gated_activation(pre, cond_bias) if self.gated else pre


class GatedMaskedConv2d(nn.Module):
    """One Gated PixelCNN layer (van den Oord et al. 2016, figure 2), no blind spot.

    Vertical stack: a (k // 2 + 1) x k convolution over the rows up to the centre row ("vB"), or
    strictly above it in the first layer ("vA"), so v_out at row i depends only on image rows < i.
    Horizontal stack: a 1 x (k // 2 + 1) convolution over the row's pixels up to the current one
    ("hB"), or strictly left of it ("hA"), plus a 1x1 link from the vertical pre-activation (which
    needs no shift: it already sees only rows above). Both are gated, tanh(a) * sigmoid(b), with an
    optional per-sample conditioning bias; the horizontal output passes a 1x1 convolution and, for
    mask "B", a residual connection. The first layer (mask "A") takes v = h = the image features.
    forward(v, h, cond=None) -> (v_out, h_out), each (N, channels, H, W).

    color_groups=3 (channels divisible by 3) orders the colours of one pixel, R before G before B:
    every channel dimension is split into consecutive thirds, and each gate half (a, b) keeps that
    layout (gated channel j of group g comes from a_j and b_j, both of group g). At the current
    pixel, horizontal output group g sees input groups < g (mask "A") or <= g (mask "B"): the
    horizontal stack's centre tap is masked so ("hA"/"hB" with colour groups), the 1x1 output
    convolution mixes groups <= g, and the residual is per channel. The vertical stack and the
    vertical-to-horizontal link see only rows above, so they stay unmasked.
    """

    def __init__(self, channels, kernel_size, mask_type="A", cond_channels=None, color_groups=1):
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        check_conv_config(channels, channels, kernel_size, mask_type, color_groups)
        super().__init__()
        self.channels, self.kernel_size, self.mask_type = channels, kernel_size, mask_type
        self.cond_channels, self.color_groups = cond_channels, color_groups
        c = kernel_size // 2
        # Weights hold only the rows/columns the stacks can use; on the Triton path forward pads
        # them to k x k (the masked-conv kernel skips the padded taps).
        self.vertical = nn.Conv2d(channels, 2 * channels, (c + 1, kernel_size))
        self.horizontal = nn.Conv2d(channels, 2 * channels, (1, c + 1))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal_out = nn.Conv2d(channels, channels, 1)
        # mask "A" drops the centre row of the vertical stack and the centre column of the
        # horizontal one (with colour groups: the later groups of the centre column); the masks
        # are non-persistent, so state dicts hold the four convolutions only
        vertical_mask = torch.ones(c + 1, kernel_size)
        if mask_type == "A":
            vertical_mask[c] = 0
        horizontal_mask = conv_mask(2 * channels, channels, kernel_size, "h" + mask_type, color_groups,
                                    gated=True)[:, :, c:c + 1, :c + 1]                       # (2C, C, 1, c + 1)
        self.register_buffer("vertical_mask", vertical_mask, persistent=False)
        self.register_buffer("horizontal_mask", horizontal_mask, persistent=False)
        out_mask = conv_mask(channels, channels, 1, "B", color_groups) if color_groups > 1 else None
        self.register_buffer("horizontal_out_mask", out_mask, persistent=False)
        if cond_channels is None:
            self.cond_vertical = self.cond_horizontal = None
        else:
            self.cond_vertical = nn.Linear(cond_channels, 2 * channels, bias=False)
            self.cond_horizontal = nn.Linear(cond_channels, 2 * channels, bias=False)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, kernel_size={self.kernel_size}, mask_type={self.mask_type!r}"
                + (f", color_groups={self.color_groups}" if self.color_groups > 1 else ""))

    def _full_weights(self):
        """The stacks' weights placed in k x k windows: vertical in rows 0..c, horizontal in row c,
        columns 0..c."""
        c = self.kernel_size // 2
        vertical = F.pad(self.vertical.weight, (0, 0, 0, c))       # (2C, C, k, k)
        horizontal = F.pad(self.horizontal.weight, (0, c, c, c))   # (2C, C, k, k)
        return vertical, horizontal

    def _horizontal_op(self, h, weight):
        """The horizontal stack on masked_conv2d. Without the gate the op groups its 2C output
        channels consecutively, so the rows go in as (group, half) blocks and the output comes back
        as the halves (a, b), each grouped."""
        mask_type, groups = "h" + self.mask_type, self.color_groups
        if groups == 1:
            return masked_conv2d(h, weight, self.horizontal.bias, mask_type)
        n, two_c, height, width = h.shape[0], weight.shape[0], h.shape[2], h.shape[3]
        by_group = weight.view(2, groups, two_c // (2 * groups), *weight.shape[1:]).transpose(0, 1)
        bias = self.horizontal.bias.view(2, groups, -1).transpose(0, 1).reshape(two_c)
        pre = masked_conv2d(h, by_group.reshape(weight.shape), bias, mask_type, groups)    # (N, [G, 2, C/G], H, W)
        return pre.view(n, groups, 2, -1, height, width).transpose(1, 2).reshape(n, two_c, height, width)

    def forward(self, v, h, cond=None):
        _check_image("v", v, self.channels)
        _check_image("h", h, self.channels)
        if v.shape != h.shape:
            raise ValueError(f"v and h must have the same shape, got {tuple(v.shape)} and {tuple(h.shape)}")
        _check_cond(cond, v.shape[0], self.cond_channels)
        if _use_op(v):
            vertical, horizontal = self._full_weights()
            v_pre = masked_conv2d(v, vertical, self.vertical.bias, "v" + self.mask_type)        # (N, 2C, H, W)
            h_pre = self._horizontal_op(h, horizontal)
        else:  # the compact convolutions on causally padded inputs: no multiplications by zero taps
            c = self.kernel_size // 2
            v_pre = F.conv2d(F.pad(v, (c, c, c, 0)), self.vertical.weight * self.vertical_mask, self.vertical.bias)
            h_pre = F.conv2d(F.pad(h, (c, 0, 0, 0)), self.horizontal.weight * self.horizontal_mask,
                             self.horizontal.bias)
        h_pre = h_pre + self.vertical_to_horizontal(v_pre)
        cond_v = cond_h = None
        if cond is not None:
            cond_v, cond_h = self.cond_vertical(cond), self.cond_horizontal(cond)
        v_out = gated_activation(v_pre, cond_v)                                                   # (N, C, H, W)
        h_gated = gated_activation(h_pre, cond_h)
        if self.horizontal_out_mask is None:
            h_out = self.horizontal_out(h_gated)
        else:  # colour groups: output group g mixes gated groups <= g
            h_out = F.conv2d(h_gated, self.horizontal_out.weight * self.horizontal_out_mask, self.horizontal_out.bias)
        if self.mask_type == "B":
            h_out = h_out + h
        return v_out, h_out
