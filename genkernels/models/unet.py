"""UNet denoiser (Ho et al. 2020; the ADM refinements of Dhariwal & Nichol 2021).

    eps_or_v_or_x0 = UNet(x_t, t, labels, context, context_mask, cond)

A plain nn.Module: genkernels.models.Diffusion owns the schedule, the loss and the samplers; the
UNet maps a noisy image and its timestep to the prediction. Layout for channel_mults (1, 2) on
8x8 digits (C = base_channels, "A" = attention at that resolution):

    conv_in                         (N, in + cond, 8, 8) -> (N, C, 8, 8)
    down 8x8:  ResBlock x num_res_blocks, Downsample      -> (N, C, 4, 4)
    down 4x4:  ResBlock(+A) x num_res_blocks              -> (N, 2C, 4, 4)
    middle:    ResBlock, A, ResBlock
    up 4x4:    ResBlock(+A) x (num_res_blocks + 1) on [h, skip], Upsample -> (N, 2C, 8, 8)
    up 8x8:    ResBlock x (num_res_blocks + 1) on [h, skip]
    out:       GroupNorm-SiLU, conv (zero-initialised)  -> (N, out, 8, 8)

Conditioning:
  * timestep: sinusoidal features -> MLP -> emb (N, 4C), the scale/shift of every ResBlock's
    second norm (genkernels.nn.GroupNormAct, fused GroupNorm + scale-shift + SiLU);
  * class (num_classes > 0): a learned embedding of num_classes + 1 entries added to emb; the
    index num_classes is the null class (classifier-free guidance), also used when labels is None;
  * tokens (context_dim > 0): a CrossAttentionBlock after every self-attention block, on context
    (N, L, context_dim) with context_mask (N, L) bool, True = real token; context None skips them;
  * image (cond_channels > 0): cond (N, cond_channels, H, W) is concatenated to x at the input
    (super-resolution: the upsampled low-resolution image).
The output conv is zero-initialised, so an untrained UNet predicts 0.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from genkernels.models._validate import check_int, check_int_tuple, check_real
from genkernels.nn.diffusion_blocks import (AttentionBlock, ConditionEmbedding, CrossAttentionBlock, Downsample,
                                            GroupNormAct, ResBlock, Upsample, check_cond, check_context,
                                            check_labels, check_timesteps, group_count)


@dataclasses.dataclass
class UNetConfig:
    """in_channels            channels of the image x
    out_channels           channels of the prediction; None: in_channels
    image_size             side of the (square) training images; must be divisible by
                           2 ** (len(channel_mults) - 1). Any H, W with that divisibility runs.
    base_channels          width C of the first level
    channel_mults          width multiplier per level (one level per entry; each level but the last
                           halves the resolution)
    num_res_blocks         ResBlocks per level on the way down (one more on the way up)
    attention_resolutions  resolutions (image sides) that get self-attention (and cross-attention)
    num_heads              attention heads (must divide the width at those resolutions)
    dropout                dropout in the ResBlocks
    num_groups             GroupNorm groups, clipped per width to the largest divisor <= num_groups
    num_classes            classes for class conditioning (plus a null class); 0: none
    context_dim            width of the cross-attention tokens; 0: no cross-attention
    cond_channels          channels of an image concatenated to x at the input; 0: none
    """

    in_channels: int = 1
    out_channels: int | None = None
    image_size: int = 8
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (4,)
    num_heads: int = 4
    dropout: float = 0.0
    num_groups: int = 8
    num_classes: int = 0
    context_dim: int = 0
    cond_channels: int = 0

    def __post_init__(self):
        for name in ("in_channels", "image_size", "base_channels", "num_res_blocks", "num_heads", "num_groups"):
            setattr(self, name, check_int(f"UNetConfig.{name}", getattr(self, name), 1))
        for name in ("num_classes", "context_dim", "cond_channels"):
            setattr(self, name, check_int(f"UNetConfig.{name}", getattr(self, name), 0))
        if self.out_channels is not None:
            self.out_channels = check_int("UNetConfig.out_channels", self.out_channels, 1)
        self.channel_mults = check_int_tuple("UNetConfig.channel_mults", self.channel_mults)
        self.attention_resolutions = tuple(self.attention_resolutions)
        if self.attention_resolutions:
            self.attention_resolutions = check_int_tuple("UNetConfig.attention_resolutions",
                                                         self.attention_resolutions)
        self.dropout = check_real("UNetConfig.dropout", self.dropout, 0.0)
        if self.dropout >= 1:
            raise ValueError(f"UNetConfig.dropout must be in [0, 1), got {self.dropout}")
        factor = 2 ** (len(self.channel_mults) - 1)
        if self.image_size % factor:
            raise ValueError(f"UNetConfig.image_size must be divisible by 2 ** (len(channel_mults) - 1) = {factor} "
                             f"(each level but the last halves it), got image_size={self.image_size} with "
                             f"channel_mults={self.channel_mults}")
        resolutions = self.resolutions
        for res in self.attention_resolutions:
            if res not in resolutions:
                raise ValueError(f"UNetConfig.attention_resolutions must be among the level resolutions "
                                 f"{resolutions}, got {res}")
            width = self.base_channels * self.channel_mults[resolutions.index(res)]
            if width % self.num_heads:
                raise ValueError(f"UNetConfig.num_heads ({self.num_heads}) must divide the width {width} at "
                                 f"attention resolution {res}")
        middle = self.base_channels * self.channel_mults[-1]
        if middle % self.num_heads:
            raise ValueError(f"UNetConfig.num_heads ({self.num_heads}) must divide the middle width {middle}")

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Image side at each level: (image_size, image_size / 2, ...)."""
        return tuple(self.image_size // 2 ** i for i in range(len(self.channel_mults)))

    @property
    def output_channels(self) -> int:
        return self.in_channels if self.out_channels is None else self.out_channels


class _Level(nn.Module):
    """ResBlock -> [AttentionBlock -> CrossAttentionBlock]: one step of the down, middle or up path."""

    def __init__(self, in_channels, out_channels, emb_dim, config: UNetConfig, attention: bool):
        super().__init__()
        self.res = ResBlock(in_channels, out_channels, emb_dim, config.dropout, config.num_groups)
        self.attn = AttentionBlock(out_channels, config.num_heads, config.num_groups) if attention else None
        self.cross = (CrossAttentionBlock(out_channels, config.context_dim, config.num_heads, config.num_groups)
                      if attention and config.context_dim > 0 else None)

    def forward(self, h, emb, context, context_mask):
        h = self.res(h, emb)
        if self.attn is not None:
            h = self.attn(h)
        if self.cross is not None:
            h = self.cross(h, context, context_mask)
        return h


class UNet(nn.Module):
    """forward(x (N, C_in, H, W), t (N,) int or float, labels (N,) | None, context (N, L, D) | None,
    context_mask (N, L) bool | None, cond (N, C_cond, H, W) | None) -> (N, C_out, H, W)."""

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else UNetConfig()
        base = config.base_channels
        emb_dim = 4 * base
        self.embed = ConditionEmbedding(emb_dim, base, config.num_classes)
        self.conv_in = nn.Conv2d(config.in_channels + config.cond_channels, base, 3, padding=1)

        # Down path: remember each output width for the skip connections.
        self.down = nn.ModuleList()
        skips, width = [base], base
        for level, (mult, res) in enumerate(zip(config.channel_mults, config.resolutions)):
            for _ in range(config.num_res_blocks):
                self.down.append(_Level(width, base * mult, emb_dim, config, res in config.attention_resolutions))
                width = base * mult
                skips.append(width)
            if level < len(config.channel_mults) - 1:
                self.down.append(Downsample(width))
                skips.append(width)

        self.middle = nn.ModuleList([_Level(width, width, emb_dim, config, attention=True),
                                     _Level(width, width, emb_dim, config, attention=False)])

        # Up path: num_res_blocks + 1 blocks per level, each on [h, a skip].
        self.up = nn.ModuleList()
        for level in reversed(range(len(config.channel_mults))):
            mult, res = config.channel_mults[level], config.resolutions[level]
            for _ in range(config.num_res_blocks + 1):
                self.up.append(_Level(width + skips.pop(), base * mult, emb_dim, config,
                                      res in config.attention_resolutions))
                width = base * mult
            if level > 0:
                self.up.append(Upsample(width))

        self.norm_out = GroupNormAct(group_count(config.num_groups, width), width, act="silu")
        self.conv_out = nn.Conv2d(width, config.output_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def _check_x(self, x):
        config = self.config
        factor = 2 ** (len(config.channel_mults) - 1)
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != config.in_channels:
            got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a tensor (N, in_channels={config.in_channels}, H, W), got {got}")
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"x's H and W must be divisible by {factor} (2 ** (len(channel_mults) - 1)), "
                             f"got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor, t, labels: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        config = self.config
        self._check_x(x)
        n = x.shape[0]
        t = check_timesteps(t, n, x.device)
        labels = check_labels(labels, n, config.num_classes, x.device)
        check_context(context, context_mask, n, config.context_dim)
        check_cond(cond, x, config.cond_channels)

        emb = self.embed(t, labels)  # (N, 4C)
        if cond is not None:
            x = torch.cat([x, cond.to(x.dtype)], dim=1)  # (N, C_in + C_cond, H, W)
        h = self.conv_in(x)  # (N, C, H, W)
        skips = [h]
        for block in self.down:
            h = block(h) if isinstance(block, Downsample) else block(h, emb, context, context_mask)
            skips.append(h)
        for block in self.middle:
            h = block(h, emb, context, context_mask)
        for block in self.up:
            if isinstance(block, Upsample):
                h = block(h)
            else:
                h = block(torch.cat([h, skips.pop()], dim=1), emb, context, context_mask)
        return self.conv_out(self.norm_out(h))  # (N, C_out, H, W)


__all__ = ["UNetConfig", "UNet"]
