"""Split conventions shared by the data modules.

Named, generated data (toy 2D sets, synthetic audio) draws each split from its own seed derived
from the user's seed; data read from a user's files is split by position so that it is fixed for
a given set of files.
"""
from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")
# User folders and files may also be used whole, e.g. to train on everything a user supplies.
FILE_SPLITS = SPLITS + ("all",)
# Every 20th item goes to val and to test: 90 / 5 / 5, stable when files are appended.
_VAL_SLOT, _TEST_SLOT, _PERIOD = 18, 19, 20


def check_split(split: str, allowed: tuple[str, ...] = SPLITS) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {list(allowed)}, got {split!r}")


def split_seed(seed: int, split: str) -> int:
    """A 32-bit seed for one split, derived from the user's seed (different for each split)."""
    check_split(split)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(np.random.SeedSequence([int(seed), SPLITS.index(split)]).generate_state(1)[0])


def split_indices(count: int, split: str) -> list[int]:
    """Indices of `count` ordered items that belong to `split` (90 / 5 / 5 by position mod 20)."""
    check_split(split, FILE_SPLITS)
    if split == "all":
        return list(range(count))
    slot = {"val": _VAL_SLOT, "test": _TEST_SLOT}.get(split)
    if slot is None:
        return [i for i in range(count) if i % _PERIOD not in (_VAL_SLOT, _TEST_SLOT)]
    return [i for i in range(count) if i % _PERIOD == slot]
