"""scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test set), with a fixed split.

The 1,797 images ship inside scikit-learn, so nothing is downloaded. Pixel values are counts of
"on" pixels in 4x4 blocks of a 32x32 bitmap, hence 17 intensity levels 0..16. The split is fixed
and in file order: the first 1000 images train, the next 350 validate, the last 447 test.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch.utils.data import Dataset

NUM_LEVELS = 17
NUM_CLASSES = 10
IMAGE_SHAPE = (1, 8, 8)
SPLITS = {"train": (0, 1000), "val": (1000, 1350), "test": (1350, 1797)}
FORMS = ("float", "levels")


@functools.lru_cache(maxsize=1)
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.int64)  # (1797, 8, 8), values 0..16
    labels = bunch.target.astype(np.int64)  # (1797,)
    if images.shape != (1797, 8, 8) or images.min() < 0 or images.max() >= NUM_LEVELS:
        raise ValueError(f"scikit-learn digits look unexpected: shape {images.shape}")
    return images, labels


def _check_split_and_form(split: str, form: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if form not in FORMS:
        raise ValueError(f"form must be one of {list(FORMS)}, got {form!r}")


def load_digits_tensors(split: str = "train", form: str = "float") -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels of one split as tensors.

    Returns images (N, 1, 8, 8) — float32 in [0, 1] (level / 16) for form="float", int64 level
    indices 0..16 for form="levels" — and labels (N,) int64 in 0..9. N is 1000, 350 or 447.
    """
    _check_split_and_form(split, form)
    start, stop = SPLITS[split]
    images, labels = _all_digits()
    levels = torch.from_numpy(images[start:stop].copy()).unsqueeze(1)  # (N, 1, 8, 8)
    labels_t = torch.from_numpy(labels[start:stop].copy())
    if form == "levels":
        return levels, labels_t
    return levels.to(torch.float32) / (NUM_LEVELS - 1), labels_t


class DigitsDataset(Dataset):
    """The 8x8 digits as a Dataset of (image (1, 8, 8), label int64) pairs.

    form="float" gives float32 images in [0, 1]; form="levels" gives int64 levels 0..16 (for
    categorical / autoregressive models over NUM_LEVELS values).
    """

    num_levels = NUM_LEVELS
    num_classes = NUM_CLASSES
    shape = IMAGE_SHAPE

    def __init__(self, split: str = "train", form: str = "float"):
        self.split = split
        self.form = form
        self.kind = "image-levels" if form == "levels" else "image"
        self.images, self.labels = load_digits_tensors(split, form)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __repr__(self) -> str:
        return f"DigitsDataset(split={self.split!r}, form={self.form!r}, n={len(self)})"
