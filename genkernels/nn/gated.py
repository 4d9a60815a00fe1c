"""GatedActivation: the PixelCNN / WaveNet gate tanh(a + ca) * sigmoid(b + cb) as a module."""
from __future__ import annotations

import torch
from torch import nn

from genkernels.ops.gated_activation import gated_activation


class GatedActivation(nn.Module):
    """y = tanh(a + ca) * sigmoid(b + cb), a / b the two halves of x along `dim` (size 2C -> C).

    forward(x, cond=None): x (N, 2C, ...); cond None or an (N, 2C) per-sample bias (e.g. a class
    embedding) broadcast over the other dimensions. No parameters.
    """

    def __init__(self, dim: int = 1):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an int, got {type(dim).__name__}")
        self.dim = dim

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return gated_activation(x, cond, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
