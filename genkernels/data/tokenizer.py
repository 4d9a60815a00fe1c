"""Tokenizers for the text models: bytes (the default) or a byte-level BPE trained in-package.

  ByteTokenizer   identity over bytes: token t is the byte t, vocab 256
  BPETokenizer    GPT-2-style byte-level BPE (the `tokenizers` library's BPE model with the ByteLevel
                  pre-tokenizer), trained here on the bytes of a training split; nothing is
                  downloaded. `pip install genkernels[interop]` provides `tokenizers`.

Both map any bytes to ids and back losslessly: `decode(encode(b)) == b`, invalid UTF-8 included.
Every id stands for a fixed byte string (`token_bytes(id)`, the 256 single bytes first), so
decode is the concatenation of the ids' byte strings, a stream can be decoded one token at a time,
and the byte count of a span of tokens is the sum of their lengths (`byte_lengths()`), which is
what bits per byte of a BPE model divides by. Valid UTF-8 runs go through the library's
pre-tokenizer and merges; a byte that is not part of valid UTF-8 is encoded as its single-byte
token (the library's str API cannot carry it).

Both serialise to a JSON string (`to_json()`, `tokenizer_from_json(text)`), which is how a GPT
config carries its tokenizer inside a checkpoint (GPTConfig.tokenizer_json).
"""
from __future__ import annotations

import json
from typing import Iterable, Sequence

BPE_TRAIN_MAX_BYTES = 2_000_000  # BPE training reads at most this many bytes (about 1 s at vocab 4096)
_TRAIN_CHUNK = 1 << 16
_INTEROP_HINT = "pip install genkernels[interop]"


def _tokenizers():
    try:
        import tokenizers
    except ImportError as error:
        raise ImportError(f"BPETokenizer needs the `tokenizers` library: {_INTEROP_HINT}") from error
    return tokenizers


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of the 256 bytes to printable characters (the ByteLevel alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _as_bytes(data, name: str = "data") -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{name} must be bytes or str, got {type(data).__name__}")


def _utf8_runs(data: bytes) -> Iterable[tuple[bool, bytes]]:
    """(True, valid UTF-8 run) and (False, one invalid byte) pieces that concatenate to data."""
    start = 0
    while start < len(data):
        try:
            data[start:].decode("utf-8")
            yield True, data[start:]
            return
        except UnicodeDecodeError as error:
            if error.start:
                yield True, data[start:start + error.start]
            yield False, data[start + error.start:start + error.start + 1]
            start += error.start + 1


def _check_ids(ids, vocab_size: int) -> list[int]:
    if hasattr(ids, "tolist"):  # a tensor or an array
        ids = ids.tolist()
    if not isinstance(ids, (list, tuple)) or any(isinstance(t, bool) or not isinstance(t, int) for t in ids):
        raise TypeError(f"ids must be a list of int token ids, got {ids!r:.80}")
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise ValueError(f"ids has token {bad[0]} outside [0, vocab_size = {vocab_size})")
    return list(ids)


class ByteTokenizer:
    """Token t is the byte t (vocab 256): what the byte-level models use."""

    kind = "byte"
    vocab_size = 256

    def encode(self, data: bytes | str) -> list[int]:
        """bytes (or a str, taken as its UTF-8 bytes) -> token ids."""
        return list(_as_bytes(data))

    def decode(self, ids: Sequence[int]) -> bytes:
        return bytes(_check_ids(ids, 256))

    def decode_str(self, ids: Sequence[int]) -> str:
        """The decoded bytes as text (invalid UTF-8 replaced by U+FFFD)."""
        return self.decode(ids).decode("utf-8", errors="replace")

    def token_bytes(self, token: int) -> bytes:
        return bytes(_check_ids([token], 256))

    def byte_lengths(self) -> list[int]:
        """Bytes per token id (all 1)."""
        return [1] * 256

    def to_json(self) -> str:
        return json.dumps({"type": "byte"})

    def __eq__(self, other) -> bool:
        return isinstance(other, ByteTokenizer)

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=256)"


class BPETokenizer:
    """Byte-level BPE over the `tokenizers` library. Build one with `BPETokenizer.train(data,
    vocab_size)` or `BPETokenizer.from_json(text)`; the constructor wraps a `tokenizers.Tokenizer`."""

    kind = "bpe"

    def __init__(self, tokenizer):
        tokenizers = _tokenizers()
        if not isinstance(tokenizer, tokenizers.Tokenizer):
            raise TypeError(f"tokenizer must be a tokenizers.Tokenizer, got {type(tokenizer).__name__}; "
                            "use BPETokenizer.train(...) or BPETokenizer.from_json(...)")
        self._tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        self.vocab_size = len(vocab)
        if sorted(vocab.values()) != list(range(self.vocab_size)):
            raise ValueError("tokenizer's ids must be 0..vocab_size-1 without gaps")
        decode_char = {c: b for b, c in _bytes_to_unicode().items()}
        self._bytes: list[bytes] = [b""] * self.vocab_size
        for token, index in vocab.items():
            try:
                self._bytes[index] = bytes(decode_char[c] for c in token)
            except KeyError:
                raise ValueError(f"tokenizer token {token!r} is not byte-level (a ByteLevel BPE is expected)") \
                    from None
        self._single = [vocab.get(c) for c in _bytes_to_unicode().values()]  # byte -> its one-byte token
        if None in self._single:
            raise ValueError("tokenizer lacks some of the 256 single-byte tokens (train it with the ByteLevel "
                             "alphabet)")

    @classmethod
    def train(cls, data: bytes | str, vocab_size: int = 4096, *,
              max_bytes: int | None = BPE_TRAIN_MAX_BYTES) -> "BPETokenizer":
        """Learn merges on `data` (its first max_bytes bytes; None: all) up to vocab_size tokens
        (256 single bytes + merges; fewer if the data runs out of pairs). Deterministic."""
        data = _as_bytes(data)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(f"vocab_size must be an int >= 256 (the single bytes), got {vocab_size!r}")
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int)
                                      or max_bytes <= 0):
            raise ValueError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
        if not data:
            raise ValueError("data is empty: BPE training needs some text")
        tokenizers = _tokenizers()
        from tokenizers import decoders, models, pre_tokenizers, trainers

        data = data if max_bytes is None else data[:max_bytes]
        text = "".join(run.decode("utf-8") for valid, run in _utf8_runs(data) if valid)
        tokenizer = tokenizers.Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      special_tokens=[], show_progress=False)
        chunks = [text[i:i + _TRAIN_CHUNK] for i in range(0, len(text), _TRAIN_CHUNK)]
        tokenizer.train_from_iterator(chunks, trainer)
        return cls(tokenizer)

    def encode(self, data: bytes | str) -> list[int]:
        """bytes (or a str, taken as its UTF-8 bytes) -> token ids."""
        ids: list[int] = []
        for valid, run in _utf8_runs(_as_bytes(data)):
            if valid:
                ids += self._tokenizer.encode(run.decode("utf-8")).ids
            else:
                ids.append(self._single[run[0]])
        return ids

    def decode(self, ids: Sequence[int]) -> bytes:
        return b"".join(self._bytes[t] for t in _check_ids(ids, self.vocab_size))

    def decode_str(self, ids: Sequence[int]) -> str:
        """The decoded bytes as text (invalid UTF-8 replaced by U+FFFD)."""
        return self.decode(ids).decode("utf-8", errors="replace")

    def token_bytes(self, token: int) -> bytes:
        return self._bytes[_check_ids([token], self.vocab_size)[0]]

    def byte_lengths(self) -> list[int]:
        """Bytes per token id."""
        return [len(b) for b in self._bytes]

    def to_json(self) -> str:
        return self._tokenizer.to_str()

    @classmethod
    def from_json(cls, text: str) -> "BPETokenizer":
        if not isinstance(text, str):
            raise TypeError(f"text must be a str (BPETokenizer.to_json()), got {type(text).__name__}")
        try:
            tokenizer = _tokenizers().Tokenizer.from_str(text)
        except Exception as error:  # the library raises its own Exception type
            raise ValueError(f"text is not a tokenizers JSON: {error}") from None
        return cls(tokenizer)

    def __eq__(self, other) -> bool:
        return isinstance(other, BPETokenizer) and self._bytes == other._bytes and \
            self.to_json() == other.to_json()

    def __getstate__(self):
        return {"json": self.to_json()}

    def __setstate__(self, state):
        self.__init__(_tokenizers().Tokenizer.from_str(state["json"]))

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"


def tokenizer_from_json(text: str) -> ByteTokenizer | BPETokenizer:
    """The tokenizer `to_json()` wrote: {"type": "byte"} or a tokenizers BPE JSON."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a tokenizer JSON str, got {type(text).__name__}")
    try:
        kind = json.loads(text).get("type")
    except (ValueError, AttributeError):
        raise ValueError(f"text is not a tokenizer JSON: {text!r:.80}") from None
    return ByteTokenizer() if kind == "byte" else BPETokenizer.from_json(text)


__all__ = ["ByteTokenizer", "BPETokenizer", "tokenizer_from_json", "BPE_TRAIN_MAX_BYTES"]
