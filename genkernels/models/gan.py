"""DCGAN-style generative adversarial network (Goodfellow et al. 2014; Radford et al. 2016).

Objectives (D outputs a real-valued score, "logit"; x real, x~ = G(z) fake):
  nonsaturating  D: softplus(-D(x)) + softplus(D(x~))     G: softplus(-D(x~))   (Goodfellow et al.)
  hinge          D: relu(1 - D(x)) + relu(1 + D(x~))      G: -D(x~)             (Lim & Ye 2017; Miyato et al. 2018)
  wgan-gp        D: D(x~) - D(x) + lambda (|grad D(x^)| - 1)^2, x^ on random lines between x and x~
                 G: -D(x~)                                                       (Gulrajani et al. 2017)

Options: spectral normalisation of every discriminator layer (Miyato et al. 2018), and a class-
conditional variant: the generator gets a label embedding concatenated to z, the discriminator is
a projection discriminator (Miyato & Koyama 2018), D(x, y) = psi(h(x)) + <embed(y), h(x)>.

Training alternates two optimizer groups, "discriminator" then "generator" (see
`GenerativeModel.optimizer_groups`): the trainer calls `loss(batch, group=...)` for each per step.
Images are float32 in [0, 1] (the digits' form="float"); internally the networks see [-1, 1].
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from genkernels.models._validate import check_bool, check_choice, check_int, check_int_tuple, check_real, class_labels
from genkernels.models.base import ImageGenerativeModel

LOSSES = ("nonsaturating", "hinge", "wgan-gp")
GROUPS = ("discriminator", "generator")


@dataclasses.dataclass
class GANConfig:
    """image_shape     (C, H, W); H and W must be divisible by 2^num_upsamples
    latent_dim      size of the generator's input noise z ~ N(0, I)
    channels        base width (see "Widths" below)
    num_upsamples   stride-2 stages of each network (2 for 8x8: 2x2 -> 4x4 -> 8x8); larger
                    images take more, e.g. 3 for 16x16 from 2x2
    loss            "nonsaturating", "hinge" or "wgan-gp"
    gp_weight       lambda of the WGAN-GP gradient penalty
    spectral_norm   spectral normalisation on every discriminator layer
    num_classes     0 for an unconditional GAN; otherwise the number of classes to condition on
    embed_dim       size of the generator's label embedding (class-conditional only)

    Widths: the generator's stage s (from the smallest resolution) has channels * 2^(stages - s)
    channels, halving as the resolution doubles; the discriminator mirrors it. channels=16 is
    plenty for 8x8 digits (unconditional Fréchet distance ~80 after 1000 steps, 20 s on 2 CPU
    cores; channels=32 reaches ~75 in twice the time).
    """

    image_shape: tuple[int, int, int] = (1, 8, 8)
    latent_dim: int = 32
    channels: int = 16
    num_upsamples: int = 2
    loss: str = "hinge"
    gp_weight: float = 10.0
    spectral_norm: bool = True
    num_classes: int = 0
    embed_dim: int = 16

    def __post_init__(self):
        self.image_shape = check_int_tuple("GANConfig.image_shape", self.image_shape, length=3)
        self.loss = check_choice("GANConfig.loss", self.loss, LOSSES)
        for name in ("latent_dim", "channels", "num_upsamples", "embed_dim"):
            setattr(self, name, check_int(f"GANConfig.{name}", getattr(self, name), 1))
        self.num_classes = check_int("GANConfig.num_classes", self.num_classes, 0)
        if self.num_classes == 1:
            raise ValueError(f"GANConfig.num_classes must be 0 (unconditional) or >= 2, got {self.num_classes}")
        self.gp_weight = check_real("GANConfig.gp_weight", self.gp_weight, 0.0)
        self.spectral_norm = check_bool("GANConfig.spectral_norm", self.spectral_norm)
        factor = 2 ** self.num_upsamples
        if self.image_shape[1] % factor or self.image_shape[2] % factor:
            raise ValueError(f"image height and width {self.image_shape[1:]} must be divisible by "
                             f"2^num_upsamples = {factor}")

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0


class Generator(nn.Module):
    """z (N, latent_dim) [+ label] -> linear -> (w_0, H / 2^s, W / 2^s) -> s x (BN, ReLU, 4x4
    stride-2 transposed conv) -> BN, ReLU, 3x3 conv -> tanh: images (N, C, H, W) in [-1, 1]."""

    def __init__(self, config: GANConfig):
        super().__init__()
        c, h, w = config.image_shape
        s = config.num_upsamples
        widths = [config.channels * 2 ** (s - i) for i in range(s + 1)]  # e.g. 256, 128, 64
        self.start = (widths[0], h // 2 ** s, w // 2 ** s)
        self.embed = nn.Embedding(config.num_classes, config.embed_dim) if config.conditional else None
        in_features = config.latent_dim + (config.embed_dim if config.conditional else 0)
        self.proj = nn.Linear(in_features, math.prod(self.start))
        layers = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.BatchNorm2d(c_in), nn.ReLU(), nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)]
        layers += [nn.BatchNorm2d(widths[-1]), nn.ReLU(), nn.Conv2d(widths[-1], c, 3, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)  # (N, latent_dim + embed_dim)
        return self.net(self.proj(z).view(z.shape[0], *self.start))  # (N, C, H, W)


class Discriminator(nn.Module):
    """3x3 conv -> s x (LeakyReLU, 4x4 stride-2 conv) -> LeakyReLU -> flatten -> linear score,
    plus the projection <embed(y), h> when class-conditional. No batch norm: WGAN-GP's penalty
    is per sample, and spectral norm does the normalising."""

    def __init__(self, config: GANConfig):
        super().__init__()
        c, h, w = config.image_shape
        s = config.num_upsamples
        widths = [config.channels * 2 ** i for i in range(s + 1)]  # e.g. 64, 128, 256
        norm = spectral_norm if config.spectral_norm else (lambda layer: layer)
        layers = [norm(nn.Conv2d(c, widths[0], 3, padding=1))]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.LeakyReLU(0.2), norm(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1))]
        layers += [nn.LeakyReLU(0.2), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        feature_dim = widths[-1] * (h // 2 ** s) * (w // 2 ** s)
        self.score = norm(nn.Linear(feature_dim, 1))
        self.embed = norm(nn.Embedding(config.num_classes, feature_dim)) if config.conditional else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)  # (N, feature_dim)
        out = self.score(h).squeeze(1)  # (N,)
        if self.embed is not None:
            out = out + (self.embed(labels) * h).sum(dim=1)
        return out


class GAN(ImageGenerativeModel):
    """Generator + discriminator trained as two optimizer groups; see the module docstring."""

    name = "gan"
    config_class = GANConfig
    default_data = "digits"
    metric_units = {"loss": "discriminator loss", "generator_loss": "generator loss",
                    "d_real": "mean D score", "d_fake": "mean D score", "generator_d_fake": "mean D score",
                    "gradient_penalty": "penalty", "frechet_distance": "classifier features, lower is better",
                    "class_accuracy": "fraction of samples"}
    # Held-out "losses" would use the EMA weights of the discriminator, an average of critics that
    # never existed: its scores ran to 140-52,000 against ~2 in training and flattened loss.png. The
    # validation signal is `evaluate` (Fréchet distance, class accuracy) on the generator.
    reports_validation_loss = False
    # Adam betas (0, 0.9), as SN-GAN uses with the hinge loss (Miyato et al. 2018). With DCGAN's
    # beta1 = 0.5 the unconditional GAN collapses on the digits within ~50 steps (hinge or
    # non-saturating, lr 2e-4 or 1e-3, with or without spectral norm or G's batch norm): early
    # on D's input gradient points the same way for every fake, momentum keeps pushing G along
    # that shared direction, and G grows its z-independent path until every sample is one image
    # (Fréchet distance ~1200-1500 vs ~80 with beta1 = 0). lr 1e-3 with batch 64 trains in 1000
    # steps (lr 2e-4: FD ~200). No weight decay or warm-up. No gradient clipping: the generator's
    # gradient norm is ~10 early on, and clipping it to 1 stalls training (250 digits steps:
    # class accuracy 0.25 clipped vs 0.96 unclipped).
    train_defaults = {"lr": 1e-3, "betas": (0.0, 0.9), "batch_size": 64, "steps": 1000, "weight_decay": 0.0,
                      "warmup_steps": 0, "grad_clip": 0.0}

    def __init__(self, config: GANConfig | None = None):
        super().__init__(config if config is not None else GANConfig())
        self.generator = Generator(self.config)
        self.discriminator = Discriminator(self.config)

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"discriminator": list(self.discriminator.parameters()),
                "generator": list(self.generator.parameters())}

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.generator.proj.weight.device

    def _check_labels(self, labels, n: int) -> torch.Tensor | None:
        return class_labels(labels, n, self.config.num_classes if self.config.conditional else 0, model="GAN",
                            device=self.device)

    def _split_batch(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(real images in [-1, 1], labels or None) from (images in [0, 1], labels) or images."""
        images, labels = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        if tuple(images.shape[1:]) != self.config.image_shape:
            raise ValueError(f"images must have shape (N, *{self.config.image_shape}), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be float in [0, 1] (digits form='float'), got {images.dtype}")
        if self.config.conditional and labels is None:
            raise ValueError("a class-conditional GAN needs (images, labels) batches")
        return images * 2 - 1, labels.long() if self.config.conditional else None

    def generate(self, n: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        """n generator outputs (n, C, H, W) in [-1, 1], differentiable (no no_grad)."""
        z = torch.randn(n, self.config.latent_dim, device=self.device)
        return self.generator(z, labels)

    def gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """WGAN-GP term mean_n (|grad_x D(x^_n)|_2 - 1)^2 at x^ = u x + (1 - u) x~, u ~ U[0, 1]."""
        u = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
        mixed = (u * real + (1 - u) * fake).detach().requires_grad_(True)
        with torch.enable_grad():  # also under validation's no_grad, so the penalty is reported
            scores = self.discriminator(mixed, labels)
            (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=torch.is_grad_enabled() and self.training)
        return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()

    # -- training ---------------------------------------------------------------------------------
    def loss(self, batch, group: str | None = None) -> dict[str, torch.Tensor]:
        """Loss of one optimizer group: group="discriminator" -> {"loss", "d_real", "d_fake"[,
        "gradient_penalty"]}, group="generator" -> {"loss", "d_fake"}. d_real / d_fake are the
        mean discriminator scores."""
        if group not in GROUPS:
            raise ValueError(f"GAN.loss needs group='discriminator' or 'generator' (one per optimizer "
                             f"group, see optimizer_groups), got {group!r}")
        real, labels = self._split_batch(batch)
        fake = self.generate(real.shape[0], labels)
        kind = self.config.loss
        if group == "generator":
            d_fake = self.discriminator(fake, labels)
            loss = F.softplus(-d_fake).mean() if kind == "nonsaturating" else -d_fake.mean()
            return {"loss": loss, "d_fake": d_fake.mean().detach()}
        fake = fake.detach()
        d_real, d_fake = self.discriminator(real, labels), self.discriminator(fake, labels)
        out = {}
        if kind == "nonsaturating":
            loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        elif kind == "hinge":
            loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        else:
            penalty = self.gradient_penalty(real, fake, labels)
            loss = d_fake.mean() - d_real.mean() + self.config.gp_weight * penalty
            out["gradient_penalty"] = penalty.detach()
        return {"loss": loss, "d_real": d_real.mean().detach(), "d_fake": d_fake.mean().detach(), **out}

    # -- generation -------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        """n images (n, C, H, W) float32 in [0, 1]. Class-conditional GANs take `labels`: (n,) ints
        in [0, num_classes), or one int for all (default: uniformly random); unconditional GANs
        take none."""
        check_int("n", n, 1)
        labels = self._check_labels(labels, n)
        return ((self.generate(n, labels).float() + 1) / 2).clamp(0, 1)

    # -- evaluation and figures -------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, dataset, *, max_items: int | None = None) -> dict[str, float]:
        """For 8x8 single-channel images (digits), digits-classifier metrics of as many samples as
        evaluated items (at most 1000):
        Fréchet distance to the dataset's images, and, class-conditional, the classifier accuracy
        of samples generated for the dataset's labels."""
        from genkernels.metrics import digits_sample_metrics

        if max_items is not None:
            check_int("max_items", max_items, 1)
        if tuple(self.config.image_shape) != (1, 8, 8):
            return {}  # the metrics' classifier knows 8x8 digits only; other images get the losses alone
        count = min(len(dataset), 1000 if max_items is None else max_items)
        if count < 2:
            raise ValueError(f"evaluate needs >= 2 items, got {count}")
        items = [dataset[i] for i in range(count)]
        real = torch.stack([item[0] if isinstance(item, (tuple, list)) else item for item in items]).float()
        labels = torch.stack([torch.as_tensor(item[1]) for item in items]).long() if self.config.conditional else None
        samples = self.sample(count, labels=labels).cpu()
        metrics = digits_sample_metrics(samples, labels, reference=real)
        return {key: float(value) for key, value in metrics.items() if key != "num_samples"}

    @torch.no_grad()
    def figures(self, samples: torch.Tensor, *, nrow: int | None = None) -> dict[str, Any]:
        """{"samples": grid} and, class-conditional, {"classes": row k holds 10 samples of class k,
        labelled}, as PIL images."""
        from genkernels.figures import image_grid

        figures = {"samples": image_grid(samples.float().cpu().clamp(0, 1), nrow or 8)}
        if self.config.conditional:
            k = self.config.num_classes
            labels = torch.arange(k, device=self.device).repeat_interleave(10)
            figures["classes"] = image_grid(self.sample(10 * k, labels=labels).cpu(), 10,
                                            row_labels=[f"class {c}" for c in range(k)])
        return figures
