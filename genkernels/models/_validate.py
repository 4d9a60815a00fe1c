"""Checks shared by the model configs and public methods: each raises TypeError (wrong type) or
ValueError (wrong value) naming the field, what it expects and what it got."""
from __future__ import annotations

import math
import numbers
from typing import Any


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """`value` as an int >= minimum; bools and floats (even 3.0) are refused, not rounded."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_real(name: str, value: Any, minimum: float | None = None) -> float:
    """`value` as a finite float >= minimum (NaN and inf are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_int_tuple(name: str, value: Any, length: int | None = None, minimum: int = 1) -> tuple[int, ...]:
    """A tuple (or list) of ints >= minimum, of `length` entries when given."""
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of ints, got {value!r} ({type(value).__name__})")
    if length is not None and len(value) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(value)}: {tuple(value)}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return tuple(check_int(f"{name}[{i}]", v, minimum) for i, v in enumerate(value))


def class_labels(labels: Any, n: int, num_classes: int, *, model: str, device, generator=None):
    """Class indices for n samples of a class-conditional model: (n,) int64 on `device`, or None for
    an unconditional one (num_classes = 0). labels None: random classes (from `generator`); an int
    or a one-entry sequence: that class for all n; else one integer class per sample."""
    import torch  # the config checks above stay importable without torch

    if not num_classes:
        if labels is not None:
            raise ValueError(f"labels were given but this {model} is unconditional (num_classes=0)")
        return None
    if labels is None:
        return torch.randint(0, num_classes, (n,), generator=generator, device=device)
    try:
        labels = torch.as_tensor(labels, device=device)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"labels must be class indices (an int or a sequence/tensor of ints), got "
                        f"{labels!r:.60}") from error
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    labels = labels.long().reshape(-1)
    if labels.shape[0] == 1:
        labels = labels.expand(n)  # one class for all n samples
    if labels.shape[0] != n:
        raise ValueError(f"labels must have one entry per sample ({n}), got shape {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got "
                         f"[{labels.min().item()}, {labels.max().item()}]")
    return labels


def evaluation_count(dataset, max_items, batch_size) -> int:
    """How many items `evaluate(dataset, max_items=, batch_size=)` reads, after checking both."""
    if max_items is not None:
        check_int("max_items", max_items, 1)
    check_int("batch_size", batch_size, 1)
    count = len(dataset) if max_items is None else min(len(dataset), max_items)
    if count == 0:
        raise ValueError("evaluate needs a non-empty dataset")
    return count
