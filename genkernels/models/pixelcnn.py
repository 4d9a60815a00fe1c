"""Gated PixelCNN (van den Oord et al. 2016): an exact autoregressive likelihood over image levels.

    log p(x) = sum_i log p(x_i | x_<i),   i over the pixels in raster order (row by row)

The network is a stack of `genkernels.nn.GatedMaskedConv2d` layers, each with a vertical stack
(rows above) and a horizontal stack (pixels to the left on the same row) that together see every
earlier pixel and no later one (no blind spot). The first layer uses mask "A" (the horizontal
stack excludes the current pixel), the others mask "B". A 1x1 head turns the horizontal stack into
the parameters of an output head of genkernels.nn.likelihoods over the data's L levels:

  categorical  a softmax over the L levels per pixel (the original PixelCNN's head)
  logistic     discretised logistic per pixel (PixelCNN++, one component)
  logistic_mixture  a mixture of `num_mixtures` discretised logistics per pixel (PixelCNN++)

RGB images (C = 3) are modelled with colour groups by default (`color_groups`): every feature map
is split into R, G, B thirds, and at the current pixel group g sees only the colours before it
(genkernels.nn.GatedMaskedConv2d(color_groups=3); the 1x1 embedding and head are colour-masked
too), so the head's parameters for channel c depend on channels < c of the pixel:

    p(x_i | x_<i) = p(R_i | x_<i) p(G_i | R_i, x_<i) p(B_i | R_i, G_i, x_<i)

and sampling draws R, G, B of a pixel in turn. With color_groups=False (or C != 3) the channels of
one pixel are modelled independently given the earlier pixels (prod_c p(x_ic | x_<i)).

Optional class conditioning (num_classes > 0): a learned class embedding enters every gated layer
as a per-sample bias. Dropout on the horizontal stack regularises: the 1,000 training digits are
overfit within a few hundred steps without it (see issue 9).

Units: `loss` returns {"loss": NLL in bits per dimension (batch mean)}; `log_prob` is per item in
nats. `sample` and `inpaint` generate pixel by pixel. The naive sampler recomputes the whole image
for every pixel; the windowed one (the default) recomputes only the rows that can reach the current
row: output row i depends on input rows i - R .. i alone, R = first_kernel_size // 2 + (num_layers
- 1) * (kernel_size // 2) (`receptive_rows`), so the network runs on that band of rows. It is exact
(the zero padding at the band's top edge reaches no output of row i) and costs (R + 1) / H of a full
pass: the same samples as naive sampling from the same random stream, 3.6x faster at 32x32. Colour
groups change only the centre tap, so R is the same; each pixel then takes C passes, one per
colour.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from genkernels.models._validate import (check_bool, check_choice, check_int,
                                          check_int_tuple, check_real, class_labels, evaluation_count)
from genkernels.models.base import ImageGenerativeModel
from genkernels.nn.likelihoods import DiscreteLikelihood, get_likelihood
from genkernels.nn.masked_conv import GatedMaskedConv2d, MaskedConv2d

PIXELCNN_LIKELIHOODS = ("categorical", "logistic", "logistic_mixture")


@dataclasses.dataclass
class PixelCNNConfig:
    """image_shape        (C, H, W) of the data
    num_levels         discrete levels per pixel L (17 for the digits)
    channels           width of the vertical and horizontal stacks
    num_layers         gated layers (the first with mask "A", the rest mask "B")
    kernel_size        odd kernel size of the mask-"B" layers
    first_kernel_size  odd kernel size of the first (mask "A") layer
    head_channels      width of the 1x1 output head
    likelihood         "categorical", "logistic" or "logistic_mixture" (see the module docstring)
    num_mixtures       mixture components K of "logistic_mixture" (unused by the other heads)
    num_classes        classes for conditioning; 0: unconditional
    dropout            dropout probability on the horizontal stack and in the head (training only)
    color_groups       order the colours inside a pixel, R -> G -> B (module docstring); None: on for
                       3-channel images. With colour groups the stack and head widths are channels
                       and head_channels rounded up to multiples of 3 (32 -> 33, 64 -> 66)
    """

    image_shape: tuple[int, int, int] = (1, 8, 8)
    num_levels: int = 17
    channels: int = 32
    num_layers: int = 5
    kernel_size: int = 3
    first_kernel_size: int = 5
    head_channels: int = 64
    likelihood: str = "categorical"
    num_classes: int = 0
    dropout: float = 0.2
    num_mixtures: int = 5
    color_groups: bool | None = None

    def __post_init__(self):
        self.image_shape = check_int_tuple("PixelCNNConfig.image_shape", self.image_shape, length=3)
        self.num_levels = check_int("PixelCNNConfig.num_levels", self.num_levels, 2)
        for name in ("channels", "num_layers", "kernel_size", "first_kernel_size", "head_channels"):
            setattr(self, name, check_int(f"PixelCNNConfig.{name}", getattr(self, name), 1))
        for name in ("kernel_size", "first_kernel_size"):
            if getattr(self, name) % 2 == 0:
                raise ValueError(f"PixelCNNConfig.{name} must be odd (the masks are centred on the "
                                 f"pixel), got {getattr(self, name)}")
        if self.first_kernel_size < 3:
            raise ValueError(f"PixelCNNConfig.first_kernel_size must be >= 3: a 1x1 mask-A layer sees no "
                             f"earlier pixel, got {self.first_kernel_size}")
        self.likelihood = check_choice("PixelCNNConfig.likelihood", self.likelihood, PIXELCNN_LIKELIHOODS)
        self.num_classes = check_int("PixelCNNConfig.num_classes", self.num_classes, 0)
        self.num_mixtures = check_int("PixelCNNConfig.num_mixtures", self.num_mixtures, 1)
        self.dropout = check_real("PixelCNNConfig.dropout", self.dropout, 0.0)
        if self.dropout >= 1:
            raise ValueError(f"PixelCNNConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.color_groups is not None:
            self.color_groups = check_bool("PixelCNNConfig.color_groups", self.color_groups)
            if self.color_groups and self.image_shape[0] != 3:
                raise ValueError(f"PixelCNNConfig.color_groups=True needs 3-channel (RGB) images, got "
                                 f"image_shape {self.image_shape}")

    @property
    def groups(self) -> int:
        """Colour groups of the network: 3 for RGB images unless color_groups=False, else 1."""
        on = self.image_shape[0] == 3 if self.color_groups is None else self.color_groups
        return 3 if on else 1

    @property
    def widths(self) -> tuple[int, int]:
        """(stack, head) widths: channels and head_channels, rounded up to multiples of the groups."""
        g = self.groups
        return -(-self.channels // g) * g, -(-self.head_channels // g) * g

    @property
    def params_per_channel(self) -> int:
        return self.make_likelihood().params_per_channel

    def make_likelihood(self) -> DiscreteLikelihood:
        """The output head over num_levels (with num_mixtures for "logistic_mixture")."""
        mixtures = self.num_mixtures if self.likelihood == "logistic_mixture" else None
        return get_likelihood(self.likelihood, self.num_levels, mixtures)


class PixelCNN(ImageGenerativeModel):
    """Gated PixelCNN over discrete-level images; see the module docstring."""

    name = "pixelcnn"
    config_class = PixelCNNConfig
    default_data = "digits-levels"
    # The 1,000 training digits are overfit after about 700 steps at this size (held-out bits/dim rise
    # again): evaluate often, keep the best checkpoint (TrainConfig.keep_best) and stop 3 evaluations
    # after it.
    train_defaults = {"steps": 1500, "lr": 2e-3, "weight_decay": 0.05, "batch_size": 64, "eval_every": 100,
                      "patience": 3}
    metric_units = {"loss": "bits/dim", "nll_bpd": "bits/dim", "uniform_bpd": "bits/dim"}
    data_hint = "use --data digits-levels or a folder of images"

    def __init__(self, config: PixelCNNConfig | None = None):
        super().__init__(config if config is not None else PixelCNNConfig())
        config = self.config
        c, groups = config.image_shape[0], config.groups
        width, head_width = config.widths
        self.likelihood: DiscreteLikelihood = config.make_likelihood()
        cond = width if config.num_classes else None
        self.class_embedding = nn.Embedding(config.num_classes, width) if config.num_classes else None
        # 1x1: each position sees only its own pixel, so causality rests on the masked layers. With
        # colour groups every 1x1 map is mask "B": group g of its output sees groups <= g (the
        # embedding's group g reads colours <= g, the mask-A layer then keeps only groups < g)
        self.embed = self._pointwise(c, width)
        self.layers = nn.ModuleList(
            [GatedMaskedConv2d(width, config.first_kernel_size, "A", cond, groups)]
            + [GatedMaskedConv2d(width, config.kernel_size, "B", cond, groups) for _ in range(config.num_layers - 1)])
        self.dropout = nn.Dropout(config.dropout)
        # the last map's outputs: (P, C) without colour groups, (C, P) with them (grouped by colour)
        self.head = nn.Sequential(nn.ReLU(), self._pointwise(width, head_width), nn.ReLU(),
                                  nn.Dropout(config.dropout),
                                  self._pointwise(head_width, config.params_per_channel * c))
        self._figure_images: torch.Tensor | None = None  # held-out levels kept by evaluate()
        self._figure_labels: torch.Tensor | None = None

    def _pointwise(self, in_channels: int, out_channels: int) -> nn.Conv2d:
        """A 1x1 convolution; with colour groups masked so that output group g sees input groups
        <= g (same state dict keys as nn.Conv2d)."""
        if self.config.groups == 1:
            return nn.Conv2d(in_channels, out_channels, 1)
        return MaskedConv2d(in_channels, out_channels, 1, "B", color_groups=self.config.groups)

    @property
    def num_dims(self) -> int:
        return math.prod(self.config.image_shape)

    @property
    def receptive_rows(self) -> int:
        """R: output row i depends on input rows i - R .. i only (vertical stacks: the first layer
        reaches first_kernel_size // 2 rows up, each later one kernel_size // 2 more)."""
        config = self.config
        return config.first_kernel_size // 2 + (config.num_layers - 1) * (config.kernel_size // 2)

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def _labels(self, labels, n: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """Class indices (n,) int64 on the model's device, or None for an unconditional model."""
        return class_labels(labels, n, self.config.num_classes, model="PixelCNN", device=self.device,
                            generator=generator)

    def _batch(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(levels, labels or None) from a collated batch: images, or (images, labels)."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        labels = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        levels = self._levels(images)
        if self.config.num_classes and labels is None:
            raise ValueError("this PixelCNN is class-conditional (num_classes > 0) but the data has no labels")
        return levels, self._labels(labels, levels.shape[0]) if self.config.num_classes else None

    # -- the network ------------------------------------------------------------------------------
    def forward(self, levels: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Head parameters (N, P, C, H, W) float32: those at pixel i depend on pixels < i only."""
        return self.network(self._to_images(levels) * 2 - 1, labels)

    def network(self, inputs: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Head parameters (N, P, C, H, W) float32 for float inputs (N, C, H, W) (levels mapped
        onto [-1, 1]); differentiable in the inputs, which is how the causality tests probe it."""
        n, c, h, w = inputs.shape
        cond = self.class_embedding(labels) if self.class_embedding is not None and labels is not None else None
        v = hs = self.embed(inputs)  # (N, channels, H, W)
        for layer in self.layers:
            v, hs = layer(v, hs, cond)
            hs = self.dropout(hs)
        params = self.head(hs).float()  # (N, P C, H, W)
        if self.config.groups > 1:
            return params.view(n, c, self.config.params_per_channel, h, w).transpose(1, 2)  # (N, P, C, H, W)
        return params.view(n, self.config.params_per_channel, c, h, w)

    def log_prob(self, x: torch.Tensor, labels=None) -> torch.Tensor:
        """Exact log p(x) per item in nats, (N,) (log p(x | label) for a conditional model)."""
        levels = self._levels(x)
        if self.config.num_classes and labels is None:
            raise ValueError("this PixelCNN is class-conditional (num_classes > 0): pass labels")
        labels = self._labels(labels, levels.shape[0])
        return -self.likelihood.nll(self(levels, labels), levels)

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """{"loss": NLL in bits per dimension, batch mean}."""
        levels, labels = self._batch(batch)
        nll = self.likelihood.nll(self(levels, labels), levels)  # (N,) nats
        return {"loss": nll.mean() / (self.num_dims * math.log(2))}

    # -- generation -------------------------------------------------------------------------------
    def _draw(self, params: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
        """Levels (N, C) drawn from head parameters (N, P, C) of one pixel, at `temperature`.

        Temperature 0 is the mode (categorical) or the location (logistic; the most likely
        component's for logistic_mixture)."""
        top = self.config.num_levels - 1
        if self.config.likelihood == "categorical":
            logits = params.movedim(1, -1)  # (N, C, L)
            if temperature == 0:
                return logits.argmax(-1)
            probs = (logits / temperature).softmax(-1).reshape(-1, logits.shape[-1])
            return torch.multinomial(probs, 1, generator=generator).view(logits.shape[:-1])
        if self.config.likelihood == "logistic_mixture":
            return self.likelihood.draw(params, temperature, generator)
        mean, log_scale = self.likelihood.location_and_log_scale(params)  # (N, C) each
        u = torch.rand(mean.shape, generator=generator, device=mean.device).clamp(1e-5, 1 - 1e-5)
        x = mean + temperature * torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))  # inverse CDF
        return (((x + 1) / 2) * top).round().clamp(0, top).long()

    def _generator(self, seed: int | None) -> torch.Generator:
        """A generator on the model's device: seeded by `seed`, else from the global torch RNG (so
        torch.manual_seed / `genkernels sample --seed` fix the samples too)."""
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        else:
            seed = check_int("seed", seed, 0)
        return torch.Generator(device=self.device).manual_seed(seed)

    @torch.no_grad()
    def _fill(self, levels: torch.Tensor, unknown: torch.Tensor, labels: torch.Tensor | None,
              temperature: float, generator: torch.Generator, windowed: bool = True) -> torch.Tensor:
        """Draw the `unknown` entries (N, C, H, W bool) of `levels` in raster order; keep the rest.

        Each pixel's channels are drawn together from one pass, or (colour groups) one channel per
        pass, R then G then B, each given the channels before it. windowed: run the network on rows
        i - R .. i only (see the module docstring), else on the whole image."""
        _, channels, height, width = levels.shape
        steps = [[ch] for ch in range(channels)] if self.config.groups > 1 else [list(range(channels))]
        levels = levels.clone()
        for i in range(height):
            top = max(0, i - self.receptive_rows) if windowed else 0
            for j in range(width):
                for step in steps:
                    todo = unknown[:, step, i, j]  # (N, channels of this step)
                    if not bool(todo.any()):
                        continue
                    band = levels[:, :, top: i + 1] if windowed else levels  # (N, C, rows, W)
                    params = self(band, labels)[:, :, step, i - top, j]  # (N, P, channels of this step)
                    drawn = self._draw(params, temperature, generator)
                    levels[:, step, i, j] = torch.where(todo, drawn, levels[:, step, i, j])
        return levels

    @torch.no_grad()
    def sample(self, n: int, labels=None, temperature: float = 1.0, seed: int | None = None,
               windowed: bool = True) -> torch.Tensor:
        """n images (n, C, H, W) float32 in [0, 1] (level / (L - 1)), drawn pixel by pixel.

        labels       class-conditional models: an int (one class for all), a sequence of n ints, or
                     None (random classes); unconditional models take None only
        temperature  >= 0; scales the logits (categorical) or the logistic scale; 0 is greedy
        seed         seeds the draws (same seed, same samples); None draws from the global RNG
        windowed     recompute only the rows that reach the current one (default), else the whole
                     image for every pixel (naive); both give the same samples
        """
        check_int("n", n, 1)
        check_bool("windowed", windowed)
        temperature = check_real("temperature", temperature, 0.0)
        generator = self._generator(seed)
        labels = self._labels(labels, n, generator)
        shape = (n, *self.config.image_shape)
        levels = torch.zeros(shape, dtype=torch.long, device=self.device)
        unknown = torch.ones(shape, dtype=torch.bool, device=self.device)
        return self._to_images(self._fill(levels, unknown, labels, temperature, generator, windowed))

    @torch.no_grad()
    def inpaint(self, x: torch.Tensor, mask: torch.Tensor, labels=None, temperature: float = 1.0,
                seed: int | None = None) -> torch.Tensor:
        """Fill the unknown pixels of x and keep the known ones exactly.

        x     (N, C, H, W) images: float in [0, 1] or int levels
        mask  bool, True where a pixel is known; (N or 1, C or 1, H, W), broadcast to x
        Returns (N, C, H, W) float32 in [0, 1]. The unknown pixels are drawn in raster order, each
        given every pixel before it (known or already drawn); a known pixel after an unknown one
        cannot inform it (the model sees only the past), so a known top half is the natural case.
        """
        levels = self._levels(x)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = known pixel), got "
                            f"{mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__}")
        try:
            known = torch.broadcast_to(mask.to(self.device), levels.shape)
        except RuntimeError as error:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to x's "
                             f"{tuple(levels.shape)}") from error
        temperature = check_real("temperature", temperature, 0.0)
        generator = self._generator(seed)
        labels = self._labels(labels, levels.shape[0], generator)
        filled = self._fill(levels.to(self.device), ~known, labels, temperature, generator)
        return self._to_images(filled)

    # -- evaluation and figures -------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, dataset, *, max_items: int | None = None, batch_size: int = 128) -> dict[str, float]:
        """Exact held-out NLL in bits/dim ("nll_bpd") beside the uniform bound log2(L)
        ("uniform_bpd", 4.09 for 17 levels). Keeps 16 of its images for `figures`."""
        from genkernels.metrics import bits_per_dim

        count = evaluation_count(dataset, max_items, batch_size)
        nll_all = []
        for start in range(0, count, batch_size):
            items = [dataset[i] for i in range(start, min(count, start + batch_size))]
            images = torch.stack([item[0] if isinstance(item, (tuple, list)) else item for item in items])
            labels = (torch.as_tensor([int(item[1]) for item in items])
                      if self.config.num_classes and isinstance(items[0], (tuple, list)) else None)
            levels, labels = self._batch((images.to(self.device), labels) if labels is not None
                                         else images.to(self.device))
            nll_all.append(self.likelihood.nll(self(levels, labels), levels))
            if start == 0:
                self._figure_images = levels[:16].cpu()
                self._figure_labels = None if labels is None else labels[:16].cpu()
        return {"nll_bpd": bits_per_dim(torch.cat(nll_all), self.num_dims),
                "uniform_bpd": math.log2(self.config.num_levels)}

    @torch.no_grad()
    def figures(self, samples: torch.Tensor, *, nrow: int | None = None) -> dict[str, Any]:
        """{"samples": grid, "inpainting": per group of 8 images, rows "given" (top half; bottom
        blanked), "sampled" (bottom half drawn by the model, seed 0) and "original"}, PIL images.
        The inputs are the held-out images kept by the last `evaluate`, else the given samples."""
        from genkernels.figures import image_grid

        figures = {"samples": image_grid(samples.float().cpu().clamp(0, 1), nrow or 8)}
        if self._figure_images is not None:
            inputs, labels = self._figure_images, self._figure_labels
        else:
            inputs, labels = self._levels(samples[:16].float().cpu()), None
        columns = min(8, inputs.shape[0])
        inputs = inputs[: inputs.shape[0] // columns * columns].to(self.device)
        if labels is not None:
            labels = labels[: inputs.shape[0]]
        elif self.config.num_classes:  # generated inputs have no labels: inpaint as class 0..
            labels = torch.arange(inputs.shape[0]) % self.config.num_classes
        height = self.config.image_shape[1]
        mask = torch.zeros(1, 1, *self.config.image_shape[1:], dtype=torch.bool)
        mask[:, :, : height // 2] = True  # the top half is given
        completed = self.inpaint(inputs, mask, labels=labels, seed=0)
        original = self._to_images(inputs)
        given = torch.where(mask.to(original.device), original, torch.full_like(original, 0.5))
        shape = original.shape[1:]
        # (R, 3, columns, C, H, W): each row of inputs as given / sampled / original
        rows = torch.stack([t.view(-1, columns, *shape) for t in (given, completed, original)], 1)
        figures["inpainting"] = image_grid(rows.reshape(-1, *shape).cpu(), columns,
                                           row_labels=["given", "sampled", "original"] * rows.shape[0])
        return figures


__all__ = ["PixelCNN", "PixelCNNConfig", "PIXELCNN_LIKELIHOODS"]
