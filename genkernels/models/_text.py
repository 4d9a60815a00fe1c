"""Text models' tokenizer choice, shared by GPT and CharLSTM's config_for_data.

`fit_tokenizer(values, dataset, owner=..., default_bpe_vocab=...)` settles the "tokenizer",
"tokenizer_json" and "vocab_size" entries of a config's keyword values for a dataset:

* byte text of at least BPE_AUTO_MIN_BYTES (1 MB, e.g. the bundled stdlib train split) with none of
  tokenizer, tokenizer_json, vocab_size given gets tokenizer="bpe" (a BPE packs ~3 bytes into a
  token, so each step and each context sees ~3x more text); smaller text stays byte-level;
* a dataset already encoded with a BPETokenizer (TextDataset(tokenizer=...)) gives its tokenizer;
* tokenizer="bpe" with no tokenizer_json trains a BPETokenizer of bpe_vocab tokens on the dataset's
  bytes (`data`, at most genkernels.data.tokenizer.BPE_TRAIN_MAX_BYTES of them), and vocab_size is
  the tokenizer's.
"""
from __future__ import annotations

from typing import Any

import torch

from genkernels.models._validate import check_int

BPE_AUTO_MIN_BYTES = 1_000_000  # config_for_data picks a BPE for byte text at least this long
TOKENIZERS = ("byte", "bpe")


def fit_tokenizer(values: dict[str, Any], dataset, *, owner: str, default_bpe_vocab: int) -> dict[str, Any]:
    """Fill values' tokenizer / tokenizer_json / vocab_size for `dataset` (see the module docstring);
    owner names the config class in errors ("GPTConfig"). Returns values (changed in place)."""
    given = getattr(dataset, "tokenizer", None)
    data = getattr(dataset, "data", None)
    if (given is None and not {"tokenizer", "tokenizer_json", "vocab_size"} & values.keys()
            and isinstance(data, torch.Tensor) and data.dtype == torch.uint8 and data.numel() >= BPE_AUTO_MIN_BYTES):
        values["tokenizer"] = "bpe"
    if getattr(given, "kind", "byte") == "bpe":
        values.setdefault("tokenizer", "bpe")
        if values["tokenizer"] == "bpe":
            values.setdefault("tokenizer_json", given.to_json())
    if values.get("tokenizer") == "bpe":
        from genkernels.data.tokenizer import BPETokenizer

        if values.get("tokenizer_json") is None:
            if not isinstance(data, torch.Tensor) or data.dtype != torch.uint8:
                raise ValueError("tokenizer='bpe' trains on the dataset's bytes (a TextDataset's data), but the "
                                 "data has none; pass tokenizer_json")
            vocab = check_int(f"{owner}.bpe_vocab", values.get("bpe_vocab", default_bpe_vocab), 256)
            values["tokenizer_json"] = BPETokenizer.train(data.numpy().tobytes(), vocab).to_json()
        vocab_size = BPETokenizer.from_json(values["tokenizer_json"]).vocab_size
        if values.setdefault("vocab_size", vocab_size) != vocab_size:
            raise ValueError(f"vocab_size={values['vocab_size']} differs from the BPE tokenizer's {vocab_size}; "
                             "leave vocab_size unset with tokenizer='bpe' (bpe_vocab sets it)")
    return values


def encode_text_dataset(dataset, tokenizer, context: int):
    """Byte text (a "text" dataset of uint8 `data` without a tokenizer) encoded with `tokenizer` into
    windows of context + 1 tokens; any other dataset is returned as is (a text model's
    prepare_dataset when it has a BPE)."""
    data = getattr(dataset, "data", None)
    if (getattr(dataset, "tokenizer", None) is not None or getattr(dataset, "kind", None) != "text"
            or not isinstance(data, torch.Tensor) or data.dtype != torch.uint8):
        return dataset
    from genkernels.data.text import TextDataset

    return TextDataset.from_bytes(data, block_size=context, tokenizer=tokenizer,
                                  source=getattr(dataset, "source", "<bytes>"), split=getattr(dataset, "split", "all"))


__all__ = ["BPE_AUTO_MIN_BYTES", "TOKENIZERS", "encode_text_dataset", "fit_tokenizer"]
