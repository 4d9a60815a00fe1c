"""The non-coupling layers of image flows: ActNorm and the invertible 1x1 convolution (Glow, Kingma &
Dhariwal 2018), Squeeze (RealNVP's space-to-depth, Dinh et al. 2017) and fixed channel Permute.

Every layer: forward(x, context=None) -> (y, logdet), inverse(y, context=None) -> (x, logdet),
logdet (N,) per sample, x's dtype. context is accepted (so a FlowSequential can pass it to every
layer) and ignored.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from genkernels.ops.actnorm import actnorm


def _check_input(x, channels: int | None, name: str, min_dim: int = 2) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimensions (N, C, ...), got shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels (dim 1), got shape {tuple(x.shape)}")


def _check_channels(channels) -> int:
    if isinstance(channels, bool) or not isinstance(channels, int):
        raise TypeError(f"channels must be an int, got {type(channels).__name__}")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    return channels


class ActNorm(nn.Module):
    """y = (x + bias) * exp(log_scale) per channel (dim 1); logdet = prod(rest) * sum(log_scale).

    Data-dependent initialisation (Glow): the first forward in training mode sets bias and
    log_scale so that this batch's output has mean 0 and standard deviation 1 per channel. The
    `initialized` buffer records it and travels in the state dict, so a reloaded model is not
    re-initialised. x (N, C, *rest); the batch used must be finite.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.channels = _check_channels(channels)
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    @property
    def needs_initialization(self) -> bool:
        """True while the next training forward will re-set the parameters from its batch."""
        return not bool(self.initialized)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set bias = -mean, log_scale = -log(std + eps) per channel from the batch x."""
        _check_input(x, self.channels, "x")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("ActNorm data-dependent initialisation needs a finite batch; x has NaN or inf")
        flat = x.detach().transpose(0, 1).reshape(self.channels, -1).to(torch.float64)  # (C, N * prod(rest))
        mean, std = flat.mean(1), flat.std(1, unbiased=False)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None):
        _check_input(x, self.channels, "x")
        if self.training and not bool(self.initialized):
            self.initialize(x)
        return actnorm(x, self.bias.to(x.dtype), self.log_scale.to(x.dtype))

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None):
        _check_input(y, self.channels, "y")
        return actnorm(y, self.bias.to(y.dtype), self.log_scale.to(y.dtype), inverse=True)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def _channel_matmul(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """y[:, i, ...] = sum_j weight[i, j] x[:, j, ...]: a 1x1 convolution on (N, C, *rest)."""
    if x.dim() == 2:
        return x @ weight.t()
    return (weight @ x.flatten(2)).view_as(x)  # (C, C) @ (N, C, L) -> (N, C, L)


class InvertibleConv1x1(nn.Module):
    """y = W x over channels at every position (Glow's invertible 1x1 convolution).

    lu=True (default): W = P L (U + diag(sign_s * exp(log_s))), P a fixed permutation, L unit
    lower- and U strictly upper-triangular parameters: logdet = prod(rest) * sum(log_s) in O(C).
    lu=False: W a free (C, C) parameter, logdet = prod(rest) * log|det W| by slogdet (O(C^3)).
    W starts as a random rotation (QR of a Gaussian matrix from the global RNG), so logdet = 0
    at initialisation. x (N, C, *rest).
    """

    def __init__(self, channels: int, lu: bool = True):
        super().__init__()
        self.channels = _check_channels(channels)
        self.lu = bool(lu)
        rotation = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64))[0]
        if not self.lu:
            self.weight = nn.Parameter(rotation.float())
            return
        permutation, lower, upper = torch.linalg.lu(rotation)
        diagonal = torch.diagonal(upper)
        self.register_buffer("permutation", permutation.float())
        self.register_buffer("sign_s", torch.sign(diagonal).float())
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(torch.tril(lower, -1).float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_s = nn.Parameter(torch.log(diagonal.abs()).float())

    def weight_and_logabsdet(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(W (C, C), log|det W| scalar) in dtype."""
        if not self.lu:
            weight = self.weight.to(dtype)
            return weight, torch.linalg.slogdet(weight)[1]
        mask = self.lower_mask.to(dtype)
        eye = torch.eye(self.channels, dtype=dtype, device=mask.device)
        lower = self.lower.to(dtype) * mask + eye
        upper = self.upper.to(dtype) * mask.t() + torch.diag(self.sign_s.to(dtype) * torch.exp(self.log_s.to(dtype)))
        return self.permutation.to(dtype) @ lower @ upper, self.log_s.to(dtype).sum()

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None):
        _check_input(x, self.channels, "x")
        weight, logabsdet = self.weight_and_logabsdet(x.dtype)
        positions = math.prod(x.shape[2:])
        return _channel_matmul(weight, x), (positions * logabsdet).expand(x.shape[0]).contiguous()

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None):
        _check_input(y, self.channels, "y")
        weight, logabsdet = self.weight_and_logabsdet(y.dtype)
        positions = math.prod(y.shape[2:])
        # the exact inverse of the (rounded) forward weight, rounded once: inverting in float32 would
        # add cond(W) ulps, which recompute-by-inverse would carry into every earlier layer
        inverse_weight = torch.linalg.inv(weight.to(torch.float64)).to(y.dtype)
        return _channel_matmul(inverse_weight, y), (-positions * logabsdet).expand(y.shape[0]).contiguous()

    def extra_repr(self) -> str:
        return f"channels={self.channels}, lu={self.lu}"


class Squeeze(nn.Module):
    """Space to depth: (N, C, H, W) -> (N, C f^2, H/f, W/f), each f x f block into channels
    (channel c * f^2 + i * f + j holds x[c, f h + i, f w + j], as in Glow). Volume preserving:
    logdet = 0. H and W must be divisible by f."""

    def __init__(self, factor: int = 2):
        super().__init__()
        if isinstance(factor, bool) or not isinstance(factor, int):
            raise TypeError(f"factor must be an int, got {type(factor).__name__}")
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.factor = factor

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None):
        _check_input(x, None, "x", min_dim=4)
        f = self.factor
        if x.dim() != 4 or x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"Squeeze(factor={f}) needs x (N, C, H, W) with H and W divisible by {f}, "
                             f"got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        y = x.reshape(n, c, h // f, f, w // f, f).permute(0, 1, 3, 5, 2, 4)  # (N, C, f, f, H/f, W/f)
        return y.reshape(n, c * f * f, h // f, w // f), x.new_zeros(n)

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None):
        _check_input(y, None, "y", min_dim=4)
        f = self.factor
        if y.dim() != 4 or y.shape[1] % (f * f):
            raise ValueError(f"Squeeze(factor={f}).inverse needs y (N, C * {f * f}, H, W), got shape {tuple(y.shape)}")
        n, c, h, w = y.shape
        x = y.reshape(n, c // (f * f), f, f, h, w).permute(0, 1, 4, 2, 5, 3)  # (N, C, H/f, f, W/f, f)
        return x.reshape(n, c // (f * f), h * f, w * f), y.new_zeros(n)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class Permute(nn.Module):
    """A fixed channel permutation (dim 1): mode="reverse" (RealNVP / Glow's reverse) or "random"
    (from torch.Generator().manual_seed(seed), so it does not touch the global RNG). logdet = 0.
    The permutation is a buffer, saved in the state dict."""

    def __init__(self, channels: int, mode: str = "reverse", seed: int = 0):
        super().__init__()
        self.channels = _check_channels(channels)
        if mode == "reverse":
            permutation = torch.arange(channels - 1, -1, -1)
        elif mode == "random":
            permutation = torch.randperm(channels, generator=torch.Generator().manual_seed(seed))
        else:
            raise ValueError(f"mode must be 'reverse' or 'random', got {mode!r}")
        self.mode = mode
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None):
        _check_input(x, self.channels, "x")
        return x.index_select(1, self.permutation), x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None):
        _check_input(y, self.channels, "y")
        return y.index_select(1, self.inverse_permutation), y.new_zeros(y.shape[0])

    def extra_repr(self) -> str:
        return f"channels={self.channels}, mode={self.mode!r}"
