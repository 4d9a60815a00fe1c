"""Variational autoencoder (Kingma & Welling 2014) with a beta-weighted KL (Higgins et al. 2017).

    log p(x) >= ELBO(x) = E_q(z|x)[log p(x | z)] - KL(q(z | x) || N(0, I))

The encoder (MLP or convolutional) gives q(z | x) = N(mu, diag exp(logvar)); z and the KL come
from the fused op genkernels.ops.reparam_kl. The decoder gives p(x | z) over the data's discrete
levels 0..L-1 (L = 17 for the digits) through an output head of genkernels.nn.likelihoods, so ELBO
and IWAE (Burda et al. 2016) bound the likelihood of the actual data and their bits/dim compare
with any other model's on the same levels:

  bernoulli    Binomial(L - 1, p) per pixel: a digit level counts the "on" pixels of a 4x4 block
               of the original 32x32 bitmap, each on with probability p (the Bernoulli likelihood of
               the sub-pixels, normalised over the levels). With L = 2 it is plain Bernoulli.
  categorical  a softmax over the L levels per pixel.
  logistic     discretised logistic per pixel (Salimans et al. 2017, PixelCNN++, one component):
               levels mapped onto [-1, 1], bins of width 2 / (L - 1), open-ended edge bins.

Units: `loss` returns {"loss": negative beta-ELBO in nats per dimension (batch mean), "recon":
-log p(x | z) in nats per item, "kl": KL in nats per item}; per dimension keeps the learning rate
independent of the image size. `elbo`, `iwae`, `anomaly_score` and `log_prob` are per item, nats.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from genkernels.models._validate import (check_choice, check_int,
                                          check_int_tuple, check_real, evaluation_count)
from genkernels.models.base import ImageGenerativeModel
from genkernels.nn.latent import GaussianLatent
from genkernels.nn.likelihoods import LIKELIHOODS, DiscreteLikelihood, get_likelihood

ARCHITECTURES = ("mlp", "conv")


@dataclasses.dataclass
class VAEConfig:
    """image_shape    (C, H, W) of the data; conv needs H, W divisible by 2^(len(channels) - 1)
    num_levels     discrete levels per pixel L (17 for the digits)
    latent_dim     size of z
    architecture   "mlp" or "conv" encoder/decoder
    hidden         MLP width (two hidden layers each way)
    channels       conv widths: a 3x3 stem at full resolution, then one stride-2 stage per entry
    likelihood     "bernoulli", "categorical", "logistic" or "logistic_mixture" (5 components; see
                   the module docstring and genkernels.nn.likelihoods)
    beta           weight of the KL in the training loss (1: the ELBO; evaluation always uses 1)
    iwae_samples   importance samples K of the IWAE bound in `evaluate`
    """

    image_shape: tuple[int, int, int] = (1, 8, 8)
    num_levels: int = 17
    latent_dim: int = 16
    architecture: str = "mlp"
    hidden: int = 256
    channels: tuple[int, ...] = (32, 64, 128)
    likelihood: str = "logistic"
    beta: float = 1.0
    iwae_samples: int = 64

    def __post_init__(self):
        self.image_shape = check_int_tuple("VAEConfig.image_shape", self.image_shape, length=3)
        self.channels = check_int_tuple("VAEConfig.channels", self.channels)
        self.likelihood = check_choice("VAEConfig.likelihood", self.likelihood, tuple(LIKELIHOODS))
        self.architecture = check_choice("VAEConfig.architecture", self.architecture, ARCHITECTURES)
        self.num_levels = check_int("VAEConfig.num_levels", self.num_levels, 2)
        for name in ("latent_dim", "hidden", "iwae_samples"):
            setattr(self, name, check_int(f"VAEConfig.{name}", getattr(self, name), 1))
        self.beta = check_real("VAEConfig.beta", self.beta, 0.0)
        if self.architecture == "conv":
            factor = 2 ** (len(self.channels) - 1)
            if self.image_shape[1] % factor or self.image_shape[2] % factor:
                raise ValueError(f"conv: image height and width {self.image_shape[1:]} must be divisible by "
                                 f"2^(len(channels) - 1) = {factor} (channels={self.channels})")

    @property
    def params_per_pixel(self) -> int:
        return get_likelihood(self.likelihood, self.num_levels).params_per_channel


# ---- encoder / decoder networks -----------------------------------------------------------------
def _mlp_encoder(config: VAEConfig) -> tuple[nn.Module, int]:
    dims = math.prod(config.image_shape)
    net = nn.Sequential(nn.Flatten(), nn.Linear(dims, config.hidden), nn.ReLU(),
                        nn.Linear(config.hidden, config.hidden), nn.ReLU())
    return net, config.hidden


def _mlp_decoder(config: VAEConfig) -> nn.Module:
    out = config.params_per_pixel * math.prod(config.image_shape)
    return nn.Sequential(nn.Linear(config.latent_dim, config.hidden), nn.ReLU(),
                         nn.Linear(config.hidden, config.hidden), nn.ReLU(), nn.Linear(config.hidden, out))


def _conv_encoder(config: VAEConfig) -> tuple[nn.Module, int]:
    c, h, w = config.image_shape
    widths = config.channels
    layers = [nn.Conv2d(c, widths[0], 3, padding=1), nn.ReLU()]
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]  # halves H, W
    factor = 2 ** (len(widths) - 1)
    return nn.Sequential(*layers, nn.Flatten()), widths[-1] * (h // factor) * (w // factor)


class _ConvDecoder(nn.Module):
    """z -> linear -> (channels[-1], H / f, W / f) -> stride-2 transposed convs -> 3x3 conv."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        c, h, w = config.image_shape
        widths = config.channels
        factor = 2 ** (len(widths) - 1)
        self.start = (widths[-1], h // factor, w // factor)
        self.proj = nn.Linear(config.latent_dim, math.prod(self.start))
        layers = []
        for c_in, c_out in zip(widths[::-1][:-1], widths[::-1][1:]):
            layers += [nn.ReLU(), nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)]  # doubles H, W
        layers += [nn.ReLU(), nn.Conv2d(widths[0], config.params_per_pixel * c, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.proj(z).view(z.shape[0], *self.start))  # (N, P * C, H, W)


class VAE(ImageGenerativeModel):
    """VAE over discrete-level images; see the module docstring for the likelihoods and units."""

    name = "vae"
    config_class = VAEConfig
    default_data = "digits"
    metric_units = {"loss": "nats/dim, -beta-ELBO", "recon": "nats/item", "kl": "nats/item",
                    "elbo_bpd": "bits/dim", "iwae_bpd": "bits/dim"}

    def __init__(self, config: VAEConfig | None = None):
        super().__init__(config if config is not None else VAEConfig())
        config = self.config
        if config.architecture == "mlp":
            self.encoder, features = _mlp_encoder(config)
            self.decoder = _mlp_decoder(config)
        else:
            self.encoder, features = _conv_encoder(config)
            self.decoder = _ConvDecoder(config)
        self.latent = GaussianLatent(features, config.latent_dim)
        self.likelihood: DiscreteLikelihood = get_likelihood(config.likelihood, config.num_levels)
        self._figure_images: torch.Tensor | None = None  # held-out images kept by evaluate()

    @property
    def num_dims(self) -> int:
        return math.prod(self.config.image_shape)

    @staticmethod
    def _images_of(batch) -> torch.Tensor:
        return batch[0] if isinstance(batch, (tuple, list)) else batch

    # -- encoder / decoder ------------------------------------------------------------------------
    def _encode_features(self, levels: torch.Tensor) -> torch.Tensor:
        return self.encoder(self._to_images(levels) - 0.5)  # centred input, (N, features)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder parameters (N, P, C, H, W) in float32 for latents z (N, latent_dim)."""
        c, h, w = self.config.image_shape
        return self.decoder(z).float().view(z.shape[0], self.config.params_per_pixel, c, h, w)

    def reconstruction_nll(self, params: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) in nats per item, (N,)."""
        return self.likelihood.nll(params, levels)

    def decoded_images(self, params: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        """Images (N, C, H, W) in [0, 1]: the mean of p(x | z), or a sample of it (mode="sample")."""
        if mode == "mean":
            return self.likelihood.mean(params)
        return self.likelihood.sample(params).float() / (self.config.num_levels - 1)

    # -- training ---------------------------------------------------------------------------------
    def _elbo_terms(self, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(recon, kl), each (N,) in nats, from one reparameterised sample per item."""
        z, kl, _, _ = self.latent(self._encode_features(levels))
        return self.reconstruction_nll(self.decode(z), levels), kl.float()

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """{"loss": -(beta-ELBO) in nats/dim, batch mean; "recon", "kl": nats/item, batch means}."""
        recon, kl = self._elbo_terms(self._levels(self._images_of(batch)))
        loss = (recon + self.config.beta * kl).mean() / self.num_dims
        return {"loss": loss, "recon": recon.mean(), "kl": kl.mean()}

    # -- likelihood bounds ------------------------------------------------------------------------
    def elbo(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """ELBO (beta = 1) per item in nats, (N,), averaged over `num_samples` draws of z."""
        levels = self._levels(x)
        total = torch.zeros(levels.shape[0], device=levels.device)
        for _ in range(num_samples):
            recon, kl = self._elbo_terms(levels)
            total = total - recon - kl
        return total / num_samples

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """A lower bound on log p(x) per item in nats, (N,): the single-sample ELBO."""
        return self.elbo(x)

    @torch.no_grad()
    def anomaly_score(self, x: torch.Tensor, num_samples: int = 8) -> torch.Tensor:
        """Negative ELBO per item in nats, (N,): high for inputs the model finds unlikely."""
        return -self.elbo(x, num_samples)

    def iwae(self, x: torch.Tensor, k: int = 64) -> torch.Tensor:
        """Importance-weighted bound (Burda et al. 2016) on log p(x) per item in nats, (N,).

        log w_k = log p(x | z_k) + log N(z_k; 0, I) - log q(z_k | x),  z_k ~ q(z | x), k = 1..K;
        IWAE = logsumexp_k log w_k - log K  (K = 1 is the ELBO; it tightens as K grows).
        """
        from genkernels.metrics import iwae_bound

        check_int("k", k, 1)
        levels = self._levels(x)
        n = levels.shape[0]
        mu, logvar = (t.float() for t in self.latent.posterior(self._encode_features(levels)))  # (N, Z)
        eps = torch.randn(n, k, mu.shape[1], device=mu.device)  # (N, K, Z)
        z = mu.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * eps
        log_prior = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)
        log_posterior = -0.5 * (eps.pow(2) + logvar.unsqueeze(1) + math.log(2 * math.pi)).sum(-1)
        params = self.decode(z.reshape(n * k, -1).to(mu.dtype))  # (N K, P, C, H, W)
        repeated = levels.repeat_interleave(k, dim=0)
        log_likelihood = -self.reconstruction_nll(params, repeated).view(n, k)
        return iwae_bound(log_likelihood + log_prior - log_posterior, dim=1)

    # -- generation -------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, mode: str = "mean", temperature: float = 1.0) -> torch.Tensor:
        """n images (n, C, H, W) float32 in [0, 1] from z ~ N(0, temperature^2 I).

        mode "mean" returns the decoder's mean image (smooth; what VAE figures usually show),
        "sample" draws the pixels from p(x | z) (quantised to the levels).
        """
        check_int("n", n, 1)
        check_choice("mode", mode, ("mean", "sample"))
        temperature = check_real("temperature", temperature, 0.0)
        device = next(self.parameters()).device
        z = temperature * torch.randn(n, self.config.latent_dim, device=device)
        return self.decoded_images(self.decode(z), mode)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean decodings of the posterior means, (N, C, H, W) in [0, 1]."""
        mu, _ = self.latent.posterior(self._encode_features(self._levels(x)))
        return self.decoded_images(self.decode(mu))

    @torch.no_grad()
    def interpolate(self, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 8) -> torch.Tensor:
        """Decodings along the line between the posterior means of x_a and x_b (N, C, H, W each).

        Returns (N, steps, C, H, W) in [0, 1]; column 0 decodes x_a's mean, the last x_b's.
        """
        check_int("steps", steps, 2)
        mu_a, _ = self.latent.posterior(self._encode_features(self._levels(x_a)))
        mu_b, _ = self.latent.posterior(self._encode_features(self._levels(x_b)))
        weights = torch.linspace(0, 1, steps, device=mu_a.device).view(1, steps, 1)
        z = (1 - weights) * mu_a.unsqueeze(1) + weights * mu_b.unsqueeze(1)  # (N, steps, Z)
        images = self.decoded_images(self.decode(z.reshape(-1, z.shape[-1])))
        return images.view(mu_a.shape[0], steps, *images.shape[1:])

    # -- evaluation and figures -------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, dataset, *, max_items: int | None = None, batch_size: int = 128) -> dict[str, float]:
        """ELBO and IWAE (K = config.iwae_samples) bits/dim on a held-out dataset, plus the mean
        reconstruction NLL and KL in nats/item. Keeps 16 of its images for `figures`."""
        from genkernels.metrics import bits_per_dim

        count = evaluation_count(dataset, max_items, batch_size)
        device = next(self.parameters()).device
        recon_all, kl_all, iwae_all = [], [], []
        for start in range(0, count, batch_size):
            items = [dataset[i] for i in range(start, min(count, start + batch_size))]
            x = torch.stack([self._images_of(item) for item in items]).to(device)
            levels = self._levels(x)
            recon, kl = self._elbo_terms(levels)
            recon_all.append(recon)
            kl_all.append(kl)
            iwae_all.append(self.iwae(levels, self.config.iwae_samples))
            if start == 0:
                self._figure_images = self._to_images(levels[:16]).cpu()
        recon, kl, iwae = torch.cat(recon_all), torch.cat(kl_all), torch.cat(iwae_all)
        return {
            "elbo_bpd": bits_per_dim(recon + kl, self.num_dims),
            "iwae_bpd": bits_per_dim(-iwae, self.num_dims),
            "recon_nats": recon.mean().item(),
            "kl_nats": kl.mean().item(),
        }

    @torch.no_grad()
    def figures(self, samples: torch.Tensor, *, nrow: int | None = None) -> dict[str, Any]:
        """{"samples": grid, "reconstructions": rows alternate inputs and reconstructions,
        "interpolations": one row per pair of inputs, 8 steps}, as PIL images. The inputs are the
        held-out images kept by the last `evaluate`, else the given samples."""
        from genkernels.figures import image_grid

        figures = {"samples": image_grid(samples.float().cpu().clamp(0, 1), nrow or 8)}
        device = next(self.parameters()).device
        inputs = self._figure_images if self._figure_images is not None else samples[:16].float().cpu()
        inputs = inputs.to(device)
        shape = inputs.shape[1:]
        columns = min(8, inputs.shape[0])
        kept = inputs[: inputs.shape[0] // columns * columns]
        recon = self.reconstruct(kept)
        # (R, 2, columns, C, H, W): each row of inputs followed by its reconstructions
        rows = torch.stack([kept.view(-1, columns, *shape), recon.view(-1, columns, *shape)], 1)
        figures["reconstructions"] = image_grid(rows.reshape(-1, *shape).cpu(), columns,
                                                row_labels=["input", "recon."] * rows.shape[0])
        half = inputs.shape[0] // 2
        if half:
            steps = 8
            path = self.interpolate(inputs[:half], inputs[half:2 * half], steps=steps)  # (half, 8, C, H, W)
            figures["interpolations"] = image_grid(
                path.reshape(-1, *shape).cpu(), steps,
                column_labels=["a"] + [f"{t / (steps - 1):.2f}" for t in range(1, steps - 1)] + ["b"])
        return figures
