"""The protocol every model family implements; the trainer, CLI and metrics rely only on it."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn


class GenerativeModel(nn.Module):
    """Base class of the model zoo.

    Subclasses set the class attributes and implement `loss` and `sample`; `log_prob` where the
    family has an exact likelihood or a bound; `evaluate` for family metrics on held-out data.

    name            registry key used by the CLI, e.g. "vae"
    config_class    the family's @dataclass config; `model.config` holds the instance
    default_data    data name the CLI uses when --data is not given, e.g. "digits"
    train_defaults  TrainConfig fields this family wants unless the user sets them, e.g.
                    {"lr": 2e-4, "betas": (0.5, 0.999)} for a GAN (the CLI applies them)

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

    def __init__(self, config):
        super().__init__()
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

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no tractable log-likelihood")

    @torch.no_grad()
    def evaluate(self, dataset, *, max_items: int | None = None) -> dict[str, float]:
        """Family metrics on a held-out dataset (a torch Dataset from genkernels.data)."""
        return {}

    def save_figures(self, out_dir, samples: torch.Tensor) -> list[str]:
        """Write family figures (a sample grid PNG at least); return the paths written."""
        return []

    # -- (de)serialisation of the config --------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    @classmethod
    def from_config_dict(cls, values: dict[str, Any]) -> "GenerativeModel":
        return cls(cls.config_class(**values))
