"""Variational autoencoder (Kingma & Welling 2014) with a beta-weighted KL (Higgins et al. 2017).

    log p(x) >= ELBO(x) = E_q(z|x)[log p(x | z)] - KL(q(z | x) || N(0, I))

The encoder (MLP or convolutional) gives q(z | x) = N(mu, diag exp(logvar)); z and the KL come
from the fused op genkernels.ops.reparam_kl. The decoder gives p(x | z) over the data's discrete
levels 0..L-1 (L = 17 for the digits), so ELBO and IWAE (Burda et al. 2016) bound the likelihood of
the actual data and their bits/dim compare with any other model's on the same levels:

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
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genkernels.models.base import GenerativeModel
from genkernels.nn.latent import GaussianLatent

LIKELIHOODS = {"bernoulli": 1, "categorical": None, "logistic": 2}  # decoder outputs per pixel (None: L)
ARCHITECTURES = ("mlp", "conv")


@dataclasses.dataclass
class VAEConfig:
    """image_shape    (C, H, W) of the data; conv needs H, W divisible by 2^(len(channels) - 1)
    num_levels     discrete levels per pixel L (17 for the digits)
    latent_dim     size of z
    architecture   "mlp" or "conv" encoder/decoder
    hidden         MLP width (two hidden layers each way)
    channels       conv widths: a 3x3 stem at full resolution, then one stride-2 stage per entry
    likelihood     "bernoulli", "categorical" or "logistic" (see the module docstring)
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
        self.image_shape = tuple(int(s) for s in self.image_shape)
        self.channels = tuple(int(c) for c in self.channels)
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W) of positive ints, got {self.image_shape}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {tuple(LIKELIHOODS)}, got {self.likelihood!r}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.num_levels < 2:
            raise ValueError(f"num_levels must be >= 2, got {self.num_levels}")
        for name in ("latent_dim", "hidden", "iwae_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.architecture == "conv":
            factor = 2 ** (len(self.channels) - 1)
            if not self.channels or self.image_shape[1] % factor or self.image_shape[2] % factor:
                raise ValueError(f"conv: image height and width {self.image_shape[1:]} must be divisible by "
                                 f"2^(len(channels) - 1) = {factor} (channels={self.channels})")

    @property
    def params_per_pixel(self) -> int:
        return LIKELIHOODS[self.likelihood] or self.num_levels


# ---- likelihoods: params (N, P, C, H, W) float32, levels (N, C, H, W) int64 -> (N,) nats -------
def binomial_nll(logits: torch.Tensor, levels: torch.Tensor, num_levels: int) -> torch.Tensor:
    trials = num_levels - 1
    k, logit = levels.float(), logits[:, 0]
    log_choose = math.lgamma(trials + 1) - torch.lgamma(k + 1) - torch.lgamma(trials - k + 1)
    log_p = log_choose + k * F.logsigmoid(logit) + (trials - k) * F.logsigmoid(-logit)
    return -log_p.flatten(1).sum(1)


def categorical_nll(logits: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, levels, reduction="none").flatten(1).sum(1)


def _logistic_params(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # log-scale clamp: below -7 a bin (width 2/16) holds all the mass anyway; above 7 it is flat
    return params[:, 0], params[:, 1].clamp(-7.0, 7.0)


def discretized_logistic_nll(params: torch.Tensor, levels: torch.Tensor, num_levels: int) -> torch.Tensor:
    mean, log_scale = _logistic_params(params)
    x = 2.0 * levels.float() / (num_levels - 1) - 1.0
    half_bin, inv_scale = 1.0 / (num_levels - 1), torch.exp(-log_scale)
    upper, lower = (x + half_bin - mean) * inv_scale, (x - half_bin - mean) * inv_scale
    # log(sigmoid(u) - sigmoid(l)) = logsigmoid(u) + logsigmoid(-l) + log(1 - exp(l - u)), stable
    # for tiny and huge bins alike (no PixelCNN++ mid-point fallback needed)
    interior = F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(lower - upper))
    log_p = torch.where(levels == 0, F.logsigmoid(upper),
                        torch.where(levels == num_levels - 1, F.logsigmoid(-lower), interior))
    return -log_p.flatten(1).sum(1)


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


class VAE(GenerativeModel):
    """VAE over discrete-level images; see the module docstring for the likelihoods and units."""

    name = "vae"
    config_class = VAEConfig
    default_data = "digits"

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
        self._figure_images: torch.Tensor | None = None  # held-out images kept by evaluate()

    @property
    def num_dims(self) -> int:
        return math.prod(self.config.image_shape)

    # -- data conversion --------------------------------------------------------------------------
    def _levels(self, x: torch.Tensor) -> torch.Tensor:
        """Images as int64 levels (N, C, H, W): integer data as is, float data in [0, 1] rounded."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a tensor of images (N, *{self.config.image_shape}), got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.config.image_shape:
            raise ValueError(f"x must have shape (N, *{self.config.image_shape}), got {tuple(x.shape)}")
        top = self.config.num_levels - 1
        if x.is_floating_point():
            return (x.float() * top).round().clamp(0, top).long()
        return x.long().clamp(0, top)

    def _to_images(self, levels_or_mean: torch.Tensor) -> torch.Tensor:
        return levels_or_mean.float() / (self.config.num_levels - 1)

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
        if self.config.likelihood == "bernoulli":
            return binomial_nll(params, levels, self.config.num_levels)
        if self.config.likelihood == "categorical":
            return categorical_nll(params, levels)
        return discretized_logistic_nll(params, levels, self.config.num_levels)

    def decoded_images(self, params: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        """Images (N, C, H, W) in [0, 1]: the mean of p(x | z), or a sample of it (mode="sample")."""
        top = self.config.num_levels - 1
        if self.config.likelihood == "bernoulli":
            p = torch.sigmoid(params[:, 0])
            return p if mode == "mean" else torch.binomial(torch.full_like(p, top), p) / top
        if self.config.likelihood == "categorical":
            probs = params.softmax(dim=1)  # (N, L, C, H, W)
            if mode == "mean":
                levels = torch.arange(top + 1, device=params.device, dtype=probs.dtype).view(1, -1, 1, 1, 1)
                return (probs * levels).sum(1) / top
            flat = probs.movedim(1, -1).reshape(-1, top + 1)
            return torch.multinomial(flat, 1).view(probs.shape[0], *probs.shape[2:]).float() / top
        mean, log_scale = _logistic_params(params)
        if mode == "mean":
            return ((mean.clamp(-1, 1) + 1) / 2)
        u = torch.rand_like(mean).clamp(1e-5, 1 - 1e-5)
        x = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
        return (((x + 1) / 2) * top).round().clamp(0, top) / top

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

        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
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
        if mode not in ("mean", "sample"):
            raise ValueError(f"mode must be 'mean' or 'sample', got {mode!r}")
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
        reconstruction NLL and KL in nats/item. Keeps 16 of its images for `save_figures`."""
        from genkernels.metrics import bits_per_dim

        count = len(dataset) if max_items is None else min(len(dataset), max_items)
        if count == 0:
            raise ValueError("evaluate needs a non-empty dataset")
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
    def save_figures(self, out_dir, samples: torch.Tensor) -> list[str]:
        """vae_samples.png, vae_reconstructions.png (rows alternate inputs and reconstructions)
        and vae_interpolations.png (one row per pair of inputs, 8 steps). The inputs are the
        held-out images kept by the last `evaluate`, else the given samples."""
        from genkernels.train.figures import save_image_grid

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        device = next(self.parameters()).device
        inputs = self._figure_images if self._figure_images is not None else samples[:16].float().cpu()
        inputs = inputs.to(device)
        paths = [out_dir / "vae_samples.png", out_dir / "vae_reconstructions.png", out_dir / "vae_interpolations.png"]
        save_image_grid(samples.float().cpu().clamp(0, 1), paths[0], nrow=8)
        shape = inputs.shape[1:]
        nrow = min(8, inputs.shape[0])
        kept = inputs[: inputs.shape[0] // nrow * nrow]
        recon = self.reconstruct(kept)
        rows = torch.stack([kept.view(-1, nrow, *shape), recon.view(-1, nrow, *shape)], 1)  # (R, 2, nrow, C, H, W)
        save_image_grid(rows.reshape(-1, *shape).cpu(), paths[1], nrow=nrow)
        half = inputs.shape[0] // 2
        if half:
            path = self.interpolate(inputs[:half], inputs[half:2 * half], steps=8)  # (half, 8, C, H, W)
            save_image_grid(path.reshape(-1, *shape).cpu(), paths[2], nrow=8)
        else:
            paths.pop()
        return [str(p) for p in paths]
