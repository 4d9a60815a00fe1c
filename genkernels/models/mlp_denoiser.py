"""MLP denoiser for vectors (the 2D toys, tabular rows): the backbone="mlp" of genkernels.models.Diffusion.

    h = Linear(x)                                          (N, dim) -> (N, hidden)
    emb = TimestepMLP(t) [+ class embedding]               (N, hidden)
    depth x  h = h + Linear(SiLU(Linear(LN(h)) + Linear(emb)))    residual blocks
    out = Linear(SiLU(LN(h)))                              (N, hidden) -> (N, dim), zero-initialised

The timestep enters every block as an additive bias of the hidden layer. labels (N,) in
[0, num_classes] with num_classes as the null class (classifier-free guidance), as in the UNet.
The forward signature matches the image denoisers; context and cond are not supported.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from genkernels.models._validate import check_int
from genkernels.nn.diffusion_blocks import ConditionEmbedding, check_labels, check_timesteps


@dataclasses.dataclass
class MLPDenoiserConfig:
    """dim             width of the data vectors x (2 for the toys)
    hidden          width of the residual stream
    depth           residual blocks
    time_embed_dim  sinusoidal timestep features fed to the time MLP
    num_classes     classes for class conditioning (plus a null class); 0: none
    """

    dim: int = 2
    hidden: int = 128
    depth: int = 3
    time_embed_dim: int = 64
    num_classes: int = 0

    def __post_init__(self):
        for name in ("dim", "hidden", "time_embed_dim"):
            setattr(self, name, check_int(f"MLPDenoiserConfig.{name}", getattr(self, name), 1))
        for name in ("depth", "num_classes"):
            setattr(self, name, check_int(f"MLPDenoiserConfig.{name}", getattr(self, name), 0))


class _Block(nn.Module):
    """h + Linear(SiLU(Linear(LN(h)) + Linear(emb))); h, emb (N, hidden)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb_proj = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h, emb):
        return h + self.fc2(F.silu(self.fc1(self.norm(h)) + self.emb_proj(emb)))


class MLPDenoiser(nn.Module):
    """forward(x (N, dim), t (N,) int or float, labels (N,) | None) -> (N, dim)."""

    def __init__(self, config: MLPDenoiserConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else MLPDenoiserConfig()
        self.embed = ConditionEmbedding(config.hidden, config.time_embed_dim, config.num_classes)
        self.input = nn.Linear(config.dim, config.hidden)
        self.blocks = nn.ModuleList(_Block(config.hidden) for _ in range(config.depth))
        self.norm_out = nn.LayerNorm(config.hidden)
        self.output = nn.Linear(config.hidden, config.dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, x: torch.Tensor, t, labels: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        config = self.config
        if context is not None or context_mask is not None:
            raise ValueError("MLPDenoiser does not take context/context_mask (no cross-attention); got a value")
        if cond is not None:
            raise ValueError("MLPDenoiser does not take cond (no conditioning input); got a value")
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != config.dim:
            got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a tensor (N, dim) = (N, {config.dim}), got {got}")
        n = x.shape[0]
        t = check_timesteps(t, n, x.device)
        labels = check_labels(labels, n, config.num_classes, x.device)
        emb = self.embed(t, labels)  # (N, hidden)
        h = self.input(x)  # (N, hidden)
        for block in self.blocks:
            h = block(h, emb)
        return self.output(F.silu(self.norm_out(h)))  # (N, dim)


__all__ = ["MLPDenoiserConfig", "MLPDenoiser"]
