"""Bundled datasets (nothing is ever downloaded) and `get_dataset`, which the CLI uses.

Names:
  digits          scikit-learn's 8x8 digits, float32 (1, 8, 8) in [0, 1] with int64 labels
  digits-levels   the same digits as int64 levels 0..16 (for categorical / autoregressive models)
  moons, circles, swissroll, 8gaussians, checkerboard
                  2D toy distributions, float32 points (2,)
  text            byte windows of the Python standard library's source (int64, block_size + 1)
  audio           synthetic musical phrases at 8 kHz, float32 (samples,) or mu-law codes
  arithmetic, sort, reverse
                  generated seq2seq problems (src, tgt) int64, kind "seq2seq" (genkernels.data.seq2seq_tasks)
  chorales        Bach's four-part chorales from the music21 wheel as int64 token windows, kind "music"
                  (genkernels.data.music; needs `pip install genkernels[music]`)
  seasonal        synthetic hourly-like series (daily + weekly seasonality, trend, level shifts), windows
                  of context + horizon float32 values split by time, kind "series" (genkernels.data.timeseries)
  moses           the MOSES molecules (train / val / test / test_scaffolds) from the molsets wheel as int64
                  SMILES token rows, kind "smiles" (genkernels.data.smiles; needs `pip install genkernels[chem]`
                  and `pip install --no-deps molsets`); get_dataset("moses", split, max_items=..., form=...,
                  properties=...)

Anything else is taken as a filesystem path: a folder (or file) of images, of text, of WAV
audio or of MIDI files, decided by file extensions (pass kind="images" | "text" | "audio" |
"music" to decide yourself). A .smi / .smiles file (or kind="smiles") is a file of molecules, one
SMILES per line (a .csv with kind="smiles" reads its SMILES column), split 90 / 5 / 5 by position.
A .csv file is a time series (kind "series"): get_dataset("sales.csv", column="units"), or the CLI form
"sales.csv:units" (column name or 0-based index after the last colon), reads one column.
Every dataset has a `kind` attribute: "image", "image-levels", "points", "text", "audio", "music",
"series" or "smiles".
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Callable

from torch.utils.data import Dataset

from genkernels.data.audio import AUDIO_EXTENSIONS, AudioDataset, mu_law_decode, mu_law_encode, synth_phrases
from genkernels.data.digits import NUM_CLASSES, NUM_LEVELS, DigitsDataset, load_digits_tensors
from genkernels.data.images import IMAGE_EXTENSIONS, ImageFolderDataset
from genkernels.data.music import MUSIC_EXTENSIONS, ChoralesDataset, MidiFolderDataset
from genkernels.data.seq2seq_tasks import Seq2SeqTaskDataset
from genkernels.data.smiles import (SMILES_EXTENSIONS, MosesDataset, SmilesDataset, SmilesFileDataset,
                                    SmilesTokenizer, load_moses_smiles, read_smiles_file)
from genkernels.data.text import TEXT_EXTENSIONS, TextDataset, load_text_bytes
from genkernels.data.timeseries import CSVSeriesDataset, SeasonalSeriesDataset
from genkernels.data.tokenizer import BPETokenizer, ByteTokenizer, tokenizer_from_json
from genkernels.data.toy2d import TOY_DATASETS, ToyDataset, sample_toy, toy_dataset

def _toy(name: str) -> Callable[..., Dataset]:
    return lambda split="train", **kwargs: toy_dataset(name, split, **kwargs)


_NAMED: dict[str, Callable[..., Dataset]] = {
    "digits": lambda split="train", **kwargs: DigitsDataset(split, **kwargs),
    "digits-levels": lambda split="train", **kwargs: DigitsDataset(split, form="levels", **kwargs),
    **{name: _toy(name) for name in TOY_DATASETS},
    "text": lambda split="train", **kwargs: TextDataset("stdlib", split, **kwargs),
    "audio": lambda split="train", **kwargs: AudioDataset("synth", split, **kwargs),
    **{task: (lambda task: lambda split="train", **kwargs: Seq2SeqTaskDataset(task, split, **kwargs))(task)
       for task in ("arithmetic", "sort", "reverse")},
    "chorales": lambda split="train", **kwargs: ChoralesDataset(split, **kwargs),
    "seasonal": lambda split="train", **kwargs: SeasonalSeriesDataset(split, **kwargs),
    "moses": lambda split="train", **kwargs: MosesDataset(split, **kwargs),
}
DATASETS: tuple[str, ...] = tuple(_NAMED)

_KIND_EXTENSIONS = {"images": IMAGE_EXTENSIONS, "text": TEXT_EXTENSIONS, "audio": AUDIO_EXTENSIONS,
                    "music": MUSIC_EXTENSIONS}


def _kind_of_path(path: Path) -> str:
    """images, text or audio, from the extensions of the file or of the files under the folder."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    if not files:
        raise ValueError(f"data folder {str(path)!r} is empty")
    counts = Counter(kind for p in files for kind, exts in _KIND_EXTENSIONS.items()
                     if p.suffix.lower() in exts)
    if not counts:
        known = ", ".join(ext for exts in _KIND_EXTENSIONS.values() for ext in exts)
        raise ValueError(f"data path {str(path)!r} has no image, text or audio files "
                         f"(known extensions: {known})")
    # The most common kind wins, so a README beside a folder of PNGs does not make it text.
    (kind, count), *rest = counts.most_common()
    if rest and rest[0][1] == count:
        raise ValueError(f"data path {str(path)!r} holds as many {kind} as {rest[0][0]} files; "
                         f"pass kind='images', 'text' or 'audio'")
    return kind


def get_dataset(name_or_path: str | os.PathLike, split: str = "train", **kwargs) -> Dataset:
    """A dataset by registry name (see DATASETS) or by filesystem path.

    split is "train", "val" or "test" ("all" too for a path). Extra keyword arguments go to the
    dataset's constructor, e.g. block_size / max_bytes for text, n / seed for toy data, size /
    channels for images, seconds / sample_rate / form for audio, max_items / form / properties for
    moses. For a path, kind="images" | "text" | "audio" | "music" | "series" | "smiles" overrides the
    guess from file extensions. Raises ValueError for an unknown name (listing the valid ones), a
    missing path, or data that cannot be read.
    """
    name = os.fspath(name_or_path)
    kind = kwargs.pop("kind", None)
    if name in _NAMED and kind is None:
        return _NAMED[name](split, **kwargs)
    path = Path(name).expanduser()
    head, colon, column = name.rpartition(":")
    if colon and not path.exists() and head.lower().endswith(".csv") and Path(head).expanduser().is_file():
        if "column" in kwargs:  # "sales.csv:units": the column after the last colon
            raise ValueError(f"data {name!r} names a column and column={kwargs['column']!r} is given too; pass one")
        path, kind, kwargs["column"] = Path(head).expanduser(), kind or "series", column
    if kind is None and path.is_file() and path.suffix.lower() in SMILES_EXTENSIONS:
        kind = "smiles"
    if kind is None and path.is_file() and path.suffix.lower() == ".csv":
        kind = "series"  # a CSV file is a time series (a folder of them stays text)
    if not path.exists():
        raise ValueError(f"unknown dataset {name!r}: not one of {', '.join(DATASETS)}, "
                         f"and no file or folder of that name exists")
    kind = _kind_of_path(path) if kind is None else kind
    if kind == "images":
        return ImageFolderDataset(path, split=split, **kwargs)
    if kind == "text":
        return TextDataset(path, split, **kwargs)
    if kind == "audio":
        return AudioDataset(path, split, **kwargs)
    if kind == "music":
        return MidiFolderDataset(path, split, **kwargs)
    if kind == "series":
        return CSVSeriesDataset(path, split, **kwargs)
    if kind == "smiles":
        return SmilesFileDataset(path, split, **kwargs)
    raise ValueError(f"kind must be 'images', 'text', 'audio', 'music', 'series' or 'smiles', got {kind!r}")


__all__ = [
    "DATASETS", "get_dataset",
    "DigitsDataset", "load_digits_tensors", "NUM_LEVELS", "NUM_CLASSES",
    "ToyDataset", "toy_dataset", "sample_toy", "TOY_DATASETS",
    "TextDataset", "load_text_bytes",
    "ByteTokenizer", "BPETokenizer", "tokenizer_from_json",
    "AudioDataset", "synth_phrases", "mu_law_encode", "mu_law_decode",
    "ImageFolderDataset",
    "Seq2SeqTaskDataset",
    "ChoralesDataset", "MidiFolderDataset",
    "SeasonalSeriesDataset", "CSVSeriesDataset",
    "SmilesTokenizer", "SmilesDataset", "MosesDataset", "SmilesFileDataset", "load_moses_smiles",
    "read_smiles_file",
]
