"""Figures any layer can share: labelled image grids (Pillow), loss curves (matplotlib, Agg) and
the writer that saves them.

Models build figures and return them (`GenerativeModel.figures` gives {name: figure}); callers
(the CLI, the trainer, the examples) write them with `save_figures`. This module imports neither
the models nor the training package, so both can use it.

A figure is a PIL image, a matplotlib Figure, or an image batch tensor (N, C, H, W) in [0, 1],
which is drawn as a grid.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

# 8x8 digits in a row of 8 came out at 133 px, too small to see: grids are enlarged by an integer
# factor (nearest neighbour, so pixels stay sharp) until they are at least this wide.
MIN_GRID_WIDTH = 512
_LABEL_COLOUR = (40, 40, 40)


def _check_images(images: Any) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (N, C, H, W) tensor with C in (1, 3), got {shape}")
    if images.shape[0] == 0:
        raise ValueError("images must hold at least one image, got N = 0")


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable (FreeType builds of Pillow >= 10.1)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def image_grid(images: torch.Tensor, nrow: Optional[int] = None, *, padding: int = 2, pad_value: float = 1.0,
               min_width: int = MIN_GRID_WIDTH, row_labels: Optional[Sequence[str]] = None,
               column_labels: Optional[Sequence[str]] = None):
    """Images as one PIL grid image, filled row by row.

    images         (N, C, H, W) float in [0, 1] (clamped), C = 1 (grey) or 3 (RGB)
    nrow           images per row (default ceil(sqrt(N)))
    min_width      the images are enlarged by an integer factor, nearest neighbour, until the grid
                   is at least this many pixels wide (1: never enlarged)
    row_labels     text written in a left margin, one per grid row (e.g. "input", "recon.", "3")
    column_labels  text written in a top margin, one per grid column
    """
    from PIL import Image, ImageDraw

    _check_images(images)
    n, channels, height, width = images.shape
    nrow = math.ceil(math.sqrt(n)) if nrow is None else nrow
    _check_count("nrow", nrow)
    nrow = min(nrow, n)
    ncol = math.ceil(n / nrow)  # grid rows
    for name, labels, count in (("row_labels", row_labels, ncol), ("column_labels", column_labels, nrow)):
        if labels is not None and len(labels) != count:
            raise ValueError(f"{name} must have one entry per grid {name.split('_')[0]} ({count}), got {len(labels)}")
    scale = max(1, math.ceil((min_width - padding * (nrow + 1)) / (nrow * width)))
    pixels = images.detach().float().clamp(0, 1).cpu()
    pixels = pixels.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)  # (N, C, sH, sW)
    height, width = height * scale, width * scale
    grid = torch.full((channels, ncol * (height + padding) + padding, nrow * (width + padding) + padding),
                      float(pad_value))
    for i in range(n):
        top = (i // nrow) * (height + padding) + padding
        left = (i % nrow) * (width + padding) + padding
        grid[:, top:top + height, left:left + width] = pixels[i]
    array = (grid.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)  # (H, W, C)
    image = Image.fromarray(array[..., 0] if channels == 1 else array)
    if row_labels is None and column_labels is None:
        return image

    # labels: margins in white around the grid, text sized to a cell (12-20 px)
    font = _font(max(12, min(20, height // 3)))
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    text_width = lambda text: measure.textbbox((0, 0), str(text), font=font)[2]  # noqa: E731
    left = 8 + max((text_width(t) for t in row_labels), default=0) if row_labels is not None else 0
    top = font.size + 10 if column_labels is not None else 0
    canvas = Image.new("RGB", (image.width + left, image.height + top), "white")
    canvas.paste(image.convert("RGB"), (left, top))
    draw = ImageDraw.Draw(canvas)
    for r, text in enumerate(row_labels or []):
        middle = top + padding + r * (height + padding) + height // 2
        draw.text((left - 4, middle), str(text), fill=_LABEL_COLOUR, font=font, anchor="rm")
    for c, text in enumerate(column_labels or []):
        centre = left + padding + c * (width + padding) + width // 2
        draw.text((centre, top - 4), str(text), fill=_LABEL_COLOUR, font=font, anchor="md")
    return canvas


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: Optional[int] = None, **options) -> str:
    """Write `image_grid(images, nrow, **options)` as a PNG; return the path."""
    path = Path(path)
    grid = image_grid(images, nrow, **options)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return str(path)


# -- loss curves -------------------------------------------------------------------------------
def unit_of(name: str, units: Optional[Mapping[str, str]] = None) -> str:
    """The unit of a logged quantity: `units[name]` (a model's `metric_units`), else by suffix."""
    if units and name in units:
        return units[name]
    if name.endswith("_bpd"):
        return "bits/dim"
    if name.endswith("_nats"):
        return "nats/item"
    return "value"


def loss_figure(history: list[dict[str, Any]], units: Optional[Mapping[str, str]] = None):
    """A matplotlib Figure of a Trainer history: one panel per quantity.

    "train/<name>" (log-line averages, lines) and "val/<name>" (held-out, markers) share a panel;
    every "eval/<metric>" gets its own. Each y axis names the quantity and its unit (`units` maps a
    name to it, e.g. a model's `metric_units`; "_bpd" names are bits/dim).
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg via savefig

    panels: list[tuple[str, str]] = []  # (title, name)
    for entry in history:
        for key in entry:
            prefix, _, name = key.partition("/")
            panel = ("eval/" + name, name) if prefix == "eval" else (name, name) if prefix in ("train", "val") else None
            if panel is not None and panel not in panels:
                panels.append(panel)
    columns = min(3, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    figure = Figure(figsize=(4.5 * columns, 3.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis, (title, name) in zip(axes, panels):
        series = [("eval", "o-")] if title.startswith("eval/") else [("train", "-"), ("val", "o--")]
        for split, style in series:
            points = [(e["step"], e[f"{split}/{name}"]) for e in history if f"{split}/{name}" in e]
            if points:
                steps, values = zip(*points)
                axis.plot(steps, values, style, label=split, markersize=3)
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.set_ylabel(f"{name} ({unit_of(name, units)})")
        axis.grid(alpha=0.3)
        axis.legend()
    for axis in axes[len(panels):]:
        axis.set_visible(False)
    if not panels:
        axes[0].text(0.5, 0.5, "no losses logged", ha="center", va="center")
    return figure


def plot_loss_curve(history: list[dict[str, Any]], path: str | Path,
                    units: Optional[Mapping[str, str]] = None) -> str:
    """Write `loss_figure(history, units)` as a PNG; return the path."""
    return save_figure(loss_figure(history, units), path)


# -- writing -----------------------------------------------------------------------------------
def save_figure(figure: Any, path: str | Path) -> str:
    """Write one figure (PIL image, matplotlib Figure, or image batch tensor) as a PNG; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(figure, torch.Tensor):
        figure = image_grid(figure)
    if hasattr(figure, "savefig"):  # matplotlib
        figure.savefig(path, dpi=100)
    elif hasattr(figure, "save"):  # PIL
        figure.save(path, format="PNG")
    else:
        raise TypeError(f"figure must be a PIL image, a matplotlib Figure or an image tensor, "
                        f"got {type(figure).__name__}")
    return str(path)


def save_figures(figures: Mapping[str, Any], out_dir: str | Path) -> list[str]:
    """Write {name: figure} as out_dir/<name>.png, replacing older files; return the paths."""
    return [save_figure(figure, Path(out_dir) / f"{name}.png") for name, figure in figures.items()]


# -- 2D densities ------------------------------------------------------------------------------
def density_heatmap(log_prob_fn, samples: Optional[torch.Tensor] = None,
                    bounds: Optional[tuple[float, float, float, float]] = None, resolution: int = 200):
    """A matplotlib Figure: the density exp(log p) on a grid (left) beside a scatter of samples
    (right; the density alone when samples is None).

    log_prob_fn  maps points (M, 2) float32 to log-densities (M,) (a flow's `log_prob`); called
                 under no_grad in chunks of 16,384 points
    samples      (N, 2) points to scatter, or None
    bounds       (xmin, xmax, ymin, ymax) of the grid and both panels; default: the samples' 0.5th
                 to 99.5th percentiles with a 15% margin, or (-3, 3, -3, 3)
    resolution   grid points per axis
    """
    from matplotlib.figure import Figure

    _check_count("resolution", resolution)
    if samples is not None:
        if not isinstance(samples, torch.Tensor) or samples.ndim != 2 or samples.shape[1] != 2:
            shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
            raise ValueError(f"samples must be a (N, 2) tensor of points, got {shape}")
        samples = samples.detach().float().cpu()
    if bounds is None:
        finite = samples[torch.isfinite(samples).all(1)] if samples is not None else None
        if finite is not None and len(finite) >= 2:
            low = torch.quantile(finite, 0.005, dim=0)
            high = torch.quantile(finite, 0.995, dim=0)
            margin = 0.15 * (high - low).clamp(min=1e-3)
            bounds = (float(low[0] - margin[0]), float(high[0] + margin[0]),
                      float(low[1] - margin[1]), float(high[1] + margin[1]))
        else:
            bounds = (-3.0, 3.0, -3.0, 3.0)
    if len(bounds) != 4 or not (bounds[0] < bounds[1] and bounds[2] < bounds[3]):
        raise ValueError(f"bounds must be (xmin, xmax, ymin, ymax) with xmin < xmax and ymin < ymax, got {bounds!r}")
    xs = torch.linspace(bounds[0], bounds[1], resolution)
    ys = torch.linspace(bounds[2], bounds[3], resolution)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)  # (R * R, 2), x fastest
    with torch.no_grad():
        log_p = torch.cat([torch.as_tensor(log_prob_fn(grid[i:i + 16384])).detach().float().cpu().reshape(-1)
                           for i in range(0, grid.shape[0], 16384)])
    density = torch.exp(log_p).reshape(resolution, resolution).numpy()  # rows: y, columns: x

    panels = 1 if samples is None else 2
    figure = Figure(figsize=(4.2 * panels, 4.0), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False).ravel()
    image = axes[0].imshow(density, origin="lower", extent=bounds, aspect="auto", cmap="viridis")
    figure.colorbar(image, ax=axes[0], shrink=0.8, label="density")
    axes[0].set_title("model density")
    if samples is not None:
        axes[1].scatter(samples[:, 0].numpy(), samples[:, 1].numpy(), s=2, alpha=0.5, color="tab:blue")
        axes[1].set_xlim(bounds[0], bounds[1])
        axes[1].set_ylim(bounds[2], bounds[3])
        axes[1].set_title(f"{len(samples)} samples")
    for axis in axes:
        axis.set_aspect("equal", adjustable="box")
    return figure


__all__ = ["MIN_GRID_WIDTH", "image_grid", "save_image_grid", "loss_figure", "plot_loss_curve", "unit_of",
           "save_figure", "save_figures", "density_heatmap"]
