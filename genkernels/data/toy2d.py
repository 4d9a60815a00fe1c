"""Two-dimensional toy distributions for density models and GANs.

Each set is drawn from a seeded generator, then centred and divided by a fixed constant (measured
once on a million points) so that every coordinate has roughly unit variance. The constant is the
same for every draw, so train and test samples share one scaling. Train, val and test draws use
different seeds derived from the given seed.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from genkernels.data._splits import split_seed

# name -> (centre, scale): the raw generator's mean and overall standard deviation.
_NORMALISATION = {
    "moons": ((0.5, 0.25), 0.707),
    "circles": ((0.0, 0.0), 0.561),
    "swissroll": ((2.0, 0.2), 6.8),
    "8gaussians": ((0.0, 0.0), 1.0),
    "checkerboard": ((0.0, 0.0), 1.155),
}
TOY_DATASETS = tuple(_NORMALISATION)
DEFAULT_SIZES = {"train": 10_000, "val": 2_000, "test": 2_000}


def _moons(n: int, rng: np.random.RandomState) -> np.ndarray:
    from sklearn.datasets import make_moons

    return make_moons(n, noise=0.05, random_state=rng)[0]


def _circles(n: int, rng: np.random.RandomState) -> np.ndarray:
    from sklearn.datasets import make_circles

    return make_circles(n, noise=0.05, factor=0.5, random_state=rng)[0]


def _swissroll(n: int, rng: np.random.RandomState) -> np.ndarray:
    from sklearn.datasets import make_swiss_roll

    points = make_swiss_roll(n, noise=0.5, random_state=rng)[0]  # (n, 3)
    return points[:, [0, 2]]  # the roll seen along its axis: a 2D spiral


def _eight_gaussians(n: int, rng: np.random.RandomState) -> np.ndarray:
    # Radius 1.4 and std 0.1 give per-coordinate variance 1.4**2 / 2 + 0.1**2 ~ 1.
    angles = rng.randint(0, 8, size=n) * (np.pi / 4)
    centres = 1.4 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return centres + 0.1 * rng.randn(n, 2)


def _checkerboard(n: int, rng: np.random.RandomState) -> np.ndarray:
    # A 4x4 board on [-2, 2]^2; points are uniform on the squares whose row + column is even.
    x = rng.uniform(-2.0, 2.0, size=n)
    column = np.floor(x).astype(np.int64) + 2  # 0..3
    row = 2 * rng.randint(0, 2, size=n) + column % 2  # rows of the same parity as the column
    y = row - 2 + rng.uniform(0.0, 1.0, size=n)
    return np.stack([x, y], axis=1)


_GENERATORS = {
    "moons": _moons,
    "circles": _circles,
    "swissroll": _swissroll,
    "8gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
}


def sample_toy(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """`n` points of toy distribution `name` from generator seed `seed`: float32 tensor (n, 2)."""
    if name not in _GENERATORS:
        raise ValueError(f"toy dataset must be one of {list(TOY_DATASETS)}, got {name!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    raw = _GENERATORS[name](int(n), np.random.RandomState(int(seed)))  # (n, 2)
    centre, scale = _NORMALISATION[name]
    points = (raw - np.asarray(centre)) / scale
    return torch.from_numpy(points.astype(np.float32))


class ToyDataset(Dataset):
    """A fixed draw of a toy distribution; items are float32 points of shape (2,)."""

    kind = "points"
    shape = (2,)

    def __init__(self, name: str, split: str = "train", n: int | None = None, seed: int = 0):
        self.name, self.split, self.seed = name, split, seed
        # split_seed validates split and seed; different splits get different seeds.
        draw_seed = split_seed(seed, split)
        self.points = sample_toy(name, DEFAULT_SIZES[split] if n is None else n, draw_seed)

    def __len__(self) -> int:
        return self.points.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.points[index]

    def __repr__(self) -> str:
        return f"ToyDataset({self.name!r}, split={self.split!r}, n={len(self)}, seed={self.seed})"


def toy_dataset(name: str, split: str = "train", n: int | None = None, seed: int = 0) -> ToyDataset:
    """A seeded draw of toy distribution `name` for `split` ("train", "val" or "test").

    n defaults to 10,000 points for train and 2,000 for val and test. The same (name, split, n,
    seed) always gives the same points; the splits are drawn from different derived seeds.
    """
    return ToyDataset(name, split, n, seed)
