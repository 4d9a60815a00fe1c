"""Coupling layers for normalizing flows: AffineCoupling (RealNVP, Dinh et al. 2017; Glow, Kingma &
Dhariwal 2018), AdditiveCoupling (NICE, Dinh et al. 2015) and SplineCoupling (rational-quadratic
splines, Durkan et al. 2019).

A coupling layer splits x by a mask into an identity part x1 and a transformed part x2, computes
the transform's parameters from x1 (plus an optional per-sample context) with a conditioner
network, and transforms x2 elementwise. x1 passes unchanged, so the inverse recomputes the same
parameters from y1 = x1 and inversion is exact up to rounding: FlowSequential(recompute=True)
relies on this to rebuild each layer's input from its output instead of storing it.

Masks: "channel" keeps channels [:C//2] (parity 0) or [C//2:] (parity 1) and transforms the other
half; "checkerboard" keeps the positions (h + w) % 2 == parity of an (N, C, H, W) image and
transforms the rest. The conditioner sees the kept half (channel) or x with the transformed
positions zeroed (checkerboard), with the context (N, context_channels) concatenated as extra
channels (broadcast over H, W for images).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from genkernels.ops.affine_coupling import affine_coupling
from genkernels.ops.rq_spline import rq_spline

MASKS = ("channel", "checkerboard")
# rq_spline's interior derivatives are min_derivative + softplus(raw); this offset on the raw value
# makes a zero conditioner output give derivative 1 everywhere, so with equal bins (zero widths
# and heights) a zero-initialised SplineCoupling starts as the identity.
_MIN_DERIVATIVE = 1e-3
_IDENTITY_DERIVATIVE_OFFSET = math.log(math.expm1(1.0 - _MIN_DERIVATIVE))


class ConvConditioner(nn.Module):
    """3x3 conv, ReLU, 1x1 conv, ReLU, 3x3 conv: (N, in, H, W) -> (N, out, H, W).

    The last conv starts at zero (Glow's ZeroConv2d), so a coupling layer starts as the identity
    (affine tanh form, additive) and a deep flow starts well conditioned.
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden_channels, hidden_channels, 1), nn.ReLU(),
            nn.Conv2d(hidden_channels, out_channels, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class MLPConditioner(nn.Module):
    """Linear, ReLU, Linear, ReLU, Linear (zero-initialised): (N, in) -> (N, out)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden_features), nn.ReLU(),
            nn.Linear(hidden_features, hidden_features), nn.ReLU(),
            nn.Linear(hidden_features, out_features))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def checkerboard_identity_mask(height: int, width: int, parity: int, *, device=None, dtype=None) -> torch.Tensor:
    """(H, W) mask, 1 where (h + w) % 2 == parity (the positions a checkerboard coupling keeps)."""
    h = torch.arange(height, device=device)[:, None]
    w = torch.arange(width, device=device)[None, :]
    return ((h + w) % 2 == parity).to(dtype or torch.float32)


class _Coupling(nn.Module):
    """Shared masking, validation and conditioner plumbing; subclasses define `_transform`.

    params_per_element: how many conditioner outputs each transformed element needs (affine 2:
    shift and log-scale; additive 1; spline 3K - 1).
    """

    def __init__(self, channels: int, params_per_element: int, hidden_channels: int, mask: str, parity: int,
                 context_channels: int | None, conditioner):
        super().__init__()
        self.channels = _check_int("channels", channels)
        hidden_channels = _check_int("hidden_channels", hidden_channels)
        if mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
        if parity not in (0, 1) or isinstance(parity, bool):
            raise ValueError(f"parity must be 0 or 1, got {parity!r}")
        if mask == "channel" and channels % 2:
            raise ValueError(f"channels must be even for mask='channel' (it splits them in halves), got {channels}")
        if context_channels is not None:
            _check_int("context_channels", context_channels)
        self.mask, self.parity, self.context_channels = mask, parity, context_channels
        self.params_per_element = params_per_element
        # channels the conditioner sees and the per-element parameters it produces
        kept = channels // 2 if mask == "channel" else channels
        self.transformed_channels = channels // 2 if mask == "channel" else channels
        in_channels = kept + (context_channels or 0)
        out_channels = params_per_element * self.transformed_channels
        if conditioner is None or conditioner == "conv":
            self.network = "conv"
            self.conditioner = ConvConditioner(in_channels, hidden_channels, out_channels)
        elif conditioner == "mlp":
            if mask == "checkerboard":
                raise ValueError("mask='checkerboard' needs images (N, C, H, W); conditioner='mlp' is for vectors")
            self.network = "mlp"
            self.conditioner = MLPConditioner(in_channels, hidden_channels, out_channels)
        elif isinstance(conditioner, nn.Module):
            self.network = "custom"
            self.conditioner = conditioner
        else:
            raise TypeError(f"conditioner must be 'conv', 'mlp', None or an nn.Module, got {conditioner!r}")
        self.conditioner_in_channels, self.conditioner_out_channels = in_channels, out_channels

    # -- validation -------------------------------------------------------------------------
    def _check(self, x: torch.Tensor, context: torch.Tensor | None, name: str) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
        if x.dim() < 2 or x.shape[1] != self.channels:
            raise ValueError(f"{name} must be (N, {self.channels}, ...), got shape {tuple(x.shape)}")
        if self.network == "conv" and x.dim() != 4:
            raise ValueError(f"{name} must be (N, C, H, W) for the conv conditioner, got shape {tuple(x.shape)}; "
                             "use conditioner='mlp' for (N, D) vectors")
        if self.network == "mlp" and x.dim() != 2:
            raise ValueError(f"{name} must be (N, D) for the MLP conditioner, got shape {tuple(x.shape)}")
        if self.mask == "checkerboard":
            if x.dim() != 4:
                raise ValueError(f"mask='checkerboard' needs {name} (N, C, H, W), got shape {tuple(x.shape)}")
            if x.shape[2] % 2 or x.shape[3] % 2:
                raise ValueError(f"mask='checkerboard' needs even H and W, got {name} shape {tuple(x.shape)}")
        if self.context_channels is not None:
            if context is None:
                raise ValueError(f"context (N, {self.context_channels}) is required (context_channels="
                                 f"{self.context_channels})")
            if context.dim() != 2 or context.shape != (x.shape[0], self.context_channels):
                raise ValueError(f"context must be (N, context_channels) = ({x.shape[0]}, {self.context_channels}), "
                                 f"got {tuple(context.shape)}")

    # -- masking and conditioner --------------------------------------------------------------
    def _kept(self, x: torch.Tensor) -> torch.Tensor:
        """What the conditioner sees of x (equal for x and y, which agree on the kept part)."""
        if self.mask == "channel":
            half = self.channels // 2
            return x[:, :half] if self.parity == 0 else x[:, half:]
        keep = checkerboard_identity_mask(x.shape[2], x.shape[3], self.parity, device=x.device, dtype=x.dtype)
        return x * keep  # (N, C, H, W), transformed positions zeroed

    def _conditioner_output(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Conditioner output (N, params_per_element * transformed_channels, *rest)."""
        h = self._kept(x)
        if self.context_channels is not None:
            ctx = context.to(h.dtype).reshape(*context.shape, *([1] * (h.dim() - 2)))
            h = torch.cat([h, ctx.expand(-1, -1, *h.shape[2:])], dim=1)
        raw = self.conditioner(h)
        expected = (x.shape[0], self.conditioner_out_channels, *x.shape[2:])
        if tuple(raw.shape) != expected:
            raise ValueError(f"conditioner output must be {expected} (params_per_element={self.params_per_element} "
                             f"x {self.transformed_channels} channels), got {tuple(raw.shape)}")
        return raw

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None):
        self._check(x, context, "x")
        return self._transform(x, self._conditioner_output(x, context), inverse=False)

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None):
        self._check(y, context, "y")
        return self._transform(y, self._conditioner_output(y, context), inverse=True)

    def recompute_forward(self, y: torch.Tensor, context: torch.Tensor | None = None):
        """FlowSequential(recompute=True)'s backward hook: rebuild x = inverse(y) and redo
        forward(x) with grad, running the conditioner once instead of twice (x and y share the kept
        part, so one conditioner output serves the inverse and the re-run forward).

        Returns (x, leaves, y_again, logdet): x detached; leaves, the tensors whose gradients add
        up to x's (one for the transform's direct path, one for the conditioner's path through the
        kept part); y_again and logdet, forward(x) with its autograd graph.
        """
        self._check(y, context, "y")
        kept_leaf = y.detach().requires_grad_()  # values of x's kept part
        raw = self._conditioner_output(kept_leaf, context)
        with torch.no_grad():
            x, _ = self._transform(y, raw.detach(), inverse=True)
        direct_leaf = x.detach().requires_grad_()
        y_again, logdet = self._transform(direct_leaf, raw, inverse=False)
        return x, [direct_leaf, kept_leaf], y_again, logdet

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, mask={self.mask!r}, parity={self.parity}, "
                f"context_channels={self.context_channels}")


class AffineCoupling(_Coupling):
    """y2 = x2 * exp(s) + t, y1 = x1, with (t, raw) = conditioner(x1 [, context]) and a bounded
    log-scale s = scale * tanh(raw / scale) (form="tanh") or log(sigmoid(raw + 2)) (form="sigmoid").

    forward(x, context=None) -> (y, logdet); inverse(y, context=None) -> (x, logdet)
        x, y     (N, C, H, W) with the conv conditioner (default), (N, C) with conditioner="mlp",
                 (N, C, *rest) with a custom conditioner (mask="channel")
        context  (N, context_channels); ignored when context_channels is None (so one context can
                 be passed down a FlowSequential that mixes conditional and plain layers)
        logdet   (N,) log|det dy/dx| (forward) or log|det dx/dy| (inverse), in x's dtype
    conditioner: "conv" (default; None means "conv"), "mlp", or an nn.Module mapping
    (N, kept + context_channels, *rest) -> (N, 2 * transformed, *rest): shift channels first,
    then the raw log-scales. kept = transformed = C // 2 for mask="channel", C for "checkerboard".
    """

    def __init__(self, channels: int, hidden_channels: int = 64, mask: str = "channel", parity: int = 0,
                 scale: float = 2.0, form: str = "tanh", context_channels: int | None = None, conditioner=None):
        super().__init__(channels, 2, hidden_channels, mask, parity, context_channels, conditioner)
        if form not in ("tanh", "sigmoid"):
            raise ValueError(f"form must be 'tanh' or 'sigmoid', got {form!r}")
        if not float(scale) > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale, self.form = float(scale), form

    def _transform(self, x, raw, inverse):
        shift, log_scale = raw.chunk(2, dim=1)
        return affine_coupling(x, shift, log_scale, mask=self.mask, parity=self.parity, scale=self.scale,
                               form=self.form, inverse=inverse)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scale={self.scale}, form={self.form!r}"


class AdditiveCoupling(_Coupling):
    """y2 = x2 + t(x1 [, context]), y1 = x1 (NICE): volume preserving, logdet = 0.

    Shapes as AffineCoupling; a custom conditioner outputs (N, transformed, *rest) shifts.
    """

    def __init__(self, channels: int, hidden_channels: int = 64, mask: str = "channel", parity: int = 0,
                 context_channels: int | None = None, conditioner=None):
        super().__init__(channels, 1, hidden_channels, mask, parity, context_channels, conditioner)

    def _transform(self, x, raw, inverse):
        return affine_coupling(x, raw, None, mask=self.mask, parity=self.parity, inverse=inverse)


class SplineCoupling(_Coupling):
    """y2 = RQS(x2; theta(x1 [, context])), y1 = x1: a monotone rational-quadratic spline per element
    on [-tail_bound, tail_bound] with num_bins bins and identity tails (Durkan et al. 2019).

    Shapes as AffineCoupling; the conditioner outputs (N, transformed * (3K - 1), *rest), per
    transformed channel K unnormalised widths, K heights and K - 1 interior derivatives (offset so
    that zero outputs give derivative 1: the default conditioner starts the layer as the identity).
    """

    def __init__(self, channels: int, hidden_channels: int = 64, num_bins: int = 8, tail_bound: float = 3.0,
                 mask: str = "channel", parity: int = 0, context_channels: int | None = None, conditioner=None):
        num_bins = _check_int("num_bins", num_bins, 2)
        super().__init__(channels, 3 * num_bins - 1, hidden_channels, mask, parity, context_channels, conditioner)
        if not float(tail_bound) > 0:
            raise ValueError(f"tail_bound must be > 0, got {tail_bound}")
        self.num_bins, self.tail_bound = num_bins, float(tail_bound)

    def _transform(self, x, raw, inverse):
        k = self.num_bins
        n, rest = x.shape[0], x.shape[2:]
        theta = raw.reshape(n, self.transformed_channels, 3 * k - 1, *rest).movedim(2, -1)  # (N, Ct, *rest, 3K-1)
        if self.mask == "channel":
            half = self.channels // 2
            x1, x2 = (x[:, :half], x[:, half:]) if self.parity == 0 else (x[:, half:], x[:, :half])
        else:
            # the transformed positions of the checkerboard, gathered: (N, C, H*W/2)
            moved = 1 - checkerboard_identity_mask(x.shape[2], x.shape[3], self.parity, device=x.device)
            index = moved.flatten().nonzero().squeeze(1)
            x2 = x.flatten(2).index_select(2, index)
            theta = theta.flatten(2, 3).index_select(2, index)  # (N, C, H*W/2, 3K-1)
        # dense parameter tensors: the kernels read (..., K) rows
        widths, heights = theta[..., :k].contiguous(), theta[..., k:2 * k].contiguous()
        derivatives = (theta[..., 2 * k:] + _IDENTITY_DERIVATIVE_OFFSET).contiguous()
        z2, logdet = rq_spline(x2.contiguous(), widths, heights, derivatives, tail_bound=self.tail_bound,
                               inverse=inverse, min_derivative=_MIN_DERIVATIVE)
        if self.mask == "channel":
            y = torch.cat([x1, z2] if self.parity == 0 else [z2, x1], dim=1)
        else:
            y = x.flatten(2).index_copy(2, index, z2).view_as(x)
        return y, logdet

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_bins={self.num_bins}, tail_bound={self.tail_bound}"
