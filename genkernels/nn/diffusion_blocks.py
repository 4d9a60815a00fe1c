"""Building blocks of the diffusion denoisers (genkernels.models.UNet / DiT / MLPDenoiser).

    timestep_embedding   sinusoidal features of the (integer or fractional) timestep t
    TimestepMLP          sinusoid -> Linear -> SiLU -> Linear: the conditioning vector "emb"
    ConditionEmbedding   TimestepMLP(t) + a class embedding with a null class (classifier-free guidance)
    ResBlock             GroupNorm-SiLU-conv, scale-shift modulation by emb, GroupNorm-SiLU-dropout-conv
    AttentionBlock       self-attention over the H*W pixels (genkernels.nn.SelfAttention, non-causal)
    CrossAttentionBlock  attention from the pixels to a token sequence (genkernels.nn.CrossAttention)
    Downsample/Upsample  stride-2 conv / nearest x2 + conv

Every residual branch ends in a zero-initialised layer (ResBlock's last conv, the attention output
projections), so each block starts as the identity (Ho et al. 2020, Dhariwal & Nichol 2021).
The norm + modulation + SiLU chain runs through genkernels.nn.GroupNormAct (the fused op):
    h = GroupNorm(x) * weight + bias;  h = h * (1 + scale) + shift;  y = silu(h)
with the group count clipped per width by group_count. check_timesteps / check_labels /
check_context / check_cond validate the denoisers' shared forward(x, t, labels, context,
context_mask, cond) arguments once, at the model boundary.
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from genkernels.nn.attention import CrossAttention, SelfAttention
from genkernels.nn.norm import GroupNormAct


def group_count(num_groups: int, channels: int) -> int:
    """The largest divisor of `channels` that is <= num_groups (GroupNorm needs C % G == 0), so one
    num_groups serves every width of a network (8 groups on 12 channels -> 6)."""
    for groups in range(min(num_groups, channels), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


def timestep_embedding(t, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal timestep features (Vaswani et al. 2017, as in DDPM / ADM).

    t: (N,) int or float tensor (fractional timesteps allowed), or a 0-d tensor / Python number
    (one timestep, returned as (1, dim)). Returns (N, dim) float32 (float64 for float64 t):
        freq_i = max_period ** (-i / half),  i < half = dim // 2
        emb = [cos(t * freq), sin(t * freq)]  (+ a zero column when dim is odd)
    """
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    if not isinstance(t, torch.Tensor):
        if isinstance(t, bool) or not isinstance(t, numbers.Real):
            raise TypeError(f"t must be a tensor of timesteps (N,) or a number, got {type(t).__name__}")
        t = torch.tensor([t])
    if t.dim() == 0:
        t = t.reshape(1)
    if t.dim() != 1 or t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"t must be a 1-d (N,) int or float tensor, got shape {tuple(t.shape)} dtype {t.dtype}")
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, device=t.device, dtype=dtype) / max(half, 1)
    args = t.to(dtype)[:, None] * torch.exp(exponent)[None]  # (N, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, 2 * half)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepMLP(nn.Module):
    """t (N,) -> (N, out_dim): timestep_embedding(t, freq_dim) -> Linear -> SiLU -> Linear."""

    def __init__(self, freq_dim: int, out_dim: int, max_period: float = 10000.0):
        super().__init__()
        self.freq_dim, self.max_period = freq_dim, max_period
        self.net = nn.Sequential(nn.Linear(freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.freq_dim, self.max_period)  # (N, freq_dim)
        return self.net(emb.to(self.net[0].weight.dtype))  # (N, out_dim)


class ConditionEmbedding(nn.Module):
    """The conditioning vector of a denoiser: TimestepMLP(t) + class embedding.

    forward(t (N,), labels (N,) int64 in [0, num_classes] or None) -> (N, emb_dim). The index
    num_classes is the null class of classifier-free guidance; labels None means all-null. With
    num_classes = 0 there is no class embedding (labels must be None).
    """

    def __init__(self, emb_dim: int, freq_dim: int, num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes
        self.time = TimestepMLP(freq_dim, emb_dim)
        self.label = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None

    def forward(self, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time(t)  # (N, emb_dim)
        if self.label is not None:
            if labels is None:
                labels = torch.full((emb.shape[0],), self.num_classes, dtype=torch.long, device=emb.device)
            emb = emb + self.label(labels)
        return emb


class ResBlock(nn.Module):
    """Residual block with scale-shift time modulation (ADM's "BigGAN-style" block without resampling).

    forward(x (N, C_in, H, W), emb (N, emb_dim)) -> (N, C_out, H, W):
        h = conv1(silu(GN(x)))
        scale, shift = Linear(silu(emb))
        h = conv2(dropout(silu(GN(h) * (1 + scale) + shift)))     conv2 zero-initialised
        return skip(x) + h                                       skip: 1x1 conv when C_in != C_out
    num_groups is clipped per width by group_count.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float = 0.0,
                 num_groups: int = 8):
        super().__init__()
        self.norm1 = GroupNormAct(group_count(num_groups, in_channels), in_channels, act="silu")
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_channels))
        self.norm2 = GroupNormAct(group_count(num_groups, out_channels), out_channels, act="silu")
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.norm1(x))  # (N, C_out, H, W)
        scale, shift = self.emb_proj(emb).chunk(2, dim=1)  # (N, C_out) each
        h = self.conv2(self.dropout(self.norm2(h, scale=scale, shift=shift)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """x + SelfAttention(GN(x)) over the H*W pixels as tokens; x (N, C, H, W) -> (N, C, H, W).

    Non-causal (every pixel sees every pixel); the output projection is zero-initialised.
    """

    def __init__(self, channels: int, num_heads: int = 4, num_groups: int = 8):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.norm = GroupNormAct(group_count(num_groups, channels), channels, act=None)
        self.attn = SelfAttention(channels, num_heads, causal=False)
        nn.init.zeros_(self.attn.out.weight)
        nn.init.zeros_(self.attn.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (N, H*W, C)
        out = self.attn(tokens)  # (N, H*W, C)
        return x + out.transpose(1, 2).reshape(n, c, h, w)


def context_padding_mask(context: torch.Tensor, context_mask: torch.Tensor | None):
    """Check a (N, L) bool context_mask (True = real token) against context (N, L, D); returns
    (key_padding_mask (N, L) True = padded, or None; has_token (N,) bool: rows with a real token)."""
    if context_mask is None:
        return None, None
    if (not isinstance(context_mask, torch.Tensor) or context_mask.dtype != torch.bool
            or tuple(context_mask.shape) != tuple(context.shape[:2])):
        got = (f"dtype {context_mask.dtype} shape {tuple(context_mask.shape)}"
               if isinstance(context_mask, torch.Tensor) else type(context_mask).__name__)
        raise ValueError(f"context_mask must be a bool tensor (N, L) = {tuple(context.shape[:2])} "
                         f"(True = real token), got {got}")
    return ~context_mask, context_mask.any(dim=1)


class CrossAttentionBlock(nn.Module):
    """x + CrossAttention(GN(x), context) from the H*W pixels to a token sequence.

    forward(x (N, C, H, W), context (N, L, context_dim) or None, context_mask (N, L) bool, True =
    real token) -> (N, C, H, W). context None, or a row whose mask is all False, adds nothing (the
    "no caption" condition); masked tokens never reach the output. Output projection zero-initialised.
    """

    def __init__(self, channels: int, context_dim: int, num_heads: int = 4, num_groups: int = 8):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.norm = GroupNormAct(group_count(num_groups, channels), channels, act=None)
        self.attn = CrossAttention(channels, context_dim, num_heads=num_heads)
        nn.init.zeros_(self.attn.out.weight)
        nn.init.zeros_(self.attn.out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        if context is None:
            return x
        n, c, h, w = x.shape
        key_padding_mask, has_token = context_padding_mask(context, context_mask)
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (N, H*W, C)
        out = self.attn(tokens, context, context_mask=key_padding_mask)  # (N, H*W, C)
        if has_token is not None:  # a row that sees no token gets no update (not the out bias)
            out = out * has_token[:, None, None].to(out.dtype)
        return x + out.transpose(1, 2).reshape(n, c, h, w)


# ----------------------------------------------------------------------------------------------
# Input checks shared by the denoisers' forward(x, t, labels, context, context_mask, cond)
# ----------------------------------------------------------------------------------------------
def check_timesteps(t, n: int, device) -> torch.Tensor:
    """t as an (N,) int or float tensor on `device`; a number or 0-d / one-entry tensor is broadcast."""
    if not isinstance(t, torch.Tensor):
        if isinstance(t, bool) or not isinstance(t, numbers.Real):
            raise TypeError(f"t must be an (N,) tensor of timesteps or a number, got {type(t).__name__}")
        t = torch.tensor(t)
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"t must hold int or float timesteps, got dtype {t.dtype}")
    if t.dim() == 0 or tuple(t.shape) == (1,):
        t = t.reshape(1).expand(n)
    if tuple(t.shape) != (n,):
        raise ValueError(f"t must have shape (N,) = ({n},) (one timestep per sample), got {tuple(t.shape)}")
    return t.to(device)


def check_labels(labels, n: int, num_classes: int, device) -> torch.Tensor | None:
    """labels (N,) int in [0, num_classes] (num_classes = the null class) or None."""
    if labels is None:
        return None
    if num_classes == 0:
        raise ValueError("labels were given but the denoiser is unconditional (num_classes=0)")
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool \
            or labels.is_complex():
        got = f"dtype {labels.dtype}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise TypeError(f"labels must be an (N,) int64 tensor of class indices, got {got}")
    if tuple(labels.shape) != (n,):
        raise ValueError(f"labels must have shape (N,) = ({n},), got {tuple(labels.shape)}")
    # a value check syncs with the device: eager CPU only (as the fused ops do)
    if labels.numel() and labels.device.type == "cpu" and not torch.compiler.is_compiling() \
            and (labels.min() < 0 or labels.max() > num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}] ({num_classes} = the null class), got "
                         f"[{labels.min().item()}, {labels.max().item()}]")
    return labels.to(device=device, dtype=torch.long)


def check_context(context, context_mask, n: int, context_dim: int):
    """context (N, L, context_dim) float or None; context_mask (N, L) bool or None (True = real token)."""
    if context_dim == 0:
        if context is not None or context_mask is not None:
            raise ValueError("context/context_mask were given but the denoiser has no cross-attention "
                             "(context_dim=0)")
        return
    if context is None:
        if context_mask is not None:
            raise ValueError("context_mask was given without context")
        return
    if not isinstance(context, torch.Tensor) or context.dim() != 3 or context.shape[0] != n \
            or context.shape[2] != context_dim:
        got = f"shape {tuple(context.shape)}" if isinstance(context, torch.Tensor) else type(context).__name__
        raise ValueError(f"context must be a tensor (N, L, context_dim) = ({n}, L, {context_dim}), got {got}")
    context_padding_mask(context, context_mask)


def check_cond(cond, x: torch.Tensor, cond_channels: int):
    """cond (N, cond_channels, *x's spatial dims) when cond_channels > 0, else None."""
    if cond_channels == 0:
        if cond is not None:
            raise ValueError("cond was given but the denoiser takes no conditioning channels (cond_channels=0)")
        return
    expected = (x.shape[0], cond_channels) + tuple(x.shape[2:])
    if not isinstance(cond, torch.Tensor) or tuple(cond.shape) != expected:
        got = f"shape {tuple(cond.shape)}" if isinstance(cond, torch.Tensor) else repr(cond)
        raise ValueError(f"cond must be a tensor of shape (N, cond_channels, ...) = {expected} "
                         f"(cond_channels={cond_channels}), got {got}")


class Downsample(nn.Module):
    """(N, C, H, W) -> (N, C, H/2, W/2) by a stride-2 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """(N, C, H, W) -> (N, C, 2H, 2W) by nearest-neighbour upsampling then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


__all__ = ["timestep_embedding", "group_count", "TimestepMLP", "ConditionEmbedding", "ResBlock", "AttentionBlock",
           "CrossAttentionBlock", "Downsample", "Upsample", "check_timesteps", "check_labels", "check_context",
           "check_cond"]
