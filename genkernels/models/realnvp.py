"""RealNVP (Dinh, Sohl-Dickstein & Bengio 2017): a normalizing flow of affine coupling layers.

    log p(x) = log N(z; 0, I) + log|det dz/dx|,   z = f(x),   x = f^-1(z)

Images (C, H, W): the multi-scale architecture of the paper. Each scale but the last runs
`checkerboard_couplings` couplings with alternating checkerboard masks, squeezes (C, H, W) ->
(4C, H/2, W/2), runs `channel_couplings` couplings with alternating channel masks and factors out
half of the channels as latents (they skip the later scales); the last scale runs
`final_couplings` checkerboard couplings. Every coupling is followed by an ActNorm (Kingma &
Dhariwal 2018) in place of the paper's batch normalisation, so the density does not depend on the
batch. Vectors (D,) (the 2D toys, or images with `flatten=True`): `num_couplings` couplings with
MLP conditioners and alternating halves, each followed by an ActNorm (and, for D > 2, a fixed
random permutation). `coupling="spline"` uses
rational-quadratic spline couplings (Durkan et al. 2019) instead of affine ones.

The layers come from genkernels.nn (AffineCoupling, SplineCoupling, ActNorm, Squeeze); each scale
is a FlowSequential, which with `recompute=True` rebuilds every layer's input from its output in
the backward pass (activation memory flat in depth). Class conditioning (`num_classes > 0`)
feeds the one-hot label to every coupling's conditioner as context.

Dequantisation, the data scale, the loss, sampling, evaluation and figures are FlowModel's
(genkernels.models.flow_base); this file defines the bijection and the prior.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from genkernels.models._validate import check_bool, check_choice, check_int, check_real
from genkernels.models.flow_base import FlowConfig, FlowModel, standard_normal_log_prob
from genkernels.nn.coupling import AffineCoupling, SplineCoupling
from genkernels.nn.flow_layers import ActNorm, Permute, Squeeze
from genkernels.nn.flow_sequential import FlowSequential

COUPLINGS = ("affine", "spline")


@dataclasses.dataclass
class RealNVPConfig(FlowConfig):
    """FlowConfig's fields (data_shape, num_levels, dequantization, preprocess, logit_alpha,
    num_classes; see genkernels.models.flow_base) and:

    flatten               images as vectors of C*H*W entries with MLP couplings (no multi-scale)
    num_scales            images: scales of the multi-scale architecture; H and W must be divisible
                          by 2^num_scales (the last scale's checkerboard needs even sides)
    checkerboard_couplings, channel_couplings
                          images: couplings per scale before / after its squeeze
    final_couplings       images: checkerboard couplings of the last scale
    num_couplings         vectors: couplings (alternating halves)
    hidden_channels       width of each conditioner (conv channels for images, MLP units for vectors)
    coupling              "affine" (log-scale bounded by `scale` * tanh) or "spline" (`num_bins`
                          rational-quadratic bins on [-tail_bound, tail_bound], identity outside)
    recompute             train with FlowSequential's recompute-by-inverse (less activation memory)
    """

    data_shape: tuple[int, ...] = (1, 8, 8)
    num_levels: int = 17
    flatten: bool = False
    num_scales: int = 2
    checkerboard_couplings: int = 3
    channel_couplings: int = 3
    final_couplings: int = 4
    num_couplings: int = 8
    hidden_channels: int = 32
    coupling: str = "affine"
    scale: float = 2.0
    num_bins: int = 8
    tail_bound: float = 3.0
    recompute: bool = False

    def __post_init__(self):
        super().__post_init__()
        if len(self.data_shape) not in (1, 3):
            raise ValueError(f"RealNVPConfig.data_shape must be (C, H, W) or (D,), got {self.data_shape}")
        for name in ("num_scales", "final_couplings", "num_couplings", "hidden_channels"):
            setattr(self, name, check_int(f"RealNVPConfig.{name}", getattr(self, name), 1))
        for name in ("checkerboard_couplings", "channel_couplings"):
            setattr(self, name, check_int(f"RealNVPConfig.{name}", getattr(self, name), 0))
        self.num_bins = check_int("RealNVPConfig.num_bins", self.num_bins, 2)
        self.flatten = check_bool("RealNVPConfig.flatten", self.flatten)
        self.recompute = check_bool("RealNVPConfig.recompute", self.recompute)
        self.coupling = check_choice("RealNVPConfig.coupling", self.coupling, COUPLINGS)
        for name in ("scale", "tail_bound"):
            value = check_real(f"RealNVPConfig.{name}", getattr(self, name), 0.0)
            if value == 0:
                raise ValueError(f"RealNVPConfig.{name} must be > 0, got {value}")
            setattr(self, name, value)
        if self.is_vector:
            if self.num_dims % 2:
                raise ValueError(f"RealNVPConfig.data_shape: vector couplings split the {self.num_dims} entries "
                                 f"in halves, so their number must be even, got {self.data_shape}")
        else:
            _, height, width = self.data_shape
            factor = 2 ** self.num_scales
            if height % factor or width % factor:
                raise ValueError(f"RealNVPConfig: image height and width {self.data_shape[1:]} must be divisible "
                                 f"by 2^num_scales = {factor} (num_scales={self.num_scales}); lower num_scales "
                                 f"or set flatten=True")

    @property
    def is_vector(self) -> bool:
        """True when the flow runs on (N, D) vectors (vector data, or images with flatten=True)."""
        return len(self.data_shape) == 1 or self.flatten


class RealNVP(FlowModel):
    """RealNVP over images (multi-scale) or vectors (MLP couplings); see the module docstring."""

    name = "realnvp"
    config_class = RealNVPConfig
    default_data = "digits-levels"
    data_kinds = ("image", "image-levels", "points")
    # CPU-sized: 500 steps took 2.5 minutes on the loaded 2-core VM; the 1,000 training digits start to be
    # overfit soon after (keep_best keeps the best validation checkpoint)
    train_defaults = {"steps": 500, "batch_size": 64, "lr": 3e-3, "warmup_steps": 50, "eval_every": 100}

    def __init__(self, config: RealNVPConfig | None = None):
        super().__init__(config if config is not None else RealNVPConfig())
        config = self.config
        self.scales = nn.ModuleList()
        # shape of each latent piece, in the order `transform` concatenates them
        self.latent_shapes: list[tuple[int, ...]] = []
        if config.is_vector:
            self._build_vector_flow()
        else:
            self._build_multiscale_flow()

    # -- architecture -----------------------------------------------------------------------------
    def _coupling(self, channels: int, mask: str, parity: int, conditioner: str) -> nn.Module:
        config = self.config
        context = config.num_classes or None  # one-hot labels
        if config.coupling == "spline":
            return SplineCoupling(channels, config.hidden_channels, num_bins=config.num_bins,
                                  tail_bound=config.tail_bound, mask=mask, parity=parity,
                                  context_channels=context, conditioner=conditioner)
        return AffineCoupling(channels, config.hidden_channels, mask=mask, parity=parity, scale=config.scale,
                              form="tanh", context_channels=context, conditioner=conditioner)

    def _steps(self, channels: int, count: int, mask: str, conditioner: str = "conv") -> list[nn.Module]:
        """`count` couplings with alternating parity, each followed by an ActNorm."""
        layers = []
        for k in range(count):
            layers += [self._coupling(channels, mask, k % 2, conditioner), ActNorm(channels)]
        return layers

    def _build_vector_flow(self) -> None:
        config = self.config
        dims = config.num_dims
        layers = self._steps(dims, config.num_couplings, "channel", "mlp")
        if dims > 2:
            # fixed halves would pair the same entries in every coupling (the top and bottom rows of
            # a flattened digit); a fixed random permutation after each step mixes them
            for k in reversed(range(1, config.num_couplings)):
                layers.insert(2 * k, Permute(dims, mode="random", seed=k))
        self.scales.append(FlowSequential(*layers, recompute=config.recompute))
        self.latent_shapes.append((dims,))

    def _build_multiscale_flow(self) -> None:
        config = self.config
        c, h, w = config.data_shape
        for _ in range(config.num_scales - 1):
            layers = self._steps(c, config.checkerboard_couplings, "checkerboard")
            layers.append(Squeeze(2))
            c, h, w = 4 * c, h // 2, w // 2
            layers += self._steps(c, config.channel_couplings, "channel")
            self.scales.append(FlowSequential(*layers, recompute=config.recompute))
            self.latent_shapes.append((c // 2, h, w))  # factored out: the first half of the channels
            c = c // 2
        self.scales.append(FlowSequential(*self._steps(c, config.final_couplings, "checkerboard"),
                                          recompute=config.recompute))
        self.latent_shapes.append((c, h, w))

    def _context(self, labels: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        """One-hot labels (N, num_classes) for a class-conditional model, else None."""
        if not self.config.num_classes:
            return None
        if labels is None:
            raise ValueError("this RealNVP is class-conditional (num_classes > 0): pass labels")
        return self.class_context(labels).to(dtype)

    # -- the bijection ----------------------------------------------------------------------------
    def transform(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z = f(x): x (N, *data_shape) -> (z (N, D) the latent pieces flattened and concatenated,
        log|det dz/dx| (N,)). D = prod(data_shape)."""
        n = x.shape[0]
        context = self._context(labels, x.dtype)
        h = x.reshape(n, -1) if self.config.is_vector else x
        pieces, logdet = [], x.new_zeros(n)
        for i, scale in enumerate(self.scales):
            h, scale_logdet = scale(h, context)
            logdet = logdet + scale_logdet
            if i < len(self.scales) - 1:
                out = self.latent_shapes[i][0]
                pieces.append(h[:, :out].reshape(n, -1))  # factor out half of the channels
                h = h[:, out:].contiguous()
        pieces.append(h.reshape(n, -1))
        return torch.cat(pieces, 1), logdet

    def inverse_transform(self, z: torch.Tensor,
                          labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x = f^-1(z): z (N, D) as returned by `transform` -> (x (N, *data_shape), log|det dx/dz| (N,))."""
        n = z.shape[0]
        context = self._context(labels, z.dtype)
        pieces = z.split([math.prod(s) for s in self.latent_shapes], dim=1)
        h = pieces[-1].reshape(n, *self.latent_shapes[-1])
        logdet = z.new_zeros(n)
        for i in reversed(range(len(self.scales))):
            if i < len(self.scales) - 1:
                h = torch.cat([pieces[i].reshape(n, *self.latent_shapes[i]), h], 1)
            h, scale_logdet = self.scales[i].inverse(h, context)
            logdet = logdet + scale_logdet
        return h.reshape(n, *self.config.data_shape), logdet

    # -- FlowModel contract -----------------------------------------------------------------------
    def log_prob_continuous(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) in nats per item, (N,), of continuous x (N, *data_shape)."""
        z, logdet = self.transform(x, labels)
        return standard_normal_log_prob(z) + logdet

    def sample_continuous(self, n: int, temperature: float = 1.0, labels: torch.Tensor | None = None,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws x = f^-1(T z), z ~ N(0, I): (n, *data_shape) in the model's dtype (T = temperature)."""
        z = torch.randn(n, self.config.num_dims, generator=generator, device=self.device, dtype=self.dtype)
        x, _ = self.inverse_transform(temperature * z, labels)
        return x


__all__ = ["RealNVP", "RealNVPConfig"]
