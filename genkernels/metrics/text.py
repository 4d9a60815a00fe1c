"""Text metrics: bits per byte / character, perplexity, and general-purpose compressor baselines.

Model metrics take the mean NLL per token in nats (token = byte for byte-level models). The
compressor baselines give the bits per byte a strong off-the-shelf compressor needs on the same
held-out bytes: a model that cannot beat lzma has learned little.
"""
from __future__ import annotations

import lzma
import math
import zlib


def bits_per_byte(mean_nll_nats: float) -> float:
    """Bits per byte from a byte-level model's mean NLL per byte in nats: nll / ln 2."""
    return float(mean_nll_nats) / math.log(2.0)


def bits_per_char(mean_nll_nats: float, tokens_per_char: float = 1.0) -> float:
    """Bits per character from a mean NLL per token in nats.

    tokens_per_char converts a per-token mean to per-character: for a byte-level model on UTF-8
    text it is len(text.encode()) / len(text) (1.0 for ASCII, or for a character-level model).
    """
    return float(mean_nll_nats) * tokens_per_char / math.log(2.0)


def perplexity(mean_nll_nats: float) -> float:
    """Per-token perplexity exp(mean NLL in nats)."""
    return math.exp(float(mean_nll_nats))


def compression_baselines(data: bytes) -> dict[str, float]:
    """Bits per byte of zlib (level 9) and lzma (preset 9 | PRESET_EXTREME) on `data`.

    Returns {"zlib": ..., "lzma": ..., "num_bytes": len(data)}. zlib counts its 2-byte header
    and 4-byte checksum; lzma is a raw LZMA2 stream, without the .xz container. On short inputs
    these fixed costs dominate, so compare on at least tens of kilobytes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ValueError("data must not be empty")
    zlib_size = len(zlib.compress(data, 9))
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
    lzma_size = len(lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters))
    return {"zlib": 8.0 * zlib_size / len(data), "lzma": 8.0 * lzma_size / len(data), "num_bytes": len(data)}
