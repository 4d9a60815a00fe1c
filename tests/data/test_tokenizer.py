"""ByteTokenizer / BPETokenizer (genkernels.data.tokenizer) and TextDataset over token ids."""
import copy
import pickle
import random
import sys

import pytest
import torch

from genkernels.data import TextDataset, load_text_bytes
from genkernels.data.tokenizer import BPETokenizer, ByteTokenizer, tokenizer_from_json

pytest.importorskip("tokenizers")

SAMPLES = [
    b"",
    b"def f(x):\n    return x + 1\n",
    "héllo wörld, ĳ ß Ω 漢字 かな 🙂🐍 \u200b\t\r\n".encode(),
    b"\xff\xfe\x00 abc \xc3",  # invalid UTF-8: lone lead / continuation bytes, a truncated char
    bytes(range(256)),
    b"\xe6\xbc" + "漢".encode() + b"\x80\x80",
]


@pytest.fixture(scope="module")
def corpus() -> bytes:
    return load_text_bytes("stdlib", "train", max_bytes=300_000)


@pytest.fixture(scope="module")
def bpe(corpus) -> BPETokenizer:
    return BPETokenizer.train(corpus, 1024)


def _random_bytes(n: int, seed: int) -> bytes:
    return bytes(random.Random(seed).getrandbits(8) for _ in range(n))


def test_byte_tokenizer_is_identity():
    tok = ByteTokenizer()
    data = _random_bytes(1000, 0)
    assert tok.vocab_size == 256 and tok.encode(data) == list(data) and tok.decode(list(data)) == data
    assert tok.encode("é") == [0xC3, 0xA9] and tok.decode_str([0xC3, 0xA9]) == "é"
    assert tok.byte_lengths() == [1] * 256 and tok.token_bytes(65) == b"A"
    assert tokenizer_from_json(tok.to_json()) == tok


@pytest.mark.parametrize("index", range(len(SAMPLES)))
def test_bpe_round_trip(bpe, index):
    data = SAMPLES[index]
    ids = bpe.encode(data)
    assert all(0 <= t < bpe.vocab_size for t in ids)
    assert bpe.decode(ids) == data
    assert b"".join(bpe.token_bytes(t) for t in ids) == data  # stream decoding token by token
    assert sum(bpe.byte_lengths()[t] for t in ids) == len(data)


def test_bpe_round_trip_random_bytes_and_text(bpe):
    for seed in range(3):
        data = _random_bytes(3000, seed)
        assert bpe.decode(bpe.encode(data)) == data
        text = "".join(chr(random.Random(seed).choice([random.Random(seed + i).randrange(32, 0x2FFF), 0x1F600]))
                       for i in range(500))
        assert bpe.decode_str(bpe.encode(text)) == text
        assert bpe.encode(text) == bpe.encode(text.encode("utf-8"))


def test_bpe_vocab_compression_and_determinism(corpus, bpe):
    assert bpe.vocab_size == 1024
    assert sorted(bpe.byte_lengths())[:256] == [1] * 256  # the 256 single bytes, then merges
    held_out = load_text_bytes("stdlib", "val", max_bytes=50_000)
    assert len(held_out) / len(bpe.encode(held_out)) > 2.0  # bytes per token (2.3 here: a codec table)
    again = BPETokenizer.train(corpus, 1024)
    assert again.to_json() == bpe.to_json() and again.encode(held_out) == bpe.encode(held_out)
    small = BPETokenizer.train(corpus, 300)
    assert small.vocab_size == 300


def test_bpe_json_pickle_round_trip(bpe):
    text = bpe.to_json()
    for other in (BPETokenizer.from_json(text), tokenizer_from_json(text), pickle.loads(pickle.dumps(bpe)),
                  copy.deepcopy(bpe)):
        assert other == bpe and other.vocab_size == bpe.vocab_size
        assert other.encode(SAMPLES[2]) == bpe.encode(SAMPLES[2])


def test_errors(bpe, corpus):
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train(corpus, 100)
    with pytest.raises(ValueError, match="max_bytes"):
        BPETokenizer.train(corpus, 300, max_bytes=0)
    with pytest.raises(ValueError, match="data is empty"):
        BPETokenizer.train(b"", 300)
    with pytest.raises(TypeError, match="data must be bytes or str"):
        bpe.encode([1, 2])
    with pytest.raises(ValueError, match="ids has token 1024"):
        bpe.decode([1, 1024])
    with pytest.raises(TypeError, match="ids must be a list"):
        bpe.decode([1.5])
    with pytest.raises(ValueError, match="ids has token 256"):
        ByteTokenizer().decode([256])
    with pytest.raises(ValueError, match="not a tokenizers JSON"):
        BPETokenizer.from_json('{"nothing": 1}')
    with pytest.raises(TypeError, match="text must be"):
        tokenizer_from_json(b"{}")
    with pytest.raises(TypeError, match="tokenizer must be a tokenizers.Tokenizer"):
        BPETokenizer("x")


def test_missing_library_names_the_extra(monkeypatch, corpus):
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(ImportError, match=r"pip install genkernels\[interop\]"):
        BPETokenizer.train(corpus, 300)


def test_text_dataset_with_tokenizer(bpe):
    plain = TextDataset("stdlib", "val", block_size=32, max_bytes=20_000)
    byte = TextDataset("stdlib", "val", block_size=32, max_bytes=20_000, tokenizer=ByteTokenizer())
    assert len(byte) == len(plain) and torch.equal(byte[3], plain[3]) and byte.vocab_size == 256
    ds = TextDataset("stdlib", "val", block_size=32, max_bytes=20_000, tokenizer=bpe)
    assert torch.equal(ds.data, plain.data) and ds.vocab_size == 1024 and TextDataset.vocab_size == 256
    assert ds.tokens.tolist() == bpe.encode(plain.data.numpy().tobytes())
    assert int(ds.token_offsets[-1]) == ds.data.numel()
    assert len(ds) == (ds.tokens.numel() - 33) // 32 + 1
    for i in (0, 5, len(ds) - 1):
        item = ds[i]
        assert item.dtype == torch.int64 and item.shape == (33,)
        begin, end = ds.window_bytes(i)
        assert bpe.decode(item.tolist()) == ds.data[begin:end].numpy().tobytes()
    again = TextDataset.from_bytes(plain.data, block_size=32, tokenizer=bpe)
    assert torch.equal(again.tokens, ds.tokens) and len(again) == len(ds)
    assert "tokens=" in repr(ds)


def test_text_dataset_tokenizer_errors(bpe):
    with pytest.raises(TypeError, match="tokenizer must be"):
        TextDataset("stdlib", "val", block_size=32, max_bytes=2_000, tokenizer="bpe")
    with pytest.raises(ValueError, match="fewer than block_size"):
        TextDataset.from_bytes(b"def f(x):\n    return x\n" * 4, block_size=60, tokenizer=bpe)
    with pytest.raises(TypeError, match="data must be bytes"):
        TextDataset.from_bytes("text", block_size=2)
