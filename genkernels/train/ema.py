"""Exponential moving average of a model's parameters, swapped in for evaluation and sampling."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class EMA:
    """shadow <- d * shadow + (1 - d) * param after every optimizer step.

    The decay warms up, d_n = min(decay, (1 + n) / (10 + n)) for the n-th update (n from 0), as
    in TensorFlow's ExponentialMovingAverage with num_updates: a fixed 0.999 would keep ~14% of
    the random initialisation after 2000 steps. Floating-point buffers (batch-norm running
    statistics) are averaged with the same decay, so evaluation with the averaged weights also uses
    statistics that match them (the live ones belong to the live weights); other buffers (counters)
    are copied.

    Usage: `ema.store(); ema.copy_to(); ...evaluate...; ema.restore()`, or `with ema.averaged():`.

    With FSDP-sharded parameters (DTensors) each rank averages its own shards: no communication,
    1/K of the memory; the whole averages are all-gathered only when evaluated or saved.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.num_updates = 0
        # parameters and buffers under one namespace (their names never collide in a Module)
        self._params = dict(model.named_parameters())
        self._params.update(model.named_buffers())
        self.shadow = {name: p.detach().clone() for name, p in self._params.items()}
        self._averaged = [n for n, p in self._params.items() if p.is_floating_point()]
        self._copied = [n for n, p in self._params.items() if not p.is_floating_point()]
        sharded = [n for n in self._averaged if _is_dtensor(self._params[n])]
        plain = [n for n in self._averaged if not _is_dtensor(self._params[n])]
        self._foreach_lists = [names for names in (plain, sharded) if names]
        self._stored: dict[str, torch.Tensor] | None = None

    def decay_at(self, num_updates: int) -> float:
        return min(self.decay, (1.0 + num_updates) / (10.0 + num_updates))

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.decay_at(self.num_updates)
        # lerp: shadow + weight * (param - shadow) == decay * shadow + (1 - decay) * param;
        # FSDP-sharded parameters (DTensors: the EMA of this rank's shards) apart from plain buffers
        for names in self._foreach_lists:
            torch._foreach_lerp_([self.shadow[n] for n in names],
                                 [self._params[n].detach() for n in names], weight)
        for n in self._copied:
            self.shadow[n].copy_(self._params[n])
        self.num_updates += 1

    @torch.no_grad()
    def store(self) -> None:
        """Remember the live weights so `restore()` can put them back."""
        self._stored = {name: p.detach().clone() for name, p in self._params.items()}

    @torch.no_grad()
    def copy_to(self) -> None:
        """Overwrite the model's parameters with the averages."""
        for name, p in self._params.items():
            p.copy_(self.shadow[name])

    @torch.no_grad()
    def restore(self) -> None:
        if self._stored is None:
            raise RuntimeError("EMA.restore() called without a matching EMA.store()")
        for name, p in self._params.items():
            p.copy_(self._stored[name])
        self._stored = None

    def averaged(self):
        """Context manager: the model holds the averaged weights inside the block."""
        return _Averaged(self)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        shadow = state["shadow"]
        if set(shadow) != set(self.shadow):
            missing = sorted(set(self.shadow) - set(shadow))
            unexpected = sorted(set(shadow) - set(self.shadow))
            raise ValueError(f"EMA state does not match the model: missing {missing}, unexpected {unexpected}")
        for name, value in shadow.items():
            # copy_ would broadcast a (1,) tensor into any shape without a word
            if value.shape != self.shadow[name].shape:
                raise ValueError(f"EMA state tensor {name!r} has shape {tuple(value.shape)}, the model's "
                                 f"has {tuple(self.shadow[name].shape)}")
        for name, value in shadow.items():
            self.shadow[name].copy_(value)
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])


def _is_dtensor(tensor: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


class _Averaged:
    def __init__(self, ema: EMA):
        self.ema = ema

    def __enter__(self):
        self.ema.store()
        self.ema.copy_to()

    def __exit__(self, *exc):
        self.ema.restore()
