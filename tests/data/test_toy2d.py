import numpy as np
import pytest
import torch

from genkernels.data.toy2d import TOY_DATASETS, sample_toy, toy_dataset


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_draws_are_seeded_scaled_and_split(name):
    train = toy_dataset(name, "train", n=4000, seed=3)
    again = toy_dataset(name, "train", n=4000, seed=3)
    test = toy_dataset(name, "test", n=4000, seed=3)
    other_seed = toy_dataset(name, "train", n=4000, seed=4)
    assert train.points.shape == (4000, 2) and train.points.dtype == torch.float32
    assert train[0].shape == (2,) and len(train) == 4000 and train.kind == "points"
    assert torch.equal(train.points, again.points)
    assert not torch.equal(train.points, test.points)
    assert not torch.equal(train.points, other_seed.points)
    # Fixed normalisation: centred, with roughly unit variance per coordinate on average.
    assert train.points.mean(0).abs().max() < 0.15
    assert 0.8 < train.points.var(0).mean().sqrt() < 1.2


def test_default_sizes():
    assert len(toy_dataset("moons")) == 10_000 and len(toy_dataset("moons", "test")) == 2_000


def test_checkerboard_points_lie_on_even_squares():
    points = sample_toy("checkerboard", 5000, seed=0).double() * 1.155  # back to the [-2, 2] board
    column, row = torch.floor(points[:, 0]) + 2, torch.floor(points[:, 1]) + 2
    assert torch.all((column + row) % 2 == 0)
    assert points.abs().max() <= 2.0


def test_eight_gaussians_cluster_around_eight_centres():
    points = sample_toy("8gaussians", 8000, seed=0).numpy()
    angles = np.round(np.arctan2(points[:, 1], points[:, 0]) / (np.pi / 4)) % 8
    counts = np.bincount(angles.astype(int), minlength=8)
    assert counts.min() > 800  # about 1000 each
    assert np.abs(np.linalg.norm(points, axis=1) - 1.4).mean() < 0.15


def test_bad_arguments():
    with pytest.raises(ValueError, match="moons"):  # lists the valid names
        sample_toy("spiral", 10)
    with pytest.raises(ValueError, match="n must be"):
        sample_toy("moons", 0)
    with pytest.raises(ValueError, match="split"):
        toy_dataset("moons", "validation")
    with pytest.raises(ValueError, match="seed"):
        toy_dataset("moons", seed=-1)
