"""Layers of the transformer blocks over the fused ops (genkernels/ops: rms_norm, layer_norm, swiglu,
gelu_tanh, rotary):

  RMSNorm, LayerNorm   drop-ins for torch.nn.RMSNorm / torch.nn.LayerNorm over the last dim, with the
                       same constructor arguments and state-dict keys (weight, bias), so their
                       weights load into each other either way
  SwiGLU               the Llama MLP: w2(silu(w1 x) * w3 x), bias-free linears by default
  GeluMLP              the GPT-2 MLP: fc2(gelu_tanh(fc1 x))
  RotaryEmbedding      cos/sin tables (non-persistent buffers, grown on demand) applied to q and k
                       (N, T, H, D) at a position offset, for cached decoding
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from genkernels.ops.gelu_tanh import gelu_tanh
from genkernels.ops.layer_norm import layer_norm
from genkernels.ops.rms_norm import rms_norm
from genkernels.ops.rotary import rotary, rotary_tables
from genkernels.ops.swiglu import swiglu


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """(length, dim) float32 position table of Vaswani et al.: sin in the even columns, cos in the
    odd ones, frequencies 10000^(-2i/dim) (computed in float64)."""
    position = torch.arange(length, dtype=torch.float64)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[:dim // 2])
    return table.float()


def _last_dim(normalized_shape) -> int:
    if isinstance(normalized_shape, numbers.Integral):
        return int(normalized_shape)
    shape = tuple(normalized_shape)
    if len(shape) != 1:
        raise ValueError(f"normalized_shape must be one int (the last dim), got {shape}")
    return int(shape[0])


class RMSNorm(nn.Module):
    """torch.nn.RMSNorm over the last dim on genkernels.ops.rms_norm. eps None: torch's default
    (finfo(x.dtype).eps)."""

    def __init__(self, normalized_shape, eps: float | None = None, elementwise_affine: bool = True,
                 device=None, dtype=None):
        super().__init__()
        self.normalized_shape = (_last_dim(normalized_shape),)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(self.normalized_shape, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., D) -> (..., D)
        eps = self.eps if self.eps is not None else torch.finfo(x.dtype).eps
        return rms_norm(x, self.weight, eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class LayerNorm(nn.Module):
    """torch.nn.LayerNorm over the last dim on genkernels.ops.layer_norm."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        self.normalized_shape = (_last_dim(normalized_shape),)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(self.normalized_shape, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)
        if elementwise_affine and bias:
            self.bias = nn.Parameter(torch.zeros(self.normalized_shape, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., D) -> (..., D)
        return layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class SwiGLU(nn.Module):
    """Llama's MLP: w2(silu(w1 x) * w3 x); hidden defaults to 8/3 dim rounded up to a multiple of 64."""

    def __init__(self, dim: int, hidden: int | None = None, bias: bool = False, device=None, dtype=None):
        super().__init__()
        hidden = hidden or 64 * ((8 * dim // 3 + 63) // 64)
        self.w1 = nn.Linear(dim, hidden, bias=bias, device=device, dtype=dtype)  # gate
        self.w3 = nn.Linear(dim, hidden, bias=bias, device=device, dtype=dtype)  # up
        self.w2 = nn.Linear(hidden, dim, bias=bias, device=device, dtype=dtype)  # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., dim)
        return self.w2(swiglu(self.w1(x), self.w3(x)))


class GeluMLP(nn.Module):
    """GPT-2's MLP: fc2(gelu_tanh(fc1 x)), hidden = 4 dim by default."""

    def __init__(self, dim: int, hidden: int | None = None, bias: bool = True, device=None, dtype=None):
        super().__init__()
        hidden = hidden or 4 * dim
        self.fc1 = nn.Linear(dim, hidden, bias=bias, device=device, dtype=dtype)
        self.fc2 = nn.Linear(hidden, dim, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., dim)
        return self.fc2(gelu_tanh(self.fc1(x)))


class RotaryEmbedding(nn.Module):
    """Rotary position embedding of q and k laid out (N, T, H, D) (half-split / GPT-NeoX convention).

    forward(q, k, offset=0) -> (q', k'): token t of sequence n at position offset(+offsets[n]) + t; offset
    an int or an (N,) int64 tensor (per-sequence positions when cached prompts have different
    lengths). The float32 tables cover max_positions and grow (doubling) when a call needs more."""

    def __init__(self, head_dim: int, max_positions: int = 2048, base: float = 10000.0, device=None):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"head_dim must be even, got {head_dim}")
        self.head_dim, self.base = head_dim, base
        cos, sin = rotary_tables(max_positions, head_dim, base, device=device)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _ensure(self, needed: int) -> None:
        if needed > self.cos.shape[0]:
            size = max(needed, 2 * self.cos.shape[0])
            self.cos, self.sin = rotary_tables(size, self.head_dim, self.base, device=self.cos.device)

    def forward(self, q: torch.Tensor, k: torch.Tensor, offset: int | torch.Tensor = 0):
        t = max(q.shape[1], k.shape[1])
        if not torch.compiler.is_compiling():
            self._ensure((int(offset.max()) if isinstance(offset, torch.Tensor) and offset.numel() else
                          (offset if isinstance(offset, int) else 0)) + t)
        cos, sin = self.cos, self.sin
        if q.dtype == torch.float64:
            cos, sin = cos.double(), sin.double()
        return rotary(q, cos, sin, offset), rotary(k, cos, sin, offset)
