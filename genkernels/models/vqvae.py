"""VQ-VAE (van den Oord et al. 2017) with an EMA codebook and a PixelCNN prior over its code maps.

    x (C, H, W) -> encoder -> z_e (D, h, w) -> nearest code -> k (h, w) in 0..K-1 -> e_k -> decoder -> x^

The encoder is a 3x3 stem and one stride-2 convolution per further entry of `channels` (so the code
map is (H, W) / 2^(len(channels) - 1): 8x8 digits -> 4x4 codes, 32x32 images -> 8x8), residual
blocks and a 1x1 projection to code_dim; the decoder mirrors it. The quantiser is
genkernels.nn.VectorQuantizer (EMA codebook, dead-code restarts, straight-through gradient,
commitment loss). The reconstruction loss is the MSE on images in [0, 1].

The prior p(k) = prod_i p(k_i | k_<i) over the code maps (raster order) is a genkernels PixelCNN
(masked gated convolutions, categorical head over the K codes) whose input 1x1 convolution is
replaced by a learned code embedding (codes are labels, not intensities). It trains on the codes of
the current encoder, detached, as a second optimizer group: each trainer step first updates the
autoencoder ("autoencoder" group: loss = MSE + commitment; the codebook moves by EMA) and then the
prior ("prior" group: NLL of the batch's code maps in bits per code). So `genkernels train vqvae`
gives a model that samples (prior sample, then decode). `fit_prior(dataset, steps)` retrains the
prior alone on the final codes (a classic second stage) when the codes moved late in training.

Units: `loss(batch, group="autoencoder")` = {"loss": MSE per pixel + commitment, "mse",
"commitment", "perplexity", "usage"}; `loss(batch, group="prior")` = {"loss": prior NLL in bits per
code}; `loss(batch)` sums both. `evaluate` gives the reconstruction MSE and PSNR (dB, images in
[0, 1]), the code usage and perplexity on the held-out set, and the prior's NLL of the held-out code
maps in bits per image beside the uniform bound h w log2 K. genkernels.compress entropy-codes code
maps with this prior (arithmetic coding).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genkernels.models._validate import (check_bool, check_int, check_int_tuple, check_real,
                                          evaluation_count)
from genkernels.models.base import ImageGenerativeModel
from genkernels.models.pixelcnn import PixelCNN, PixelCNNConfig
from genkernels.nn.vq import VectorQuantizer


@dataclasses.dataclass
class VQVAEConfig:
    """image_shape     (C, H, W) of the data; H, W divisible by 2^(len(channels) - 1)
    num_levels      discrete levels per pixel of the data (17 for the digits, 256 for 8-bit files);
                    integer inputs are levels 0..L-1, float inputs images in [0, 1]
    channels        conv widths: a 3x3 stem at full resolution, then one stride-2 stage per entry;
                    None: chosen from the image size (8x8 -> (32, 64): 4x4 codes; up to 32 -> two
                    stages; larger -> three)
    res_blocks      residual blocks at the code resolution, in the encoder and in the decoder
    num_codes       codebook size K
    code_dim        size D of a code vector
    decay           EMA decay of the codebook statistics
    commitment      weight of the commitment loss
    restart_dead    re-initialise codes unused for dead_threshold training batches in a row
    dead_threshold  see restart_dead
    prior_channels  width of the PixelCNN prior's stacks
    prior_layers    gated masked layers of the prior
    prior_dropout   dropout of the prior (training only)
    """

    image_shape: tuple[int, int, int] = (1, 8, 8)
    num_levels: int = 17
    channels: tuple[int, ...] | None = None
    res_blocks: int = 1
    num_codes: int = 64
    code_dim: int = 16
    decay: float = 0.99
    commitment: float = 0.25
    restart_dead: bool = True
    dead_threshold: int = 20
    prior_channels: int = 64
    prior_layers: int = 5
    prior_dropout: float = 0.2

    def __post_init__(self):
        self.image_shape = check_int_tuple("VQVAEConfig.image_shape", self.image_shape, length=3)
        if self.channels is None:
            size = min(self.image_shape[1:])
            stages = 1 if size <= 8 else 2 if size <= 32 else 3
            self.channels = (32, 64, 128, 128)[: stages + 1]
        self.channels = check_int_tuple("VQVAEConfig.channels", self.channels)
        self.num_levels = check_int("VQVAEConfig.num_levels", self.num_levels, 2)
        self.res_blocks = check_int("VQVAEConfig.res_blocks", self.res_blocks, 0)
        for name in ("num_codes", "code_dim", "dead_threshold", "prior_channels", "prior_layers"):
            setattr(self, name, check_int(f"VQVAEConfig.{name}", getattr(self, name), 1))
        if self.num_codes < 2:
            raise ValueError(f"VQVAEConfig.num_codes must be >= 2, got {self.num_codes}")
        self.decay = check_real("VQVAEConfig.decay", self.decay, 0.0)
        if self.decay >= 1:
            raise ValueError(f"VQVAEConfig.decay must be in [0, 1), got {self.decay}")
        self.commitment = check_real("VQVAEConfig.commitment", self.commitment, 0.0)
        self.restart_dead = check_bool("VQVAEConfig.restart_dead", self.restart_dead)
        self.prior_dropout = check_real("VQVAEConfig.prior_dropout", self.prior_dropout, 0.0)
        if self.prior_dropout >= 1:
            raise ValueError(f"VQVAEConfig.prior_dropout must be in [0, 1), got {self.prior_dropout}")
        factor = 2 ** (len(self.channels) - 1)
        if self.image_shape[1] % factor or self.image_shape[2] % factor:
            raise ValueError(f"VQVAEConfig: image height and width {self.image_shape[1:]} must be divisible by "
                             f"2^(len(channels) - 1) = {factor} (channels={self.channels})")

    @property
    def code_shape(self) -> tuple[int, int]:
        """(h, w) of a code map."""
        factor = 2 ** (len(self.channels) - 1)
        return self.image_shape[1] // factor, self.image_shape[2] // factor


# ---- networks -----------------------------------------------------------------------------------
class _ResBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def _encoder(config: VQVAEConfig) -> nn.Sequential:
    widths = config.channels
    layers = [nn.Conv2d(config.image_shape[0], widths[0], 3, padding=1), nn.ReLU()]
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]  # halves H, W
    layers += [_ResBlock(widths[-1]) for _ in range(config.res_blocks)]
    layers += [nn.ReLU(), nn.Conv2d(widths[-1], config.code_dim, 1)]
    return nn.Sequential(*layers)  # (N, C, H, W) -> (N, D, h, w)


def _decoder(config: VQVAEConfig) -> nn.Sequential:
    widths = config.channels[::-1]
    layers: list[nn.Module] = [nn.Conv2d(config.code_dim, widths[0], 3, padding=1)]
    layers += [_ResBlock(widths[0]) for _ in range(config.res_blocks)]
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        layers += [nn.ReLU(), nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)]  # doubles H, W
    layers += [nn.ReLU(), nn.Conv2d(widths[-1], config.image_shape[0], 3, padding=1)]
    return nn.Sequential(*layers)  # (N, D, h, w) -> (N, C, H, W)


class _CodeEmbedding(nn.Embedding):
    """The prior's input layer: code indices (N, 1, h, w), held as floats by the PixelCNN, ->
    (N, width, h, w) learned vectors. Per position, so causality still rests on the masked layers."""

    def forward(self, codes: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(codes[:, 0].round().long()).movedim(-1, 1)


class CodePrior(PixelCNN):
    """A categorical PixelCNN over code maps (1, h, w) with K codes and a code-embedding input."""

    def __init__(self, config: PixelCNNConfig):
        super().__init__(config)
        self.embed = _CodeEmbedding(config.num_levels, config.widths[0])

    def forward(self, levels: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (N, K, 1, h, w) float32 for code maps (N, 1, h, w) int64; position i sees codes < i."""
        return self.network(levels.float(), labels)


# ---- the model ----------------------------------------------------------------------------------
class VQVAE(ImageGenerativeModel):
    """VQ-VAE with a PixelCNN prior over its code maps; see the module docstring."""

    name = "vqvae"
    config_class = VQVAEConfig
    default_data = "digits"
    # the trainer's weight EMA would average the codebook across restarts and give the prior codes of
    # an encoder it never saw: off (the codebook has its own EMA)
    train_defaults = {"steps": 1500, "lr": 2e-3, "batch_size": 64, "ema_decay": 0.0, "eval_every": 250,
                      "weight_decay": 0.0}
    metric_units = {"loss": "MSE/pixel + commitment", "mse": "per pixel", "prior_loss": "bits/code",
                    "psnr_db": "dB", "prior_bits_per_image": "bits/image", "uniform_bits_per_image": "bits/image"}

    def __init__(self, config: VQVAEConfig | None = None):
        super().__init__(config if config is not None else VQVAEConfig())
        config = self.config
        self.encoder = _encoder(config)
        self.quantizer = VectorQuantizer(config.num_codes, config.code_dim, decay=config.decay,
                                         commitment=config.commitment, restart_dead=config.restart_dead,
                                         dead_threshold=config.dead_threshold)
        self.decoder = _decoder(config)
        self.prior = CodePrior(PixelCNNConfig(
            image_shape=(1, *config.code_shape), num_levels=config.num_codes, channels=config.prior_channels,
            num_layers=config.prior_layers, kernel_size=3, first_kernel_size=5, head_channels=2 * config.prior_channels,
            likelihood="categorical", dropout=config.prior_dropout, color_groups=False))
        self._figure_images: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.decoder[0].weight.device

    @property
    def num_pixels(self) -> int:
        return math.prod(self.config.image_shape)

    @property
    def codes_per_image(self) -> int:
        return math.prod(self.config.code_shape)

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        autoencoder = [p for m in (self.encoder, self.decoder) for p in m.parameters()]
        return {"autoencoder": autoencoder, "prior": list(self.prior.parameters())}

    # -- data -------------------------------------------------------------------------------------
    def images(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Images (N, C, H, W) float32 in [0, 1]: float data as is (clamped), integer levels / (L - 1)."""
        return self._to_images(self._levels(x, name)) if not (isinstance(x, torch.Tensor) and x.is_floating_point()) \
            else self._checked_float(x, name)

    def _checked_float(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.config.image_shape):
            raise ValueError(f"{name} must have shape (N, {', '.join(map(str, self.config.image_shape))}), "
                             f"got {tuple(x.shape)}")
        return x.float().clamp(0, 1)

    @staticmethod
    def _images_of(batch) -> torch.Tensor:
        return batch[0] if isinstance(batch, (tuple, list)) else batch

    # -- encoder / decoder ------------------------------------------------------------------------
    def encode_continuous(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder outputs z_e (N, D, h, w) for images x (see `images`)."""
        return self.encoder(self.images(x) - 0.5)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Code maps (N, h, w) int64 of images x."""
        return self.quantizer.nearest(self.encode_continuous(x))

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Decoded images (N, C, H, W) float32, clamped to [0, 1], for code maps (N, h, w)."""
        if codes.ndim != 3 or tuple(codes.shape[1:]) != self.config.code_shape:
            raise ValueError(f"codes must have shape (N, *{self.config.code_shape}), got {tuple(codes.shape)}")
        return self.decoder(self.quantizer.lookup(codes.to(self.device))).float().clamp(0, 1)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [0, 1] decoded from the code maps of x."""
        return self.decode_codes(self.encode(x))

    # -- prior ------------------------------------------------------------------------------------
    def prior_logits(self, codes: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, h, w) float32: those at position i depend on the codes before i only."""
        return self.prior(codes.long().unsqueeze(1))[:, :, 0]

    def prior_nll(self, codes: torch.Tensor) -> torch.Tensor:
        """-log p(codes) per code map in nats, (N,)."""
        return F.cross_entropy(self.prior_logits(codes), codes.long(), reduction="none").flatten(1).sum(1)

    @torch.no_grad()
    def sample_codes(self, n: int, temperature: float = 1.0, seed: int | None = None) -> torch.Tensor:
        """n code maps (n, h, w) int64 drawn from the prior, position by position."""
        check_int("n", n, 1)
        temperature = check_real("temperature", temperature, 0.0)
        generator = self.prior._generator(seed)
        shape = (n, 1, *self.config.code_shape)
        levels = torch.zeros(shape, dtype=torch.long, device=self.device)
        unknown = torch.ones(shape, dtype=torch.bool, device=self.device)
        return self.prior._fill(levels, unknown, None, temperature, generator)[:, 0]

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, seed: int | None = None) -> torch.Tensor:
        """n images (n, C, H, W) float32 in [0, 1]: code maps from the prior, decoded."""
        return self.decode_codes(self.sample_codes(n, temperature, seed))

    # -- training ---------------------------------------------------------------------------------
    def _autoencoder_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        images = self.images(x)
        quantized, _, stats = self.quantizer(self.encoder(images - 0.5))
        mse = (self.decoder(quantized).float() - images).pow(2).mean()
        return {"loss": mse + stats["commitment"], "mse": mse.detach(), "commitment": stats["commitment"].detach(),
                "perplexity": stats["perplexity"], "usage": stats["usage"]}

    def _prior_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            codes = self.quantizer.nearest(self.encode_continuous(x))
        return {"loss": self.prior_nll(codes).mean() / (self.codes_per_image * math.log(2))}

    def loss(self, batch, group: str | None = None) -> dict[str, torch.Tensor]:
        """group "autoencoder": {"loss": MSE + commitment, "mse", "commitment", "perplexity",
        "usage"}; group "prior": {"loss": prior NLL in bits/code}; None: both, "loss" their sum and
        "prior_loss" the prior's."""
        x = self._images_of(batch)
        if group == "autoencoder":
            return self._autoencoder_loss(x)
        if group == "prior":
            return self._prior_loss(x)
        if group is not None:
            raise ValueError(f"VQVAE.loss: group must be 'autoencoder', 'prior' or None, got {group!r}")
        losses = self._autoencoder_loss(x)
        prior = self._prior_loss(x)["loss"]
        return {**losses, "loss": losses["loss"] + prior, "prior_loss": prior}

    @torch.no_grad()
    def _dataset_codes(self, dataset) -> torch.Tensor:
        """Code maps (N, h, w) of every image of `dataset`, in eval mode."""
        self.eval()
        codes = []
        for start in range(0, len(dataset), 256):
            x = torch.stack([self._images_of(dataset[i]) for i in range(start, min(len(dataset), start + 256))])
            codes.append(self.encode(x.to(self.device)))
        return torch.cat(codes)

    def fit_prior(self, dataset, steps: int, *, val_dataset=None, eval_every: int = 50, batch_size: int = 64,
                  lr: float = 1e-3, seed: int = 0) -> dict[str, Any]:
        """Train the prior alone (AdamW, cosine decay) on the code maps of `dataset` under the current
        (frozen) encoder and codebook: the classic second stage. With `val_dataset` the prior's NLL of
        its code maps is measured before training and every `eval_every` steps, and the best prior
        is kept (the prior overfits the 1,000 training digits within a few hundred steps).

        Returns {"train": loss (bits/code) of every step, "val": [(step, bits/code)], "best_step"}
        (best_step None without val_dataset); leaves the model in eval mode."""
        check_int("steps", steps, 1)
        check_int("batch_size", batch_size, 1)
        check_int("eval_every", eval_every, 1)
        lr = check_real("lr", lr, 0.0)
        generator = torch.Generator().manual_seed(check_int("seed", seed, 0))
        codes = self._dataset_codes(dataset)
        val_codes = self._dataset_codes(val_dataset) if val_dataset is not None else None
        scale = self.codes_per_image * math.log(2)
        history: dict[str, Any] = {"train": [], "val": [], "best_step": None}
        best = (math.inf, None)

        def validate(step: int):
            nonlocal best
            self.prior.eval()
            with torch.no_grad():
                bits = float(torch.cat([self.prior_nll(val_codes[i: i + 256])
                                        for i in range(0, len(val_codes), 256)]).mean() / scale)
            history["val"].append((step, bits))
            if bits < best[0]:
                best = (bits, {k: v.detach().clone() for k, v in self.prior.state_dict().items()})
                history["best_step"] = step
            self.prior.train()

        optimizer = torch.optim.AdamW(self.prior.parameters(), lr=lr, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr * 0.1)
        self.prior.train()
        if val_codes is not None:
            validate(0)
        for step in range(1, steps + 1):
            index = torch.randint(0, codes.shape[0], (batch_size,), generator=generator)
            loss = self.prior_nll(codes[index.to(codes.device)]).mean() / scale
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            history["train"].append(float(loss.detach()))
            if val_codes is not None and (step % eval_every == 0 or step == steps):
                validate(step)
        if best[1] is not None:
            self.prior.load_state_dict(best[1])
        self.eval()
        return history

    # -- evaluation and figures -------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, dataset, *, max_items: int | None = None, batch_size: int = 256) -> dict[str, float]:
        """Reconstruction MSE and PSNR (dB, mean over images), codebook usage (fraction of the K codes
        in the held-out code maps) and perplexity, the prior's NLL of the held-out code maps in bits
        per image (and per code) beside the uniform h w log2 K. Keeps 16 images for `figures`."""
        from genkernels.metrics.image_quality import psnr

        count = evaluation_count(dataset, max_items, batch_size)
        images, recons, codes = [], [], []
        nll = []
        for start in range(0, count, batch_size):
            x = torch.stack([self._images_of(dataset[i]) for i in range(start, min(count, start + batch_size))])
            x = self.images(x.to(self.device))
            c = self.encode(x)
            images.append(x.cpu())
            recons.append(self.decode_codes(c).cpu())
            codes.append(c.cpu())
            nll.append(self.prior_nll(c).cpu())
        images, recons, codes, nll = (torch.cat(t) for t in (images, recons, codes, nll))
        self._figure_images = images[:16]
        histogram = torch.bincount(codes.flatten(), minlength=self.config.num_codes).double()
        probs = histogram / histogram.sum()
        entropy = -(probs * probs.clamp_min(1e-300).log()).sum()
        bits = nll.double() / math.log(2)
        return {
            "mse": float((recons.double() - images.double()).pow(2).mean()),
            "psnr_db": psnr(recons, images),
            "codebook_usage": float((histogram > 0).double().mean()),
            "perplexity": float(entropy.exp()),
            "prior_bits_per_image": float(bits.mean()),
            "prior_bits_per_code": float(bits.mean() / self.codes_per_image),
            "uniform_bits_per_image": self.codes_per_image * math.log2(self.config.num_codes),
        }

    @torch.no_grad()
    def figures(self, samples: torch.Tensor, *, nrow: int | None = None) -> dict[str, Any]:
        """{"samples": grid, "reconstructions": rows alternate inputs and their decoded code maps}."""
        from genkernels.figures import image_grid

        figures = {"samples": image_grid(samples.float().cpu().clamp(0, 1), nrow or 8)}
        inputs = self._figure_images if self._figure_images is not None else samples[:16].float().cpu()
        columns = min(8, inputs.shape[0])
        kept = inputs[: inputs.shape[0] // columns * columns]
        shape = kept.shape[1:]
        recon = self.reconstruct(kept.to(self.device)).cpu()
        rows = torch.stack([kept.view(-1, columns, *shape), recon.view(-1, columns, *shape)], 1)
        figures["reconstructions"] = image_grid(rows.reshape(-1, *shape), columns,
                                                row_labels=["input", "recon."] * rows.shape[0])
        return figures


__all__ = ["VQVAE", "VQVAEConfig", "CodePrior"]
