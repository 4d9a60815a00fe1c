import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from genkernels.data.digits import NUM_CLASSES, NUM_LEVELS, DigitsDataset, load_digits_tensors


def test_splits_have_fixed_sizes_and_tile_the_data_in_file_order():
    full = load_digits()
    parts = {split: load_digits_tensors(split, "levels") for split in ("train", "val", "test")}
    assert [len(labels) for _, labels in parts.values()] == [1000, 350, 447]
    # Concatenated in order, the splits are exactly the file: fixed, disjoint and complete.
    images = torch.cat([images for images, _ in parts.values()])
    labels = torch.cat([labels for _, labels in parts.values()])
    np.testing.assert_array_equal(images[:, 0].numpy(), full.images.astype(np.int64))
    np.testing.assert_array_equal(labels.numpy(), full.target)


def test_float_form_is_levels_over_sixteen():
    levels, labels = load_digits_tensors("val", "levels")
    floats, float_labels = load_digits_tensors("val", "float")
    assert levels.dtype == torch.int64 and floats.dtype == torch.float32
    assert levels.shape == floats.shape == (350, 1, 8, 8)
    assert levels.min() == 0 and levels.max() == NUM_LEVELS - 1
    torch.testing.assert_close(floats, levels.float() / 16)
    assert torch.equal(labels, float_labels) and set(labels.tolist()) == set(range(NUM_CLASSES))


def test_dataset_items():
    dataset = DigitsDataset("test", form="levels")
    image, label = dataset[3]
    assert len(dataset) == 447 and dataset.kind == "image-levels"
    assert image.shape == (1, 8, 8) and image.dtype == torch.int64 and label.dtype == torch.int64
    assert DigitsDataset("train").kind == "image"


@pytest.mark.parametrize("kwargs, message", [({"split": "valid"}, "split"), ({"form": "int"}, "form")])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DigitsDataset(**kwargs)


def test_digits_levels_is_the_same_split_as_digits_at_seventeen_levels():
    """`digits-levels` (PixelCNN's default data) holds the digits split's images as the integer
    codes 0..16 that `digits` holds as k / 16, in the same order, with the same labels."""
    from genkernels.data import get_dataset

    for split in ("train", "val", "test"):
        levels, floats = get_dataset("digits-levels", split), get_dataset("digits", split)
        assert len(levels) == len(floats) and levels.num_levels == NUM_LEVELS == 17
        assert torch.equal(levels.images, (floats.images * 16).round().long())
        assert torch.equal(levels.labels, floats.labels)
