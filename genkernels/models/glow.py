"""Glow (Kingma & Dhariwal 2018): a multi-scale flow of ActNorm, invertible 1x1 convolution and
coupling steps, with learned priors for the factored-out latents.

    log p(x) = sum_i log N(z_i; mu_i, sigma_i^2) + log|det dz/dx|,   z = (z_1, ..., z_L) = f(x)

Architecture, for images (C, H, W): `num_scales` scales; each squeezes (C, H, W) -> (4C, H/2, W/2)
and runs `steps_per_scale` steps

    ActNorm -> InvertibleConv1x1 (LU-decomposed) -> coupling (affine, sigmoid-bounded scale; or additive)

then, except at the last scale, splits the channels: the second half z_i is factored out and the
first half h continues. The prior of z_i is a Gaussian whose mean and log-std come from h (a
zero-initialised 3x3 conv: "learned conditional prior"); the last scale's z has a learned mean and
log-std per position. With `num_classes > 0` the one-hot label is added to every prior (the
class-conditional prior of the paper) and fed to the couplings as context.

Temperature sampling (section 5 of the paper): every prior's std is multiplied by T, z_i = mu_i +
T sigma_i eps; T < 1 trades diversity for sample quality. Each scale is a FlowSequential, which
with `recompute=True` rebuilds its layers' inputs by inversion in the backward pass.

Dequantisation, the data scale, the loss, sampling, evaluation and figures are FlowModel's
(genkernels.models.flow_base); this file defines the bijection and the priors.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from genkernels.models._validate import check_bool, check_choice, check_int
from genkernels.models.flow_base import FlowConfig, FlowModel
from genkernels.nn.coupling import AdditiveCoupling, AffineCoupling
from genkernels.nn.flow_layers import ActNorm, InvertibleConv1x1, Squeeze
from genkernels.nn.flow_sequential import FlowSequential

COUPLINGS = ("affine", "additive")
LOG_2PI = math.log(2 * math.pi)


@dataclasses.dataclass
class GlowConfig(FlowConfig):
    """FlowConfig's fields (data_shape, num_levels, dequantization, preprocess, logit_alpha,
    num_classes; see genkernels.models.flow_base) and:

    num_scales        scales L (squeeze, K steps, split); H and W must be divisible by 2^L
    steps_per_scale   K: flow steps per scale
    hidden_channels   width of the coupling conditioners (conv 3x3 -> 1x1 -> zero-init 3x3)
    coupling          "affine" (y = x * sigmoid(raw + 2) + t, as in the paper's code) or "additive"
    lu                LU-decomposed 1x1 convolutions (O(C) log-determinant) or full matrices
    recompute         train with FlowSequential's recompute-by-inverse (less activation memory)
    """

    data_shape: tuple[int, ...] = (1, 8, 8)
    num_levels: int = 17
    num_scales: int = 2
    steps_per_scale: int = 8
    hidden_channels: int = 48
    coupling: str = "affine"
    lu: bool = True
    recompute: bool = False

    def __post_init__(self):
        super().__post_init__()
        if len(self.data_shape) != 3:
            raise ValueError(f"GlowConfig.data_shape must be an image shape (C, H, W), got {self.data_shape}")
        for name in ("num_scales", "steps_per_scale", "hidden_channels"):
            setattr(self, name, check_int(f"GlowConfig.{name}", getattr(self, name), 1))
        self.coupling = check_choice("GlowConfig.coupling", self.coupling, COUPLINGS)
        self.lu = check_bool("GlowConfig.lu", self.lu)
        self.recompute = check_bool("GlowConfig.recompute", self.recompute)
        _, height, width = self.data_shape
        factor = 2 ** self.num_scales
        if height % factor or width % factor:
            raise ValueError(f"GlowConfig: image height and width {self.data_shape[1:]} must be divisible by "
                             f"2^num_scales = {factor} (num_scales={self.num_scales})")


def gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, exp(log_std)^2) summed over all but the first dimension: (N, ...) -> (N,)."""
    log_density = -0.5 * ((z - mean) * torch.exp(-log_std)).pow(2) - log_std - 0.5 * LOG_2PI
    return log_density.reshape(z.shape[0], -1).sum(1)


class SplitPrior(nn.Module):
    """p(z | h, label) = N(mean, exp(log_std)^2) with (mean, log_std) = conv3x3([h, one-hot label]).

    The conv starts at zero, so the prior starts as N(0, I)."""

    def __init__(self, kept_channels: int, out_channels: int, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(kept_channels + num_classes, 2 * out_channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, h: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if context is not None:  # (N, classes) -> (N, classes, H, W)
            h = torch.cat([h, context[:, :, None, None].expand(-1, -1, *h.shape[2:])], 1)
        mean, log_std = self.conv(h).chunk(2, 1)  # (N, out, H, W) each
        return mean, log_std


class TopPrior(nn.Module):
    """p(z | label) = N(mean, exp(log_std)^2): a learned mean and log-std per position (zero at
    the start), plus a per-channel shift of both for each class (a zero-initialised linear map of
    the one-hot label)."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        self.params = nn.Parameter(torch.zeros(2 * shape[0], *shape[1:]))  # (2C, H, W)
        self.class_shift = nn.Linear(num_classes, 2 * shape[0], bias=False) if num_classes else None
        if self.class_shift is not None:
            nn.init.zeros_(self.class_shift.weight)

    def forward(self, n: int, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.params.expand(n, *self.params.shape)  # (N, 2C, H, W)
        if self.class_shift is not None and context is not None:
            params = params + self.class_shift(context)[:, :, None, None]
        mean, log_std = params.chunk(2, 1)
        return mean, log_std


class Glow(FlowModel):
    """Glow over images; see the module docstring."""

    name = "glow"
    config_class = GlowConfig
    default_data = "digits-levels"
    data_kinds = ("image", "image-levels")
    # CPU-sized: 400 steps took 3.5 minutes on the loaded 2-core VM; the 1,000 training digits start to be
    # overfit soon after (keep_best keeps the best validation checkpoint)
    train_defaults = {"steps": 400, "batch_size": 64, "lr": 3e-3, "warmup_steps": 40, "eval_every": 100}

    def __init__(self, config: GlowConfig | None = None):
        super().__init__(config if config is not None else GlowConfig())
        config = self.config
        self.scales = nn.ModuleList()
        self.split_priors = nn.ModuleList()
        # shape of each latent piece, in the order `transform` concatenates them: the factored-out
        # halves of scales 0 .. L-2, then the last scale's output
        self.latent_shapes: list[tuple[int, int, int]] = []
        c, h, w = config.data_shape
        for i in range(config.num_scales):
            c, h, w = 4 * c, h // 2, w // 2
            layers: list[nn.Module] = [Squeeze(2)]
            for k in range(config.steps_per_scale):
                layers += [ActNorm(c), InvertibleConv1x1(c, lu=config.lu), self._coupling(c, parity=k % 2)]
            self.scales.append(FlowSequential(*layers, recompute=config.recompute))
            if i < config.num_scales - 1:
                self.split_priors.append(SplitPrior(c // 2, c - c // 2, config.num_classes))
                self.latent_shapes.append((c - c // 2, h, w))
                c = c // 2
        self.latent_shapes.append((c, h, w))
        self.top_prior = TopPrior((c, h, w), config.num_classes)

    def _coupling(self, channels: int, parity: int) -> nn.Module:
        # Glow keeps one half and lets the 1x1 convs mix channels; alternating the kept half costs
        # nothing and makes each half conditioned on the other even while the convs are near a
        # permutation.
        config = self.config
        context = config.num_classes or None  # one-hot labels
        if config.coupling == "additive":
            return AdditiveCoupling(channels, config.hidden_channels, mask="channel", parity=parity,
                                    context_channels=context)
        return AffineCoupling(channels, config.hidden_channels, mask="channel", parity=parity, form="sigmoid",
                              context_channels=context)

    def _context(self, labels: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        """One-hot labels (N, num_classes) for a class-conditional model, else None."""
        if not self.config.num_classes:
            return None
        if labels is None:
            raise ValueError("this Glow is class-conditional (num_classes > 0): pass labels")
        return self.class_context(labels).to(dtype)

    # -- the bijection ----------------------------------------------------------------------------
    def _encode(self, x: torch.Tensor, context: torch.Tensor | None):
        """x (N, C, H, W) -> (latents [z_0, ..., z_{L-1}], kept halves [h_0, ..., h_{L-2}] the
        split priors condition on, log|det dz/dx| (N,))."""
        latents, kept, logdet = [], [], x.new_zeros(x.shape[0])
        h = x
        for i, scale in enumerate(self.scales):
            h, scale_logdet = scale(h, context)  # (N, 4C, H/2, W/2) at scale i
            logdet = logdet + scale_logdet
            if i < len(self.scales) - 1:
                half = h.shape[1] // 2
                h, z = h[:, :half].contiguous(), h[:, half:].contiguous()
                latents.append(z)
                kept.append(h)
        latents.append(h)
        return latents, kept, logdet

    def _decode(self, latent_at, context: torch.Tensor | None, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Invert the flow from the top: latent_at(i, prior) gives scale i's latent, where prior is
        a callable returning its (mean, log_std). Returns (x, log|det dx/dz| (N,))."""
        last = len(self.scales) - 1
        h = latent_at(last, lambda: self.top_prior(n, context))
        logdet = None
        for i in reversed(range(len(self.scales))):
            if i < last:
                kept = h
                z = latent_at(i, lambda: self.split_priors[i](kept, context))
                h = torch.cat([kept, z], 1)
            h, scale_logdet = self.scales[i].inverse(h, context)
            logdet = scale_logdet if logdet is None else logdet + scale_logdet
        return h, logdet

    def transform(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z = f(x): x (N, C, H, W) -> (z (N, C*H*W) the latents flattened and concatenated,
        log|det dz/dx| (N,))."""
        latents, _, logdet = self._encode(x, self._context(labels, x.dtype))
        return torch.cat([z.reshape(x.shape[0], -1) for z in latents], 1), logdet

    def inverse_transform(self, z: torch.Tensor,
                          labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x = f^-1(z): z (N, C*H*W) as returned by `transform` -> (x, log|det dx/dz| (N,))."""
        n = z.shape[0]
        pieces = z.split([math.prod(s) for s in self.latent_shapes], dim=1)
        return self._decode(lambda i, prior: pieces[i].reshape(n, *self.latent_shapes[i]),
                            self._context(labels, z.dtype), n)

    # -- FlowModel contract -----------------------------------------------------------------------
    def log_prob_continuous(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) in nats per item, (N,), of continuous images x (N, C, H, W)."""
        n = x.shape[0]
        context = self._context(labels, x.dtype)
        latents, kept, logdet = self._encode(x, context)
        log_prob = logdet + gaussian_log_prob(latents[-1], *self.top_prior(n, context))
        for z, h, prior in zip(latents, kept, self.split_priors):
            log_prob = log_prob + gaussian_log_prob(z, *prior(h, context))
        return log_prob

    def sample_continuous(self, n: int, temperature: float = 1.0, labels: torch.Tensor | None = None,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """n images (n, C, H, W) in the model's dtype: every latent z_i = mu_i + T sigma_i eps
        (T = temperature), decoded from the top scale down."""

        def draw(i: int, prior) -> torch.Tensor:
            mean, log_std = prior()
            eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            return mean + temperature * torch.exp(log_std) * eps

        x, _ = self._decode(draw, self._context(labels, self.dtype), n)
        return x


__all__ = ["Glow", "GlowConfig", "SplitPrior", "TopPrior", "gaussian_log_prob"]
