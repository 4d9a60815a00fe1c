"""Shared figures: the grid's layout, enlargement, labels and pixels, the loss-curve figure with
units, and the writer that always replaces old files."""
import numpy as np
import pytest
import torch
from PIL import Image

from genkernels.figures import image_grid, loss_figure, plot_loss_curve, save_figures, save_image_grid, unit_of


def test_grid_layout_scale_and_pixels(tmp_path):
    images = torch.zeros(5, 1, 8, 8)
    images[1] = 1.0
    path = save_image_grid(images, tmp_path / "grid.png", nrow=3, padding=1, pad_value=0.5, min_width=96)
    grid = np.asarray(Image.open(path))
    # 8x8 images are enlarged 4x to 32 px (3 x 32 + 4 >= 96); 3 columns, 2 rows, 1 px borders
    assert grid.shape == (2 * 33 + 1, 3 * 33 + 1)
    assert grid[0, 0] == 128  # border
    assert (grid[1:33, 1:33] == 0).all() and (grid[1:33, 34:66] == 255).all()
    assert (grid[34:66, 67:99] == 128).all()  # the unused sixth cell keeps the pad value


def test_tiny_images_are_enlarged_nearest_neighbour():
    """A row of eight 8x8 digits came out 133 px wide; now at least 512, each pixel a sharp block."""
    images = torch.rand(16, 1, 8, 8)
    grid = image_grid(images, 8)
    assert grid.width >= 512
    scale = (grid.width - 2 * 9) // 64
    block = np.asarray(grid)[2:2 + scale, 2:2 + scale]
    assert (block == block[0, 0]).all()  # one source pixel, copied: no interpolation blur
    assert image_grid(images, 8, min_width=1).width == 8 * 10 + 2  # min_width=1: never enlarged


def test_rgb_grid_is_square_by_default(tmp_path):
    path = save_image_grid(torch.rand(9, 3, 40, 40), tmp_path / "rgb.png", padding=2, min_width=1)
    image = Image.open(path)
    assert image.mode == "RGB" and image.size == (3 * 42 + 2, 3 * 42 + 2)


def test_row_and_column_labels_add_margins_with_text():
    images = torch.ones(6, 1, 8, 8)  # white cells: any dark pixel in a margin is label text
    plain = image_grid(images, 3)
    labelled = image_grid(images, 3, row_labels=["input", "recon."], column_labels=["a", "b", "c"])
    left, top = labelled.width - plain.width, labelled.height - plain.height
    assert left > 10 and top > 10
    pixels = np.asarray(labelled.convert("L"))
    assert pixels[top:, :left].min() < 128 and pixels[:top, left:].min() < 128
    with pytest.raises(ValueError, match="row_labels must have one entry per grid row \\(2\\)"):
        image_grid(images, 3, row_labels=["one"])


@pytest.mark.parametrize("images", [torch.rand(4, 2, 8, 8), torch.rand(8, 8), torch.rand(0, 1, 8, 8)])
def test_grid_rejects_what_it_cannot_draw(tmp_path, images):
    with pytest.raises(ValueError, match="images"):
        save_image_grid(images, tmp_path / "bad.png")


@pytest.mark.parametrize("nrow", [0, -1, 2.5])
def test_grid_rejects_a_bad_nrow(nrow):
    with pytest.raises(ValueError, match="nrow must be a positive int"):
        image_grid(torch.rand(4, 1, 8, 8), nrow)


def test_loss_curve_names_quantities_and_units(tmp_path):
    history = [{"kind": "train", "step": s, "train/loss": 1.0 / s, "train/kl": 0.1 * s} for s in (1, 2, 3)]
    history.append({"kind": "eval", "step": 3, "val/loss": 0.5, "eval/elbo_bpd": 3.0, "eval/frechet_distance": 80.0})
    figure = loss_figure(history, units={"loss": "nats/dim"})
    labels = {axis.get_title(): axis.get_ylabel() for axis in figure.axes if axis.get_visible()}
    assert labels == {"loss": "loss (nats/dim)", "kl": "kl (value)", "eval/elbo_bpd": "elbo_bpd (bits/dim)",
                      "eval/frechet_distance": "frechet_distance (value)"}
    path = plot_loss_curve(history, tmp_path / "loss.png")
    image = Image.open(path)
    assert image.format == "PNG" and image.size[0] > image.size[1] > 100
    assert plot_loss_curve([], tmp_path / "empty.png")  # an empty history still gives a figure
    assert unit_of("iwae_bpd") == "bits/dim" and unit_of("recon_nats") == "nats/item"


def test_save_figures_replaces_older_files(tmp_path):
    first = save_figures({"samples": torch.zeros(4, 1, 8, 8)}, tmp_path)
    save_figures({"samples": torch.ones(4, 1, 8, 8), "extra": loss_figure([])}, tmp_path)
    assert np.asarray(Image.open(first[0]))[10, 10] == 255  # inside the first cell: the new grid, not the stale one
    assert {p.name for p in tmp_path.iterdir()} == {"samples.png", "extra.png"}
    with pytest.raises(TypeError, match="figure must be"):
        save_figures({"bad": [1, 2]}, tmp_path)

