import pytest
import torch

from genkernels.data import text
from genkernels.data.text import TextDataset, load_text_bytes


def test_stdlib_splits_are_fixed_disjoint_and_capped():
    files = {split: set(text._stdlib_files(split)) for split in ("train", "val", "test")}
    assert all(files.values())
    assert not (files["train"] & files["val"]) and not (files["train"] & files["test"])
    assert not (files["val"] & files["test"])
    val = load_text_bytes("stdlib", "val", max_bytes=200_000)
    assert len(val) == 200_000 and val == load_text_bytes("stdlib", "val", max_bytes=200_000)
    assert val != load_text_bytes("stdlib", "test", max_bytes=200_000)
    assert b"def " in val


def test_windows_tile_the_bytes():
    dataset = TextDataset("stdlib", "test", block_size=64, max_bytes=10_000)
    data = load_text_bytes("stdlib", "test", max_bytes=10_000)
    assert len(dataset) == (10_000 - 65) // 64 + 1 and dataset.kind == "text"
    first, second = dataset[0], dataset[1]
    assert first.shape == (65,) and first.dtype == torch.int64
    assert bytes(first.tolist()) == data[:65]
    assert first[-1] == second[0]  # targets of one window start the next
    assert bytes(dataset[-1].tolist()) == data[(len(dataset) - 1) * 64:(len(dataset) - 1) * 64 + 65]
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_user_folder_is_sorted_and_split_by_position(tmp_path):
    (tmp_path / "b.txt").write_text("b" * 100)
    (tmp_path / "a.md").write_text("a" * 99)
    (tmp_path / "image.png").write_bytes(b"\x89PNG not text")  # not a text extension: ignored
    whole = load_text_bytes(tmp_path, "all", max_bytes=None)
    assert whole == b"a" * 99 + b"\n" + b"b" * 100
    parts = [load_text_bytes(tmp_path, split, max_bytes=None) for split in ("train", "val", "test")]
    assert b"".join(parts) == whole and [len(p) for p in parts] == [180, 10, 10]


def test_single_user_file(tmp_path):
    path = tmp_path / "notes.log"  # any extension when the file is named directly
    path.write_text("héllo wörld\n" * 50)
    dataset = TextDataset(path, "train", block_size=16)
    assert bytes(dataset[0].tolist()) == ("héllo wörld\n" * 2).encode()[:17]


def test_non_utf8_file_is_named(tmp_path):
    (tmp_path / "good.txt").write_text("fine")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt.*not UTF-8"):
        load_text_bytes(tmp_path, "train")


@pytest.mark.parametrize("content, reason", [
    (b"\0" * 64, r"binary, not text \(NUL byte at offset 0\)"),
    ("utf-16 text".encode("utf-16"), "binary, not text"),  # valid-looking text with NULs between
    (bytes(range(1, 8)) * 20, r"binary, not text \(140 of its 140 bytes are control characters\)"),
])
def test_binary_file_is_named(tmp_path, content, reason):
    (tmp_path / "good.txt").write_text("fine text\n" * 10)
    (tmp_path / "zeros.txt").write_bytes(content)
    with pytest.raises(ValueError, match=rf"zeros.txt' is {reason}"):
        load_text_bytes(tmp_path, "all")
    with pytest.raises(ValueError, match="zeros.txt"):
        TextDataset(tmp_path / "zeros.txt", "all", block_size=4)  # named directly, any extension


def test_text_with_tabs_escapes_and_form_feeds_is_text(tmp_path):
    data = "col\tcol\r\n\x1b[1mbold\x1b[0m\f\n" * 10
    (tmp_path / "a.txt").write_text(data)
    assert load_text_bytes(tmp_path, "all", max_bytes=None) == data.encode()


def test_bad_sources(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_text_bytes(tmp_path / "missing")
    with pytest.raises(ValueError, match="no text files"):
        load_text_bytes(tmp_path)
    (tmp_path / "short.txt").write_text("tiny")
    with pytest.raises(ValueError, match="fewer than block_size"):
        TextDataset(tmp_path, "all", block_size=64)
    with pytest.raises(ValueError, match="split"):
        load_text_bytes("stdlib", "all")
    with pytest.raises(ValueError, match="max_bytes"):
        load_text_bytes("stdlib", "train", max_bytes=0)
