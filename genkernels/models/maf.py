"""Masked autoregressive flow (MAF; Papamakarios, Pavlakou & Murray 2017) with MADE conditioners
(Germain et al. 2015), over vectors: the 2D toys, or any item flattened (digits: D = 64).

One MAF block is a Gaussian autoregressive transform of x (N, D) to noise u (N, D):

    u_i = (x_i - mu_i(x_<i)) * exp(-alpha_i(x_<i)),   log|det du/dx| = -sum_i alpha_i

where (mu, alpha) come from one pass of a MADE: an MLP whose weights are masked so that output i
sees inputs < i only (degrees: input d has degree d, hidden units degrees in 1..D-1, a hidden
unit of degree k sees inputs of degree <= k, output i sees hidden units of degree < i). Blocks
are chained with an order reversal (or a fixed random permutation) between them, optionally with
an ActNorm (Glow's data-initialised affine, a batch-norm-free stand-in for MAF's batch norm)
before each block, and end in a standard normal:

    log p(x) = log N(f(x); 0, I) + sum over layers of log|det|     (one pass per block)

Sampling inverts each block coordinate by coordinate, x_i = u_i exp(alpha_i) + mu_i: D MADE passes
per block (pass k fixes coordinate k, as every later output depends on earlier ones only).

alpha is soft-clamped to (-alpha_max, alpha_max) by alpha_max * tanh(raw / alpha_max), which keeps
early training from diverging; the MADE's output layer starts at zero, so every block starts as
the identity. Class conditioning: a one-hot context enters every MADE's first hidden layer through
an unmasked linear map (it is not part of x, so the masks need not see it).

Data, dequantisation, units, sampling temperature, evaluation and figures: see
genkernels.models.flow_base.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

from genkernels.models._validate import check_bool, check_choice, check_int, check_real
from genkernels.models.flow_base import FlowConfig, FlowModel, standard_normal_log_prob
from genkernels.nn.flow_layers import ActNorm, Permute
from genkernels.nn.flow_sequential import FlowSequential

PERMUTATIONS = ("reverse", "random")


@dataclasses.dataclass
class MAFConfig(FlowConfig):
    """MAF fields (after FlowConfig's data_shape, num_levels, dequantization, preprocess,
    logit_alpha, num_classes; items of data_shape are flattened to D = prod(data_shape)).

    num_blocks         MADE blocks (autoregressive transforms)
    hidden             width of each MADE hidden layer
    num_hidden_layers  masked hidden layers per MADE
    permutation        order change between blocks: "reverse" or "random" (fixed, seeded by the block)
    actnorm            an ActNorm (data-initialised per-dimension affine) before each block
    alpha_max          bound of the log-scales alpha (soft clamp)
    """

    num_blocks: int = 5
    hidden: int = 128
    num_hidden_layers: int = 2
    permutation: str = "reverse"
    actnorm: bool = False
    alpha_max: float = 5.0

    def __post_init__(self):
        super().__post_init__()
        for name in ("num_blocks", "hidden", "num_hidden_layers"):
            setattr(self, name, check_int(f"MAFConfig.{name}", getattr(self, name), 1))
        self.permutation = check_choice("MAFConfig.permutation", self.permutation, PERMUTATIONS)
        self.actnorm = check_bool("MAFConfig.actnorm", self.actnorm)
        self.alpha_max = check_real("MAFConfig.alpha_max", self.alpha_max, 0.0)
        if self.alpha_max == 0:
            raise ValueError("MAFConfig.alpha_max must be > 0, got 0")


# ---- MADE -----------------------------------------------------------------------------------
class MaskedLinear(nn.Linear):
    """y = x @ (weight * mask).T + bias, mask (out, in) a fixed 0/1 buffer."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def made_masks(dims: int, hidden: int, num_hidden_layers: int) -> list[torch.Tensor]:
    """The masks (out, in) of a MADE on dims inputs: num_hidden_layers hidden masks, then the
    output mask (dims, hidden) shared by mu and alpha. Hidden degrees cycle through 1..D-1, so
    every degree has units when hidden >= D - 1."""
    inputs = torch.arange(1, dims + 1)  # (D,)
    hidden_degrees = torch.arange(hidden) % max(1, dims - 1) + 1  # (H,)
    masks, previous = [], inputs
    for _ in range(num_hidden_layers):
        masks.append((hidden_degrees[:, None] >= previous[None, :]).float())  # (H, in)
        previous = hidden_degrees
    masks.append((inputs[:, None] > previous[None, :]).float())  # (D, H): output i sees degrees < i
    return masks


class MADE(nn.Module):
    """x (N, D) [+ context (N, K)] -> (mu, raw_alpha), each (N, D); output i depends on x_<i only."""

    def __init__(self, dims: int, hidden: int, num_hidden_layers: int, context_features: int = 0):
        super().__init__()
        self.dims = dims
        masks = made_masks(dims, hidden, num_hidden_layers)
        sizes = [dims] + [hidden] * num_hidden_layers
        self.hidden_layers = nn.ModuleList(MaskedLinear(sizes[i], hidden, masks[i]) for i in range(num_hidden_layers))
        self.context = nn.Linear(context_features, hidden, bias=False) if context_features else None
        self.output = MaskedLinear(hidden, 2 * dims, masks[-1].repeat(2, 1))  # rows: mu then alpha
        nn.init.zeros_(self.output.weight)  # every block starts as the identity
        nn.init.zeros_(self.output.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hidden_layers[0](x)  # (N, H)
        if self.context is not None and context is not None:
            h = h + self.context(context)
        h = F.relu(h)
        for layer in self.hidden_layers[1:]:
            h = F.relu(layer(h))
        mu, raw_alpha = self.output(h).chunk(2, dim=1)  # (N, D) each
        return mu, raw_alpha


class MAFBlock(nn.Module):
    """A Gaussian autoregressive transform: forward x -> u (one MADE pass), inverse u -> x (D passes).

    forward(x, context) -> (u, -sum alpha (N,)); inverse(u, context) -> (x, +sum alpha (N,)).
    """

    def __init__(self, dims: int, hidden: int, num_hidden_layers: int, context_features: int = 0,
                 alpha_max: float = 5.0):
        super().__init__()
        self.made = MADE(dims, hidden, num_hidden_layers, context_features)
        self.alpha_max = alpha_max

    def _params(self, x: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        mu, raw_alpha = self.made(x, context)
        return mu, self.alpha_max * torch.tanh(raw_alpha / self.alpha_max)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None):
        mu, alpha = self._params(x, context)
        return (x - mu) * torch.exp(-alpha), -alpha.sum(1)

    def inverse(self, u: torch.Tensor, context: torch.Tensor | None = None):
        x = torch.zeros_like(u)
        for _ in range(u.shape[1]):  # pass k makes coordinate k exact (it sees exact x_<k)
            mu, alpha = self._params(x, context)
            x = u * torch.exp(alpha) + mu
        return x, alpha.sum(1)


# ---- the model ------------------------------------------------------------------------------
class MAF(FlowModel):
    """Masked autoregressive flow over flattened items; see the module docstring."""

    name = "maf"
    config_class = MAFConfig
    default_data = "moons"
    # 2D toys: ~1 minute on 2 CPU cores (batch 256, 2000 steps); --data digits works with the same.
    train_defaults = {"steps": 2000, "batch_size": 256, "lr": 1e-3, "weight_decay": 0.0, "warmup_steps": 50,
                      "eval_every": 500, "ema_decay": 0.995, "num_samples": 1000}

    def __init__(self, config: MAFConfig | None = None):
        super().__init__(config if config is not None else MAFConfig())
        config = self.config
        dims = self.num_dims
        layers: list[nn.Module] = []
        for i in range(config.num_blocks):
            if i > 0:
                layers.append(Permute(dims, config.permutation, seed=i))
            if config.actnorm:
                layers.append(ActNorm(dims))
            layers.append(MAFBlock(dims, config.hidden, config.num_hidden_layers, config.num_classes,
                                   config.alpha_max))
        self.flow = FlowSequential(*layers)  # x (N, D) -> z (N, D)

    def log_prob_continuous(self, v: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """log p(v) in nats, (N,), v (N, *data_shape): one MADE pass per block."""
        z, logdet = self.flow(v.reshape(v.shape[0], -1), self.class_context(labels))  # (N, D), (N,)
        return standard_normal_log_prob(z) + logdet

    def sample_continuous(self, n: int, temperature: float = 1.0, labels: torch.Tensor | None = None,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, *data_shape) from z ~ N(0, temperature^2 I): D MADE passes per block."""
        z = temperature * torch.randn(n, self.num_dims, generator=generator, device=self.device, dtype=self.dtype)
        x, _ = self.flow.inverse(z, self.class_context(labels))
        return x.reshape(n, *self.data_shape)

    def transform(self, x: torch.Tensor, labels=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The flow on items in the input space: (z (N, D), log|det dz/dx| (N,))."""
        x = self._check_items(x)
        return self.flow(x.reshape(x.shape[0], -1).to(self.device, self.dtype),
                         self.class_context(self._labels(labels, x.shape[0])))

    def inverse_transform(self, z: torch.Tensor, labels=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The inverse flow: z (N, D) -> (items (N, *data_shape), log|det dx/dz| (N,))."""
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.num_dims:
            raise ValueError(f"z must be a tensor of shape (N, {self.num_dims}), got "
                             f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
        context = self.class_context(self._labels(labels, z.shape[0]))
        x, logdet = self.flow.inverse(z.to(self.device, self.dtype), context)
        return x.reshape(z.shape[0], *self.data_shape), logdet


__all__ = ["MAF", "MAFConfig", "MADE", "MAFBlock", "MaskedLinear", "made_masks", "PERMUTATIONS"]
