"""Likelihood metrics and their unit conventions.

Conventions used throughout genkernels:
- NLLs are in nats (natural log) and summed over an item's dimensions, one value per item.
- Bits per dimension = mean over items of (NLL in nats) / (num_dims * ln 2).
- Continuous models on discrete data are evaluated on uniformly dequantised data
  y = (x + u) / L, u ~ U[0, 1)^D, for x in levels 0..L-1 (`dequantize`). A density p(y) on
  [0, 1]^D then bounds the discrete likelihood: -log P(x) <= E_u[-log p(y)] + D log L
  (Theis et al., 2016, "A note on the evaluation of generative models"), so its bits per
  dimension are directly comparable with those of a categorical model over the same L levels.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def nats_to_bits(nats):
    """Convert nats to bits: nats / ln 2. Floats stay floats; tensors stay tensors."""
    return nats / math.log(2.0)


def bits_per_dim(nll_nats, num_dims: int) -> float:
    """Bits per dimension from per-item NLLs in nats summed over `num_dims` dimensions.

    nll_nats is a float or a tensor of per-item NLLs (any shape; averaged over all elements).
    Returns mean(nll_nats) / (num_dims * ln 2) as a float.
    """
    if isinstance(num_dims, bool) or not isinstance(num_dims, int) or num_dims <= 0:
        raise ValueError(f"num_dims must be a positive int, got {num_dims!r}")
    mean = nll_nats.double().mean().item() if torch.is_tensor(nll_nats) else float(nll_nats)
    return nats_to_bits(mean) / num_dims


def categorical_nll(logits: torch.Tensor, targets: torch.Tensor, level_dim: int = 1) -> torch.Tensor:
    """Exact NLL of a categorical (per-dimension softmax) model over explicit levels, in nats.

    logits   (N, L, *dims) unnormalised log-probabilities over L levels (level_dim=1, the
             torch cross_entropy layout), or with the levels on another axis given by level_dim
    targets  (N, *dims) int64 level indices 0..L-1
    Returns (N,) float: -sum over dims of log softmax(logits)[target], per item.
    """
    if level_dim != 1:
        logits = logits.movedim(level_dim, 1)
    if targets.dtype not in (torch.int64, torch.int32, torch.uint8):
        raise TypeError(f"targets must be an integer tensor of level indices, got {targets.dtype}")
    if logits.dim() != targets.dim() + 1 or logits.shape[:1] + logits.shape[2:] != targets.shape:
        raise ValueError(f"logits (N, L, *dims) and targets (N, *dims) disagree: "
                         f"logits {tuple(logits.shape)}, "
                         f"targets {tuple(targets.shape)}")
    nll = F.cross_entropy(logits.float(), targets.long(), reduction="none")  # (N, *dims)
    return nll.reshape(nll.shape[0], -1).sum(dim=1)


def categorical_bits_per_dim(logits: torch.Tensor, targets: torch.Tensor, level_dim: int = 1) -> float:
    """Bits per dimension of a categorical model: `categorical_nll` averaged over items, / (D ln 2).

    A uniform model over L levels (all logits equal) scores exactly log2 L.
    """
    nll = categorical_nll(logits, targets, level_dim)
    return bits_per_dim(nll, targets[0].numel())


def dequantize(levels: torch.Tensor, num_levels: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantisation: y = (x + u) / num_levels with u ~ U[0, 1), a float32 in [0, 1).

    levels (any shape) holds integer levels 0..num_levels-1 (e.g. digits form="levels").
    """
    noise = torch.rand(levels.shape, generator=generator, device=levels.device)
    return (levels.to(torch.float32) + noise) / num_levels


def dequantized_nll(log_density: torch.Tensor, num_levels: int, num_dims: int,
                    data_range: float = 1.0) -> torch.Tensor:
    """Discrete NLL bound, in nats per item, of a continuous model on dequantised data.

    log_density  (N,) log p(y) in nats, summed over the item's num_dims dimensions, for
                 y = `dequantize`(x) mapped affinely onto an interval of width data_range
                 (1.0 for [0, 1), 2.0 for [-1, 1))
    Returns (N,): -log p(y) + num_dims * log(num_levels / data_range), the NLL of the density
    rescaled to bins of width 1 (the change-of-variables Jacobian), an upper bound on -log P(x).
    Pass it to `bits_per_dim(., num_dims)`; a uniform density on [0, 1)^D gives log2 num_levels.
    """
    if num_levels < 2:
        raise ValueError(f"num_levels must be >= 2, got {num_levels!r}")
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range!r}")
    return -log_density + num_dims * math.log(num_levels / data_range)


def iwae_bound(log_weights: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Importance-weighted lower bound on log p(x) (Burda et al., 2016), per item, in nats.

    log_weights  (N, K): log p(x, z_k) - log q(z_k | x) for K samples z_k ~ q(z | x) per item
                 (the K axis is `dim`)
    Returns (N,): log (1/K) sum_k exp(log_weights) = logsumexp - log K. With K = 1 this is the
    ELBO; it tightens towards log p(x) as K grows. Negate it for an NLL upper bound.
    """
    num_samples = log_weights.shape[dim]
    return torch.logsumexp(log_weights, dim=dim) - math.log(num_samples)
