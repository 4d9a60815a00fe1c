import math

import pytest

from genkernels.data.text import load_text_bytes
from genkernels.metrics.text import bits_per_byte, bits_per_char, compression_baselines, perplexity


def test_unit_conversions():
    assert bits_per_byte(math.log(256.0)) == pytest.approx(8.0)  # a uniform byte model
    assert bits_per_char(math.log(2.0), tokens_per_char=1.5) == pytest.approx(1.5)
    assert perplexity(math.log(17.0)) == pytest.approx(17.0)


def test_compressors_beat_raw_bytes_on_stdlib_text():
    held_out = load_text_bytes("stdlib", "test", max_bytes=200_000)
    baselines = compression_baselines(held_out)
    assert baselines["num_bytes"] == 200_000
    assert 0 < baselines["lzma"] < baselines["zlib"] < 8
    assert baselines["zlib"] < 4  # Python source compresses well


def test_random_bytes_do_not_compress():
    import os

    baselines = compression_baselines(os.urandom(20_000))
    assert baselines["zlib"] > 7.9 and baselines["lzma"] > 7.9


def test_bad_input():
    with pytest.raises(TypeError, match="bytes"):
        compression_baselines("text")
    with pytest.raises(ValueError, match="empty"):
        compression_baselines(b"")
