"""Byte-level text: the Python standard library's own source, or any text a user names.

The default corpus ("stdlib") is the .py files of the running interpreter's standard library
(found with `sysconfig`, site-packages excluded), so it is always present and nothing is
downloaded; its exact contents depend on the Python version. Each file goes to train / val / test
by a stable hash of its relative path (zlib.crc32 mod 100: < 90 train, < 95 val, else test), and
the files of a split are concatenated in hash order, so a byte cap still gives a varied sample.
The few stdlib files that are deliberately not UTF-8 (encoding tests) are skipped.

A user's file that is not UTF-8 text raises ValueError naming it, as an unreadable image or WAV
file does: not UTF-8, or binary (a NUL byte, or more than 1% of control characters other than
tab, newline, carriage return, form feed, vertical tab, backspace and escape), which UTF-8
decoding alone lets through (a file of NUL bytes is valid UTF-8).

A user's file, or all text files under a user's folder (sorted by path), are concatenated and the
byte stream is split by position: the first 90% train, the next 5% val, the last 5% test.
"""
from __future__ import annotations

import os
import sysconfig
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from genkernels.data._splits import FILE_SPLITS, SPLITS, check_split

TEXT_EXTENSIONS = (
    ".txt", ".md", ".rst", ".py", ".c", ".h", ".cpp", ".cu", ".js", ".ts", ".html", ".css",
    ".json", ".csv", ".tsv", ".xml", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".tex", ".sh",
)
DEFAULT_MAX_BYTES = 4_000_000
DEFAULT_BLOCK_SIZE = 256
_FILE_SEPARATOR = b"\n"
_SPLIT_FRACTIONS = {"train": (0.0, 0.9), "val": (0.9, 0.95), "test": (0.95, 1.0), "all": (0.0, 1.0)}


def _stdlib_files(split: str) -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    relative_paths = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in ("site-packages", "__pycache__"))
        relative_paths += [Path(folder, n).relative_to(root).as_posix() for n in names if n.endswith(".py")]
    hashed = sorted((zlib.crc32(p.encode()), p) for p in relative_paths)
    bucket = {"train": range(0, 90), "val": range(90, 95), "test": range(95, 100)}[split]
    return [root / p for h, p in hashed if h % 100 in bucket]


def text_files(path: str | os.PathLike) -> list[Path]:
    """The text files a user path names: the file itself, or files under a folder (sorted)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"text source {str(path)!r} does not exist")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_EXTENSIONS)
    if not files:
        raise ValueError(
            f"text folder {str(path)!r} has no text files (looked for {', '.join(TEXT_EXTENSIONS)})"
        )
    return files


# C0 control bytes that plain text does not use (tab, newline, CR, FF, VT, BS and ESC are allowed)
_BINARY_BYTES = bytes(c for c in range(32) if c not in b"\t\n\r\f\v\b\x1b")
_MAX_CONTROL_FRACTION = 0.01


def _read_utf8(path: Path) -> bytes:
    data = path.read_bytes()
    nul = data.find(b"\0")
    if nul >= 0:
        raise ValueError(f"text file {str(path)!r} is binary, not text (NUL byte at offset {nul})")
    controls = len(data) - len(data.translate(None, _BINARY_BYTES))
    if controls > _MAX_CONTROL_FRACTION * len(data):
        raise ValueError(f"text file {str(path)!r} is binary, not text ({controls} of its {len(data)} "
                         "bytes are control characters)")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"text file {str(path)!r} is not UTF-8 ({error.reason} at byte {error.start})"
        ) from None
    return data


def _check_max_bytes(max_bytes: int | None) -> None:
    if max_bytes is None:
        return
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ValueError(f"max_bytes must be a positive int or None, got {max_bytes!r}")


def load_text_bytes(source: str | os.PathLike = "stdlib", split: str = "train",
                    max_bytes: int | None = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of one split of a text source, at most `max_bytes` of them (None: no cap).

    source is "stdlib" or a path to a UTF-8 text file or a folder of them. Files are joined with a
    newline. Raises ValueError for a missing path, a folder with no text files, a binary or
    non-UTF-8 file (naming it) or an empty split.
    """
    _check_max_bytes(max_bytes)
    if str(source) == "stdlib":
        check_split(split, SPLITS)
        chunks, total = [], 0
        for path in _stdlib_files(split):
            if max_bytes is not None and total >= max_bytes:
                break
            try:
                chunks.append(_read_utf8(path))
            except ValueError:
                continue  # the stdlib's own encoding tests are deliberately not UTF-8
            total += len(chunks[-1]) + len(_FILE_SEPARATOR)
        data = _FILE_SEPARATOR.join(chunks)
    else:
        check_split(split, FILE_SPLITS)
        data = _FILE_SEPARATOR.join(_read_utf8(p) for p in text_files(source))
        start, stop = _SPLIT_FRACTIONS[split]
        data = data[int(start * len(data)):int(stop * len(data))]
    data = data if max_bytes is None else data[:max_bytes]
    if not data:
        raise ValueError(f"split {split!r} of text source {str(source)!r} is empty")
    return data


class TextDataset(Dataset):
    """Fixed windows of block_size + 1 bytes (inputs and shifted targets), as int64 tensors.

    Item i is bytes [i * stride, i * stride + block_size + 1) of the split; stride defaults to
    block_size, so windows tile the text and every byte is predicted once per epoch. Items are
    deterministic; shuffle with the DataLoader.

    tokenizer (genkernels.data.tokenizer.ByteTokenizer or BPETokenizer; None = bytes): the split is
    encoded once and the windows are block_size + 1 token ids instead (`tokens`, int64), and
    vocab_size is the tokenizer's. `data` stays the split's bytes; `token_offsets` (num_tokens + 1,)
    gives the byte offset where each token starts, so the windows' bytes are known (bits per byte
    of a BPE model divides its total nats by the byte count of the tokens it predicted).
    """

    kind = "text"
    vocab_size = 256

    def __init__(self, source: str | os.PathLike = "stdlib", split: str = "train",
                 block_size: int = DEFAULT_BLOCK_SIZE, max_bytes: int | None = DEFAULT_MAX_BYTES,
                 stride: int | None = None, tokenizer=None):
        for name, value in (("block_size", block_size), ("stride", stride)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.source, self.split = str(source), split
        self.block_size = block_size
        self.stride = block_size if stride is None else stride
        data = load_text_bytes(source, split, max_bytes)
        self.data = torch.from_numpy(np.frombuffer(data, dtype=np.uint8).copy())  # (num_bytes,)
        if self.data.numel() < block_size + 1:
            raise ValueError(
                f"split {split!r} of text source {self.source!r} has {self.data.numel()} bytes, "
                f"fewer than block_size + 1 = {block_size + 1}"
            )
        self.tokenizer, self.tokens, self.token_offsets = None, None, None
        if tokenizer is not None:
            self._tokenize(tokenizer)

    def _tokenize(self, tokenizer) -> None:
        """Encode `data` with tokenizer: tokens (num_tokens,) int64, token_offsets (num_tokens + 1,)."""
        if not (hasattr(tokenizer, "encode") and hasattr(tokenizer, "byte_lengths")):
            raise TypeError(f"tokenizer must be a ByteTokenizer or BPETokenizer (genkernels.data.tokenizer) or "
                            f"None, got {type(tokenizer).__name__}")
        tokens = torch.tensor(tokenizer.encode(self.data.numpy().tobytes()), dtype=torch.int64)
        if tokens.numel() < self.block_size + 1:
            raise ValueError(f"split {self.split!r} of text source {self.source!r} has {tokens.numel()} tokens, "
                             f"fewer than block_size + 1 = {self.block_size + 1}")
        lengths = torch.tensor(tokenizer.byte_lengths(), dtype=torch.int64)[tokens]
        self.tokenizer, self.tokens = tokenizer, tokens
        self.token_offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        self.vocab_size = int(tokenizer.vocab_size)

    @classmethod
    def from_bytes(cls, data: bytes, *, block_size: int = DEFAULT_BLOCK_SIZE, stride: int | None = None,
                   tokenizer=None, source: str = "<bytes>", split: str = "all") -> "TextDataset":
        """Windows over given bytes (nothing read from disk), e.g. an existing dataset's `data`
        re-windowed with a tokenizer."""
        if isinstance(data, torch.Tensor):
            data = data.cpu().numpy().astype(np.uint8).tobytes()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"data must be bytes or a uint8 tensor, got {type(data).__name__}")
        for name, value in (("block_size", block_size), ("stride", stride)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self = cls.__new__(cls)
        self.source, self.split, self.block_size = source, split, block_size
        self.stride = block_size if stride is None else stride
        self.data = torch.from_numpy(np.frombuffer(bytes(data), dtype=np.uint8).copy())
        if self.data.numel() < block_size + 1:
            raise ValueError(f"data has {self.data.numel()} bytes, fewer than block_size + 1 = {block_size + 1}")
        self.tokenizer, self.tokens, self.token_offsets = None, None, None
        if tokenizer is not None:
            self._tokenize(tokenizer)
        return self

    def __len__(self) -> int:
        count = self.data.numel() if self.tokens is None else self.tokens.numel()
        return (count - self.block_size - 1) // self.stride + 1

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} windows")
        start = (index % len(self)) * self.stride
        if self.tokens is not None:
            return self.tokens[start:start + self.block_size + 1]  # (block_size + 1,) token ids
        return self.data[start:start + self.block_size + 1].to(torch.int64)  # (block_size + 1,)

    def window_bytes(self, index: int) -> tuple[int, int]:
        """Byte range [begin, end) of `data` that window `index` covers."""
        start = (index % len(self)) * self.stride
        if self.tokens is None:
            return start, start + self.block_size + 1
        return int(self.token_offsets[start]), int(self.token_offsets[start + self.block_size + 1])

    def __repr__(self) -> str:
        extra = "" if self.tokenizer is None else f", tokens={self.tokens.numel()}, tokenizer={self.tokenizer!r}"
        return (f"TextDataset({self.source!r}, split={self.split!r}, bytes={self.data.numel()}{extra}, "
                f"block_size={self.block_size}, windows={len(self)})")
