"""Normalisation layers of the diffusion denoisers: GroupNorm + scale-shift + SiLU (the UNet's
residual blocks) and adaLN modulation (DiT blocks, Peebles & Xie 2023).

GroupNormAct(num_groups, num_channels, eps=1e-5, affine=True, act="silu"):
    forward(x, scale=None, shift=None), x (N, C, *spatial), scale/shift (N, C):
    h = GroupNorm(x) * weight + bias; h = h * (1 + scale) + shift; y = act(h).
    Parameters `weight`/`bias` (C,) are named like torch.nn.GroupNorm's, so its state dict loads.
AdaLayerNorm(dim, eps=1e-6): forward(x, shift, scale), x (N, L, D), shift/scale (N, D):
    LayerNorm(x, no affine) * (1 + scale[:, None]) + shift[:, None].
modulate(x, shift, scale, eps=1e-6): the same as a function.

Both run through the fused ops genkernels.ops.group_norm_act / genkernels.ops.adaln_modulate.
"""
from __future__ import annotations

import torch
from torch import nn

from genkernels.ops.adaln import adaln_modulate
from genkernels.ops.group_norm_act import group_norm_act

_ACTS = ("silu", None)


class GroupNormAct(nn.Module):
    """GroupNorm, then optional per-sample scale/shift, then SiLU (or no activation), fused."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 act: str | None = "silu"):
        super().__init__()
        for name, value in (("num_groups", num_groups), ("num_channels", num_channels)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_channels % num_groups:
            raise ValueError(f"num_channels must be divisible by num_groups, got num_channels={num_channels}, "
                             f"num_groups={num_groups}")
        if act not in _ACTS:
            raise ValueError(f"act must be 'silu' or None, got {act!r}")
        self.num_groups, self.num_channels, self.eps, self.affine, self.act = num_groups, num_channels, eps, affine, act
        if affine:
            self.weight = nn.Parameter(torch.ones(num_channels))
            self.bias = nn.Parameter(torch.zeros(num_channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None,
                shift: torch.Tensor | None = None) -> torch.Tensor:
        # x (N, C, *spatial); scale/shift (N, C) -> (N, C, *spatial)
        weight = None if self.weight is None else self.weight.to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return group_norm_act(x, self.num_groups, weight, bias, scale=scale, shift=shift, eps=self.eps, act=self.act)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, act={self.act!r}"


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm(x, no affine) * (1 + scale[:, None]) + shift[:, None]; x (N, L, D), shift/scale (N, D)."""
    return adaln_modulate(x, shift, scale, eps=eps)


class AdaLayerNorm(nn.Module):
    """Parameter-free LayerNorm over the last dim with per-sample scale/shift (DiT's adaLN)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.dim, self.eps = dim, eps

    def forward(self, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        # x (N, L, D); shift/scale (N, D) -> (N, L, D)
        if isinstance(x, torch.Tensor) and x.dim() >= 1 and x.shape[-1] != self.dim:
            raise ValueError(f"x must have last dimension {self.dim}, got shape {tuple(x.shape)}")
        return adaln_modulate(x, shift, scale, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"
