import numpy as np
import pytest
import torch
from PIL import Image

from genkernels.data.images import ImageFolderDataset


def make_folder(folder, count=3, size=(6, 5)):
    """Greyscale PNGs in nested folders; image i is filled with value 10 * i (mod 256)."""
    for i in range(count):
        path = folder / f"sub{i % 2}" / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full(size, (10 * i) % 256, dtype=np.uint8), mode="L").save(path)
    return folder


def test_items_are_channels_first_floats(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image, ignored")
    grey = ImageFolderDataset(tmp_path, channels=1)
    assert len(grey) == 3 and grey.shape == (1, 6, 5) and grey.kind == "image"
    item = grey[2]  # sorted by path: sub0/00, sub0/02, sub1/01
    assert item.dtype == torch.float32 and item.shape == (1, 6, 5)
    torch.testing.assert_close(item, torch.full((1, 6, 5), 10 / 255))
    rgb = ImageFolderDataset(tmp_path, channels=3)
    torch.testing.assert_close(rgb[1], torch.full((3, 6, 5), 20 / 255))


def test_sixteen_bit_png_is_scaled_by_its_bit_depth(tmp_path):
    values = np.array([[0, 32768], [65535, 1000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")  # Pillow keeps all 16 bits
    expected = torch.from_numpy(values.astype(np.float32) / 65535)
    grey = ImageFolderDataset(tmp_path, channels=1)[0]
    torch.testing.assert_close(grey, expected[None], rtol=0, atol=1e-7)  # 32768 -> 0.5, not 1.0
    torch.testing.assert_close(ImageFolderDataset(tmp_path, channels=3)[0], expected.expand(3, 2, 2))
    flat = np.full((4, 4), 40000, dtype=np.uint16)
    Image.fromarray(flat).save(tmp_path / "deep.png")
    resized = ImageFolderDataset(tmp_path, channels=1, size=(2, 2))[0]
    torch.testing.assert_close(resized, torch.full((1, 2, 2), 40000 / 65535))  # not rounded to 8 bits


def test_thirty_two_bit_values_beyond_sixteen_bits_are_refused(tmp_path):
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32), mode="I").save(tmp_path / "wide.tif")
    with pytest.raises(ValueError, match=r"wide.tif.*outside the 16-bit range"):
        ImageFolderDataset(tmp_path, channels=1)[0]


def test_resize_and_splits(tmp_path):
    make_folder(tmp_path, count=40)
    resized = ImageFolderDataset(tmp_path, size=(8, 8), channels=1)
    assert resized[0].shape == (1, 8, 8) and len(resized) == 40
    sizes = [len(ImageFolderDataset(tmp_path, split=s)) for s in ("train", "val", "test")]
    assert sizes == [36, 2, 2]
    train = set(ImageFolderDataset(tmp_path, split="train").files)
    assert not train & set(ImageFolderDataset(tmp_path, split="test").files)


def test_single_file(tmp_path):
    make_folder(tmp_path, count=1)
    assert len(ImageFolderDataset(tmp_path / "sub0" / "00.png")) == 1


def test_corrupt_png_is_named(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ValueError, match="corrupt.png"):
        ImageFolderDataset(tmp_path)


def test_truncated_png_fails_when_read(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])  # the header survives, the pixels do not
    dataset = ImageFolderDataset(tmp_path, channels=1)
    with pytest.raises(ValueError, match="a.png"):
        dataset[0]


def test_wrongly_shaped_image_is_named(tmp_path):
    make_folder(tmp_path)
    Image.fromarray(np.zeros((7, 7), dtype=np.uint8)).save(tmp_path / "odd.png")
    with pytest.raises(ValueError, match="odd.png.*7x7.*size="):
        ImageFolderDataset(tmp_path)
    assert ImageFolderDataset(tmp_path, size=(6, 5))[0].shape == (3, 6, 5)  # resizing fixes it


def test_bad_sources_and_arguments(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ImageFolderDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="no images"):
        ImageFolderDataset(tmp_path)
    make_folder(tmp_path)
    with pytest.raises(ValueError, match="channels"):
        ImageFolderDataset(tmp_path, channels=2)
    with pytest.raises(ValueError, match="size"):
        ImageFolderDataset(tmp_path, size=(0, 4))
    with pytest.raises(ValueError, match="is empty"):
        ImageFolderDataset(tmp_path, split="val")  # 3 images: nothing for val
