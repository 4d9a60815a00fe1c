"""DiT: a transformer denoiser on image patches (Peebles & Xie 2023, "Scalable Diffusion Models
with Transformers"), the second backbone of genkernels.models.Diffusion.

    x (N, C, H, W) -> patches (N, T, dim), T = (H / p) * (W / p)    (a stride-p conv, "patchify")
    tokens + position embedding (fixed 2D sin-cos, or learned)
    depth x DiTBlock(tokens, c)                                      c = TimestepMLP(t) + class embedding
    final adaLN + Linear -> (N, T, p * p * C_out) -> unpatchify -> (N, C_out, H, W)

DiTBlock with adaLN-Zero: a zero-initialised MLP maps the conditioning vector c to six (N, dim)
vectors (shift, scale, gate) for the attention and the MLP branch:

    x = x + gate_msa * SelfAttention(modulate(LN(x), shift_msa, scale_msa))
    x = x + CrossAttention(LN(x), context)          (context_dim > 0 only; output zero-initialised)
    x = x + gate_mlp * MLP(modulate(LN(x), shift_mlp, scale_mlp))

modulate(x, shift, scale) = LayerNorm(x, no affine) * (1 + scale) + shift is genkernels.nn.modulate
(the fused adaLN op). Zero gates make each block the identity at initialisation, and the final
layer is zero-initialised, so an untrained DiT predicts 0. Self-attention is non-causal
(genkernels.nn.SelfAttention(causal=False)). The forward signature is the UNet's: labels (N,)
with num_classes as the null class, context (N, L, context_dim) + context_mask (N, L) bool (True =
real token), cond (N, cond_channels, H, W) concatenated to x before patchify.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from genkernels.models._validate import check_choice, check_int, check_real
from genkernels.nn.attention import CrossAttention, SelfAttention
from genkernels.nn.diffusion_blocks import (ConditionEmbedding, check_cond, check_context, check_labels,
                                            check_timesteps, context_padding_mask)
from genkernels.nn.norm import modulate

POSITION_EMBEDDINGS = ("sincos", "learned")


@dataclasses.dataclass
class DiTConfig:
    """in_channels      channels of the image x
    out_channels     channels of the prediction; None: in_channels
    image_size       side of the square images (the position embedding is built for it)
    patch_size       side p of the square patches (image_size % p == 0)
    dim              token width
    depth            transformer blocks
    num_heads        attention heads (must divide dim)
    mlp_ratio        MLP hidden width / dim
    num_classes      classes for class conditioning (plus a null class); 0: none
    context_dim      width of the cross-attention tokens; 0: no cross-attention
    cond_channels    channels of an image concatenated to x at the input; 0: none
    pos_embed        "sincos" (fixed 2D sin-cos, as in the paper) or "learned"
    """

    in_channels: int = 1
    out_channels: int | None = None
    image_size: int = 8
    patch_size: int = 2
    dim: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 0
    context_dim: int = 0
    cond_channels: int = 0
    pos_embed: str = "sincos"

    def __post_init__(self):
        for name in ("in_channels", "image_size", "patch_size", "dim", "depth", "num_heads"):
            setattr(self, name, check_int(f"DiTConfig.{name}", getattr(self, name), 1))
        for name in ("num_classes", "context_dim", "cond_channels"):
            setattr(self, name, check_int(f"DiTConfig.{name}", getattr(self, name), 0))
        if self.out_channels is not None:
            self.out_channels = check_int("DiTConfig.out_channels", self.out_channels, 1)
        self.mlp_ratio = check_real("DiTConfig.mlp_ratio", self.mlp_ratio, 0.0)
        if self.mlp_ratio <= 0:
            raise ValueError(f"DiTConfig.mlp_ratio must be > 0, got {self.mlp_ratio}")
        self.pos_embed = check_choice("DiTConfig.pos_embed", self.pos_embed, POSITION_EMBEDDINGS)
        if self.image_size % self.patch_size:
            raise ValueError(f"DiTConfig.image_size ({self.image_size}) must be divisible by patch_size "
                             f"({self.patch_size})")
        if self.dim % self.num_heads:
            raise ValueError(f"DiTConfig.dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        if self.pos_embed == "sincos" and self.dim % 4:
            raise ValueError(f"DiTConfig.dim must be divisible by 4 for the 2D sin-cos position embedding, "
                             f"got {self.dim}")

    @property
    def grid_size(self) -> int:
        """Patches per side: image_size / patch_size."""
        return self.image_size // self.patch_size

    @property
    def output_channels(self) -> int:
        return self.in_channels if self.out_channels is None else self.out_channels


def sincos_position_embedding(dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2D sin-cos embedding (MAE / DiT): (grid_size ** 2, dim), row-major over the patch grid.

    Half the channels encode the row, half the column, each as [sin(pos * w), cos(pos * w)] with
    w_k = 10000 ** (-k / (dim / 4)).
    """
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))  # (dim/4,)
    pos = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")  # (G, G) each

    def encode(p):  # (G*G,) -> (G*G, dim/2)
        args = p.reshape(-1, 1) * omega[None]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=1)

    return torch.cat([encode(rows), encode(cols)], dim=1).float()  # (G*G, dim)


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning; x (N, T, dim), c (N, dim) -> (N, T, dim)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, context_dim: int = 0):
        super().__init__()
        self.attn = SelfAttention(dim, num_heads, causal=False)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        # c -> shift/scale/gate for attention and MLP; zero-initialised ("adaLN-Zero")
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)
        if context_dim > 0:
            self.cross_norm = nn.LayerNorm(dim, eps=1e-6)
            self.cross = CrossAttention(dim, context_dim, num_heads=num_heads)
            nn.init.zeros_(self.cross.out.weight)
            nn.init.zeros_(self.cross.out.bias)
        else:
            self.cross_norm = self.cross = None

    def forward(self, x, c, context=None, context_mask=None):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.ada(c).chunk(6, dim=1)  # (N, dim)
        x = x + gate_msa[:, None] * self.attn(modulate(x, shift_msa, scale_msa))
        if self.cross is not None and context is not None:
            key_padding_mask, has_token = context_padding_mask(context, context_mask)
            out = self.cross(self.cross_norm(x), context, context_mask=key_padding_mask)  # (N, T, dim)
            if has_token is not None:  # a row that sees no token gets no update (not the out bias)
                out = out * has_token[:, None, None].to(out.dtype)
            x = x + out
        return x + gate_mlp[:, None] * self.mlp(modulate(x, shift_mlp, scale_mlp))


class DiT(nn.Module):
    """forward(x (N, C_in, H, W), t (N,) int or float, labels (N,) | None, context (N, L, D) | None,
    context_mask (N, L) bool | None, cond (N, C_cond, H, W) | None) -> (N, C_out, H, W).
    H = W = image_size (the position embedding fixes the token grid)."""

    def __init__(self, config: DiTConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else DiTConfig()
        p, dim = config.patch_size, config.dim
        self.patchify = nn.Conv2d(config.in_channels + config.cond_channels, dim, p, stride=p)
        grid_tokens = config.grid_size ** 2
        if config.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.randn(1, grid_tokens, dim) * 0.02)
        else:
            self.register_buffer("pos_embed", sincos_position_embedding(dim, config.grid_size)[None],
                                 persistent=False)
        self.embed = ConditionEmbedding(dim, min(dim, 256), config.num_classes)
        self.blocks = nn.ModuleList(DiTBlock(dim, config.num_heads, config.mlp_ratio, config.context_dim)
                                    for _ in range(config.depth))
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.final = nn.Linear(dim, p * p * config.output_channels)
        for layer in (self.final_ada[1], self.final):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T, p * p * C) -> (N, C, G * p, G * p), G = grid_size."""
        n, g, p, c = tokens.shape[0], self.config.grid_size, self.config.patch_size, self.config.output_channels
        x = tokens.reshape(n, g, g, p, p, c)  # (N, G_h, G_w, p_h, p_w, C)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(n, c, g * p, g * p)

    def forward(self, x: torch.Tensor, t, labels: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        config = self.config
        expected = (config.in_channels, config.image_size, config.image_size)
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != expected:
            got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a tensor (N, in_channels, image_size, image_size) = (N, {expected[0]}, "
                             f"{expected[1]}, {expected[2]}), got {got}")
        n = x.shape[0]
        t = check_timesteps(t, n, x.device)
        labels = check_labels(labels, n, config.num_classes, x.device)
        check_context(context, context_mask, n, config.context_dim)
        check_cond(cond, x, config.cond_channels)

        c = self.embed(t, labels)  # (N, dim)
        if cond is not None:
            x = torch.cat([x, cond.to(x.dtype)], dim=1)  # (N, C_in + C_cond, H, W)
        h = self.patchify(x).flatten(2).transpose(1, 2)  # (N, T, dim)
        h = h + self.pos_embed.to(h.dtype)
        for block in self.blocks:
            h = block(h, c, context, context_mask)
        shift, scale = self.final_ada(c).chunk(2, dim=1)  # (N, dim) each
        h = self.final(modulate(h, shift, scale))  # (N, T, p * p * C_out)
        return self.unpatchify(h)  # (N, C_out, H, W)


__all__ = ["DiTConfig", "DiT", "DiTBlock", "sincos_position_embedding"]
