"""Figures every family can share: a sample grid (Pillow) and loss curves (matplotlib, Agg)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: Optional[int] = None, *,
                    padding: int = 1, pad_value: float = 1.0, min_size: int = 32) -> str:
    """Write images as one PNG grid; return the path.

    images     (N, C, H, W) float in [0, 1] (clamped), C = 1 (grey) or 3 (RGB)
    nrow       images per row (default ceil(sqrt(N)))
    min_size   small images (e.g. 8x8 digits) are enlarged by an integer factor, nearest
               neighbour, until their longer side reaches at least this many pixels
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (N, C, H, W) tensor with C in (1, 3), got {shape}")
    if images.shape[0] == 0:
        raise ValueError("images must hold at least one image, got N = 0")
    from PIL import Image

    n, channels, height, width = images.shape
    scale = max(1, math.ceil(min_size / max(height, width)))
    pixels = images.detach().float().clamp(0, 1).cpu()
    pixels = pixels.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)  # (N, C, sH, sW)
    height, width = height * scale, width * scale
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = torch.full((channels, ncol * (height + padding) + padding, nrow * (width + padding) + padding),
                      float(pad_value))
    for i in range(n):
        top = (i // nrow) * (height + padding) + padding
        left = (i % nrow) * (width + padding) + padding
        grid[:, top:top + height, left:left + width] = pixels[i]
    array = (grid.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)  # (H, W, C)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[..., 0] if channels == 1 else array).save(path)
    return str(path)


def plot_loss_curve(history: list[dict[str, Any]], path: str | Path) -> str:
    """Plot every "train/<name>" and "val/<name>" series of a Trainer history; return the path.

    One panel per loss name: the train curve (log-line averages) and the val points on it.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg via savefig

    names: list[str] = []
    for entry in history:
        for key in entry:
            if key.startswith(("train/", "val/")) and key.split("/", 1)[1] not in names:
                names.append(key.split("/", 1)[1])
    columns = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / columns))
    figure = Figure(figsize=(4.5 * columns, 3.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis, name in zip(axes, names):
        for split, style in (("train", "-"), ("val", "o--")):
            points = [(e["step"], e[f"{split}/{name}"]) for e in history if f"{split}/{name}" in e]
            if points:
                steps, values = zip(*points)
                axis.plot(steps, values, style, label=split, markersize=3)
        axis.set_title(name)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend()
    for axis in axes[len(names):]:
        axis.set_visible(False)
    if not names:
        axes[0].text(0.5, 0.5, "no losses logged", ha="center", va="center")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return str(path)
