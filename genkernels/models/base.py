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

    name          registry key used by the CLI, e.g. "vae"
    config_class  the family's @dataclass config; `model.config` holds the instance
    default_data  data name the CLI uses when --data is not given, e.g. "digits"
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    default_data: ClassVar[str] = "digits"

    def __init__(self, config):
        super().__init__()
        self.config = config

    # -- training -------------------------------------------------------------------------
    def loss(self, batch) -> dict[str, torch.Tensor]:
        """Losses for one collated batch; the first entry is the one optimised."""
        raise NotImplementedError

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
