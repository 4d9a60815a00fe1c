"""Tiny models and data for the training tests (stand-ins for the real zoo)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from genkernels.models.base import GenerativeModel
from genkernels.figures import image_grid


class ToyImages(Dataset):
    """`count` random (1, 4, 4) images in [0, 1] with int64 labels, like the digits items."""

    def __init__(self, count: int = 40, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.rand(count, 1, 4, 4, generator=generator)
        self.labels = torch.randint(0, 3, (count,), generator=generator)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]


@dataclass
class ToyConfig:
    side: int = 4  # images are (1, side, side); 8 fits the digits data
    hidden: int = 8
    noise: float = 0.1  # 0 makes the loss a deterministic function of the weights


class ToyAutoencoder(GenerativeModel):
    """side**2 -> hidden -> side**2 autoencoder on noisy inputs; samples decode Gaussian codes."""

    name = "toy"
    config_class = ToyConfig
    default_data = "toy"

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        self.encoder = nn.Linear(config.side**2, config.hidden)
        self.decoder = nn.Linear(config.hidden, config.side**2)

    def loss(self, batch):
        images, _ = batch
        x = images.flatten(1)  # (B, side**2)
        noisy = x + self.config.noise * torch.randn_like(x)
        reconstruction = torch.sigmoid(self.decoder(torch.tanh(self.encoder(noisy))))
        mse = F.mse_loss(reconstruction, x)
        return {"loss": mse, "l1": (reconstruction - x).abs().mean()}

    @torch.no_grad()
    def sample(self, n, temperature: float = 1.0):
        device = self.decoder.weight.device
        codes = temperature * torch.randn(n, self.config.hidden, device=device)
        side = self.config.side
        return torch.sigmoid(self.decoder(codes)).view(n, 1, side, side)

    @torch.no_grad()
    def evaluate(self, dataset, *, max_items=None):
        count = min(len(dataset), max_items or len(dataset))
        images = torch.stack([dataset[i][0] for i in range(count)]).to(self.decoder.weight.device)
        return {"mean_abs_code": self.encoder(images.flatten(1)).abs().mean().item()}

    def figures(self, samples, *, nrow=None):
        return {"samples": image_grid(samples, nrow)}


class ToyGAN(GenerativeModel):
    """Two optimizer groups, discriminator then generator, as the GAN family uses them."""

    name = "toygan"
    config_class = ToyConfig
    default_data = "toy"

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        self.generator = nn.Linear(config.hidden, config.side**2)
        self.discriminator = nn.Linear(config.side**2, 1)

    def optimizer_groups(self):
        return {"discriminator": list(self.discriminator.parameters()),
                "generator": list(self.generator.parameters())}

    def _fake(self, n):
        return torch.sigmoid(self.generator(torch.randn(n, self.config.hidden, device=self.generator.weight.device)))

    def loss(self, batch, group="generator"):
        real = batch[0].flatten(1)
        if group == "discriminator":
            fake = self._fake(len(real)).detach()
            d_loss = F.softplus(-self.discriminator(real)).mean() + F.softplus(self.discriminator(fake)).mean()
            return {"d_loss": d_loss}
        return {"g_loss": F.softplus(-self.discriminator(self._fake(len(real)))).mean()}

    @torch.no_grad()
    def sample(self, n, **conditions):
        return self._fake(n).view(n, 1, self.config.side, self.config.side)


class FlakyAutoencoder(ToyAutoencoder):
    """ToyAutoencoder whose training loss is NaN at chosen 1-based training steps (`nan_loss_at`),
    finite with a NaN gradient (`nan_grad_at`), or NaN with finite gradients (`nan_value_at`);
    evaluation losses stay finite."""

    def __init__(self, config: ToyConfig, nan_loss_at=(), nan_grad_at=(), nan_value_at=()):
        super().__init__(config)
        self.nan_loss_at, self.nan_grad_at = set(nan_loss_at), set(nan_grad_at)
        self.nan_value_at = set(nan_value_at)  # NaN loss whose gradients stay finite
        self.train_calls = 0

    def loss(self, batch):
        losses = super().loss(batch)
        if not self.training:
            return losses
        self.train_calls += 1
        if self.train_calls in self.nan_loss_at:
            losses["loss"] = losses["loss"] * float("nan")
        if self.train_calls in self.nan_grad_at:
            zero = (self.encoder.weight - self.encoder.weight.detach()).sum()
            # sqrt'(0) = inf, times the upstream 0: the loss is unchanged, the gradient is NaN
            losses["loss"] = losses["loss"] + 0.0 * torch.sqrt(zero)
        if self.train_calls in self.nan_value_at:
            # where() sends a zero gradient to the masked-out branch: NaN value, finite gradients
            losses["loss"] = torch.where(torch.tensor(True), torch.tensor(float("nan")), losses["loss"])
        return losses
