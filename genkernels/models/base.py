"""The protocol every model family implements; the trainer, CLI and metrics rely only on it."""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, ClassVar

import torch
from torch import nn

from genkernels.models._validate import check_int


class GenerativeModel(nn.Module):
    """Base class of the model zoo.

    Subclasses set the class attributes and implement `loss` and `sample`; `log_prob` where the
    family has an exact likelihood or a bound; `evaluate` for family metrics on held-out data.

    name            registry key used by the CLI, e.g. "vae"
    config_class    the family's @dataclass config; `model.config` holds the instance
    default_data    data name the CLI uses when --data is not given, e.g. "digits"
    train_defaults  TrainConfig fields this family wants unless the user sets them, e.g.
                    {"lr": 2e-4, "betas": (0.5, 0.999)} for a GAN (the CLI applies them)
    data_kinds      dataset kinds (genkernels.data: "image", "points", "text", ...) the family
                    trains on; empty: any
    metric_units    unit of each logged loss / metric name, for plots, e.g. {"loss": "nats/dim"}
    reports_validation_loss
                    whether `loss` on held-out data (with the EMA weights) means something; a GAN's
                    discriminator loss does not, so it reports `evaluate` metrics alone

    Fitting to data: `config_for_data(dataset, overrides)` builds the config for a dataset (an
    image family reads the image shape from it), so the CLI needs no per-family code.

    Optimisation. `optimizer_groups()` names the parameter groups, each of which gets its own
    AdamW (same learning-rate schedule). With one group (the default, "model") the trainer calls
    `loss(batch)` once per step. With several groups, e.g. a GAN's {"discriminator": [...],
    "generator": [...]}, the trainer calls `loss(batch, group=name)` once per group per step, in
    the dict's order; after each call it zeroes every gradient, back-propagates the first entry
    of the returned dict and steps only that group's optimizer. So a group's loss may reach other
    groups' parameters (the generator loss flows through the discriminator): their gradients
    are discarded.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    default_data: ClassVar[str] = "digits"
    train_defaults: ClassVar[dict[str, Any]] = {}
    data_kinds: ClassVar[tuple[str, ...]] = ()
    metric_units: ClassVar[dict[str, str]] = {}
    reports_validation_loss: ClassVar[bool] = True
    # True when evaluate() already returns the mean validation "loss" (the CLI's eval then skips its
    # own pass over the split for the losses)
    evaluate_reports_loss: ClassVar[bool] = False

    def __init__(self, config):
        super().__init__()
        if dataclasses.is_dataclass(self.config_class) and not isinstance(config, self.config_class):
            raise TypeError(f"config must be a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    # -- training -------------------------------------------------------------------------
    def loss(self, batch) -> dict[str, torch.Tensor]:
        """Losses for one collated batch; the first entry is the one optimised.

        Multi-group models (see `optimizer_groups`) take `loss(batch, group=name)` instead.
        """
        raise NotImplementedError

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameter groups, each optimised by its own AdamW, stepped in this order.

        The groups must be disjoint and cover the trainable parameters. Override it (with
        `loss(batch, group=name)`) for alternating objectives such as a GAN's.
        """
        return {"model": [p for p in self.parameters() if p.requires_grad]}

    # -- generation / evaluation ----------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, **conditions) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def sample_conditions(cls) -> list[str]:
        """The keywords `sample` takes besides n (what `genkernels sample --condition` accepts; a
        catch-all **kwargs is not listed, so name each keyword a family supports)."""
        parameters = list(inspect.signature(cls.sample).parameters.values())[2:]  # self, n
        return [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no tractable log-likelihood")

    @torch.no_grad()
    def evaluate(self, dataset, *, max_items: int | None = None) -> dict[str, float]:
        """Family metrics on a held-out dataset (a torch Dataset from genkernels.data)."""
        return {}

    @torch.no_grad()
    def figures(self, samples: torch.Tensor, *, nrow: int | None = None) -> dict[str, Any]:
        """Figures of the family, {name: figure}; the caller writes them (genkernels.figures.save_figures
        writes name.png). A figure is a PIL image, a matplotlib Figure or an image tensor.

        The default is the sample grid, {"samples": ...}, when the samples are images (N, 1|3, H, W)
        in [0, 1]; `nrow` is its number of columns. Families add their own (reconstructions, ...).
        """
        from genkernels.figures import image_grid

        if isinstance(samples, torch.Tensor) and samples.ndim == 4 and samples.shape[1] in (1, 3) and len(samples):
            return {"samples": image_grid(samples.float().cpu().clamp(0, 1), nrow)}
        return {}

    def sample_files(self, samples: torch.Tensor) -> dict[str, bytes]:
        """Non-image outputs of `sample`, {file name: bytes} (a WaveNet's samples.wav); the caller
        writes them beside the figures. None by default."""
        return {}

    # -- fitting to data -------------------------------------------------------------------
    @classmethod
    def check_data(cls, dataset, data_name: str | None = None) -> None:
        """Raise ValueError when the family cannot train on `dataset` (its `kind` is not in data_kinds)."""
        kind = getattr(dataset, "kind", None)
        if cls.data_kinds and kind not in cls.data_kinds:
            name = f"data {str(data_name)!r}" if data_name is not None else "the data"
            raise ValueError(f"{cls.name} trains on {' or '.join(cls.data_kinds)} data, but {name} is "
                             f"{kind or 'of no known kind'}")

    @classmethod
    def config_for_data(cls, dataset, overrides: dict[str, Any] | None = None, *,
                        data_name: str | None = None):
        """The family's config for `dataset`: `overrides` (config fields the user set) win over
        what the data implies. The default checks the data kind and uses the overrides alone."""
        cls.check_data(dataset, data_name)
        return cls.config_class(**dict(overrides or {}))

    def check_dataset(self, dataset, data_name: str | None = None) -> None:
        """Raise ValueError when this model (its config) cannot evaluate `dataset`."""
        self.check_data(dataset, data_name)

    # -- (de)serialisation of the config --------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    @classmethod
    def from_config_dict(cls, values: dict[str, Any]) -> "GenerativeModel":
        return cls(cls.config_class(**values))


class ImageGenerativeModel(GenerativeModel):
    """A family over images (N, C, H, W) whose config has `image_shape` (and maybe `num_levels`).

    `config_for_data` takes image_shape from the dataset's first item and, when the config has the
    field, num_levels from the dataset (256 for 8-bit image folders, 17 for the digits).
    """

    data_kinds: ClassVar[tuple[str, ...]] = ("image", "image-levels")
    data_hint: ClassVar[str] = "use --data digits or a folder of images"

    @classmethod
    def check_data(cls, dataset, data_name: str | None = None) -> None:
        kind = getattr(dataset, "kind", None)
        if kind not in cls.data_kinds:
            name = f"data {str(data_name)!r}" if data_name is not None else "the data"
            raise ValueError(f"{cls.name} trains on images, but {name} is {kind or 'not images'}; {cls.data_hint}")

    @staticmethod
    def _first_image(dataset) -> torch.Tensor:
        if len(dataset) == 0:
            raise ValueError("the dataset is empty")
        item = dataset[0]
        return item[0] if isinstance(item, (tuple, list)) else item

    @classmethod
    def config_for_data(cls, dataset, overrides: dict[str, Any] | None = None, *,
                        data_name: str | None = None):
        cls.check_data(dataset, data_name)
        values = dict(overrides or {})
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        values.setdefault("image_shape", tuple(int(s) for s in cls._first_image(dataset).shape))
        if "num_levels" in fields:
            values.setdefault("num_levels", int(getattr(dataset, "num_levels", 256)))
        return cls.config_class(**values)

    def check_dataset(self, dataset, data_name: str | None = None) -> None:
        self.check_data(dataset, data_name)
        shape = tuple(int(s) for s in self._first_image(dataset).shape)
        if shape != tuple(self.config.image_shape):
            name = f"data {str(data_name)!r}" if data_name is not None else "the data"
            raise ValueError(f"{name} has images of shape {shape}, but this {self.name} model was built "
                             f"for {tuple(self.config.image_shape)}")

    # -- data conversion (families over discrete levels: config.num_levels) -------------------
    def _levels(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Images as int64 levels (N, C, H, W): integer data as is, float data in [0, 1] rounded."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a tensor of images (N, *{self.config.image_shape}), "
                            f"got {type(x).__name__}")
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.config.image_shape):
            raise ValueError(f"{name} must have shape (N, *{self.config.image_shape}), got {tuple(x.shape)}")
        top = self.config.num_levels - 1
        if x.is_floating_point():
            return (x.float() * top).round().clamp(0, top).long()
        return x.long().clamp(0, top)

    def _to_images(self, levels: torch.Tensor) -> torch.Tensor:
        """Levels (or a mean over levels) as images in [0, 1]."""
        return levels.float() / (self.config.num_levels - 1)
