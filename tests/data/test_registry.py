import wave

import numpy as np
import pytest
import torch
from PIL import Image

from genkernels.data import DATASETS, get_dataset


def test_every_name_resolves():
    expected_kinds = {"digits": "image", "digits-levels": "image-levels", "text": "text", "audio": "audio",
                      "arithmetic": "seq2seq", "sort": "seq2seq", "reverse": "seq2seq", "chorales": "music",
                      "seasonal": "series", "moses": "smiles"}
    assert set(DATASETS) == {"digits", "digits-levels", "moons", "circles", "swissroll", "8gaussians",
                             "checkerboard", "text", "audio", "arithmetic", "sort", "reverse", "chorales",
                             "seasonal", "moses"}
    small = {"text": {"max_bytes": 5000}, "audio": {"n": 2, "seconds": 0.1},
             "chorales": {"max_pieces": 2, "block_size": 32}, "seasonal": {"num_series": 2},
             "moses": {"max_items": 100}}
    toy_names = ("moons", "circles", "swissroll", "8gaussians", "checkerboard")
    small.update({name: {"n": 10} for name in toy_names})
    for name in DATASETS:
        dataset = get_dataset(name, "test", **small.get(name, {}))
        assert len(dataset) > 0
        assert dataset.kind == expected_kinds.get(name, "points")


def test_digits_names_pick_the_form():
    image, _ = get_dataset("digits-levels", "val")[0]
    assert image.dtype == torch.int64
    assert get_dataset("digits", "val")[0][0].dtype == torch.float32


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="digits.*checkerboard.*no file or folder"):
        get_dataset("mnist")


def test_paths_are_recognised_by_extension(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(images / f"{i}.png")
    (images / "README.md").write_text("a folder of PNGs")
    assert get_dataset(images, "all").kind == "image"

    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("x" * 3000)
    assert get_dataset(texts, "train", block_size=8).kind == "text"

    sounds = tmp_path / "sounds"
    sounds.mkdir()
    with wave.open(str(sounds / "a.wav"), "wb") as writer:
        writer.setnchannels(1), writer.setsampwidth(2), writer.setframerate(8000)
        writer.writeframes(np.zeros(8000, dtype="<i2").tobytes())
    assert get_dataset(sounds, "all", seconds=0.5).kind == "audio"
    # The guess can be overridden: the image folder's README read as text.
    assert get_dataset(images / "README.md", "all", kind="text", block_size=4).kind == "text"


def test_bad_paths(tmp_path):
    with pytest.raises(ValueError, match="is empty"):
        get_dataset(tmp_path)
    (tmp_path / "data.bin").write_bytes(b"\x00\x01")
    with pytest.raises(ValueError, match="no image, text or audio files"):
        get_dataset(tmp_path)
    (tmp_path / "a.png").write_bytes(b"not a png")
    (tmp_path / "a.txt").write_text("text")
    with pytest.raises(ValueError, match="kind="):
        get_dataset(tmp_path)
    with pytest.raises(ValueError, match="a.png"):
        get_dataset(tmp_path, "all", kind="images")
    with pytest.raises(ValueError, match="kind must be"):
        get_dataset(tmp_path, kind="video")
