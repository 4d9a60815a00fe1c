"""Stochastic latent layers: a linear head giving a diagonal Gaussian posterior, sampled with the
fused reparameterisation + KL op (genkernels.ops.reparam_kl)."""
from __future__ import annotations

import torch
from torch import nn

from genkernels.ops.reparam_kl import reparam_kl


class GaussianLatent(nn.Module):
    """q(z | h) = N(mu(h), diag exp(logvar(h))) from a linear map of features h.

    forward(h) -> (z, kl, mu, logvar):
        h       (N, in_features)
        z       (N, latent_dim) one reparameterised sample, h's dtype
        kl      (N,) float32 KL(q(z | h) || N(0, I)) in nats
        mu, logvar (N, latent_dim)
    """

    def __init__(self, in_features: int, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.proj = nn.Linear(in_features, 2 * latent_dim)

    def posterior(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.proj(h).chunk(2, dim=-1)  # (N, latent_dim) each
        return mu.contiguous(), logvar.contiguous()

    def forward(self, h: torch.Tensor, seed: int | None = None):
        mu, logvar = self.posterior(h)
        z, kl = reparam_kl(mu, logvar, seed)
        return z, kl, mu, logvar

    def extra_repr(self) -> str:
        return f"in_features={self.proj.in_features}, latent_dim={self.latent_dim}"
