"""Shared figures: the sample grid's layout and pixels, and the loss-curve PNG."""
import numpy as np
import pytest
import torch
from PIL import Image

from genkernels.train.figures import plot_loss_curve, save_image_grid


def test_grid_layout_scale_and_pixels(tmp_path):
    images = torch.zeros(5, 1, 8, 8)
    images[1] = 1.0
    path = save_image_grid(images, tmp_path / "grid.png", nrow=3, padding=1, pad_value=0.5)
    grid = np.asarray(Image.open(path))
    # 8x8 images are enlarged 4x to 32 px; 3 columns, 2 rows, 1 px borders
    assert grid.shape == (2 * 33 + 1, 3 * 33 + 1)
    assert grid[0, 0] == 128  # border
    assert (grid[1:33, 1:33] == 0).all() and (grid[1:33, 34:66] == 255).all()
    assert (grid[34:66, 67:99] == 128).all()  # the unused sixth cell keeps the pad value


def test_rgb_grid_is_square_by_default(tmp_path):
    path = save_image_grid(torch.rand(9, 3, 40, 40), tmp_path / "rgb.png", padding=2)
    image = Image.open(path)
    assert image.mode == "RGB" and image.size == (3 * 42 + 2, 3 * 42 + 2)


@pytest.mark.parametrize("images", [torch.rand(4, 2, 8, 8), torch.rand(8, 8), torch.rand(0, 1, 8, 8)])
def test_grid_rejects_what_it_cannot_draw(tmp_path, images):
    with pytest.raises(ValueError, match="images"):
        save_image_grid(images, tmp_path / "bad.png")


def test_loss_curve_png(tmp_path):
    history = [{"kind": "train", "step": s, "train/loss": 1.0 / s, "train/kl": 0.1 * s} for s in (1, 2, 3)]
    history.append({"kind": "eval", "step": 3, "val/loss": 0.5, "eval/fid": 3.0})
    path = plot_loss_curve(history, tmp_path / "loss.png")
    image = Image.open(path)
    assert image.format == "PNG" and image.size[0] > image.size[1] > 100
    assert plot_loss_curve([], tmp_path / "empty.png")  # an empty history still gives a figure
