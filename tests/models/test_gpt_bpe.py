"""GPT with the in-package BPE tokenizer: config from the data, token windows, bits-per-byte
accounting (total nats over the bytes the predicted tokens stand for), sampling, config round trip,
and the CLI train / eval / sample path."""
import json
import math

import pytest
import torch

from genkernels.data import TextDataset
from genkernels.data.tokenizer import BPETokenizer
from genkernels.models.gpt import GPT, GPTConfig

pytest.importorskip("tokenizers")

TINY = dict(dim=16, depth=1, num_heads=2, context=32)


@pytest.fixture(scope="module")
def byte_val():
    return TextDataset("stdlib", "val", block_size=32, max_bytes=40_000)


@pytest.fixture(scope="module")
def model(byte_val):
    torch.manual_seed(0)
    config = GPT.config_for_data(byte_val, {"tokenizer": "bpe", "bpe_vocab": 400, **TINY})
    return GPT(config).eval()


def test_config_trains_the_tokenizer(model, byte_val):
    c = model.config
    assert c.tokenizer == "bpe" and c.vocab_size == 400 and c.context == 32
    assert isinstance(model.tokenizer, BPETokenizer) and model.tokenizer.vocab_size == 400
    assert model.metric_units["loss"] == "nats/token" and GPT.metric_units["loss"] == "nats/byte"
    # a dataset already encoded gives its tokenizer
    encoded = TextDataset.from_bytes(byte_val.data, block_size=32, tokenizer=model.tokenizer)
    assert GPT.config_for_data(encoded, TINY).tokenizer_json == c.tokenizer_json
    # and the config round-trips through JSON (how checkpoints store it)
    again = GPT.from_config_dict(json.loads(json.dumps(model.config_dict())))
    again.load_state_dict(model.state_dict())
    tokens = torch.randint(0, 400, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(again.eval()(tokens), model(tokens))
    assert again.tokenizer == model.tokenizer


def test_prepare_and_check_dataset(model, byte_val):
    ds = model.prepare_dataset(byte_val)
    assert ds.tokenizer is model.tokenizer and ds.block_size == 32 and ds[0].shape == (33,)
    assert model.prepare_dataset(ds) is ds
    model.check_dataset(ds)
    with pytest.raises(ValueError, match="prepare_dataset"):
        model.check_dataset(byte_val)
    byte_model = GPT(GPTConfig(**TINY))
    assert byte_model.prepare_dataset(byte_val) is byte_val
    with pytest.raises(ValueError, match="byte-level"):
        byte_model.check_dataset(ds)


def test_bits_per_byte_counts_bytes(model, byte_val):
    """Zero weights give uniform logits: every token costs ln V nats, so bits per byte is
    (number of predicted tokens) * log2 V / (bytes of those tokens), exactly."""
    zero = GPT(model.config).eval()
    with torch.no_grad():
        for p in zero.parameters():
            p.zero_()
    ds = model.prepare_dataset(byte_val)
    count = 10
    lengths = torch.tensor(model.tokenizer.byte_lengths())
    targets = torch.stack([ds[i][1:] for i in range(count)])
    expected = targets.numel() * math.log2(400) / int(lengths[targets].sum())
    metrics = zero.evaluate(ds, max_items=count, batch_size=4)
    assert metrics["bits_per_byte"] == pytest.approx(expected, rel=1e-6)
    assert metrics["bits_per_token"] == pytest.approx(math.log2(400), rel=1e-6)
    assert metrics["bytes_per_token"] == pytest.approx(int(lengths[targets].sum()) / targets.numel())
    assert metrics["zlib_bits_per_byte"] > 0
    assert zero.evaluate(byte_val, max_items=count, batch_size=4) == metrics  # encodes byte text itself
    batch = torch.stack([ds[i] for i in range(count)])
    with torch.no_grad():
        losses = zero.loss(batch)
    assert float(losses["loss"]) == pytest.approx(math.log(400), rel=1e-6)
    assert float(losses["bits_per_byte"]) == pytest.approx(expected, rel=1e-6)
    # a byte-level model with zero weights: 8 bits per byte
    byte_zero = GPT(GPTConfig(**TINY)).eval()
    with torch.no_grad():
        for p in byte_zero.parameters():
            p.zero_()
    assert byte_zero.evaluate(byte_val, max_items=count)["bits_per_byte"] == pytest.approx(8.0, rel=1e-6)


def test_sample_decodes_tokens(model):
    samples = model.sample(2, prompt="def fib(n):", max_new_tokens=5, seed=0)
    start = model.tokenizer.encode("def fib(n):")
    assert samples.shape == (2, len(start) + 5) and samples[0, :len(start)].tolist() == start
    text = model.sample_files(samples)["samples.txt"].decode("utf-8")
    assert text.startswith("def fib(n):")


def test_config_errors(model):
    with pytest.raises(ValueError, match="GPTConfig.tokenizer"):
        GPTConfig(tokenizer="wordpiece")
    with pytest.raises(ValueError, match="GPTConfig.bpe_vocab"):
        GPTConfig(bpe_vocab=10)
    with pytest.raises(ValueError, match="tokenizer_json is only used"):
        GPTConfig(tokenizer_json=model.config.tokenizer_json)
    with pytest.raises(TypeError, match="tokenizer_json"):
        GPTConfig(tokenizer="bpe", tokenizer_json=3)
    with pytest.raises(ValueError, match="needs tokenizer_json"):
        GPT(GPTConfig(tokenizer="bpe", **TINY))
    with pytest.raises(ValueError, match="vocab_size"):
        GPT(GPTConfig(tokenizer="bpe", tokenizer_json=model.config.tokenizer_json, vocab_size=300, **TINY))


def test_cli_train_eval_sample(tmp_path, capsys):
    from genkernels.cli import main

    text = "".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(400))
    (tmp_path / "code.txt").write_text(text)
    out = tmp_path / "run"
    assert main(["train", "gpt", "--data", str(tmp_path / "code.txt"), "--set", "tokenizer=bpe", "--set",
                 "bpe_vocab=300", "--set", "dim=16", "--set", "depth=1", "--set", "num_heads=2", "--set",
                 "context=16", "--steps", "2", "--batch-size", "2", "--eval-max-items", "2", "--num-samples", "1",
                 "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
    saved = json.loads((out / "checkpoint" / "trainer.json").read_text())["model"]["config"]
    assert saved["tokenizer"] == "bpe" and saved["vocab_size"] == 300 and saved["tokenizer_json"]
    capsys.readouterr()
    assert main(["eval", str(out), "--max-items", "2", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert metrics["bytes_per_token"] > 1.5 and metrics["bits_per_byte"] < metrics["bits_per_token"]
    assert main(["sample", str(out), "-n", "1", "--device", "cpu", "--condition", "max_new_tokens=4"]) == 0
    assert (out / "samples" / "samples.txt").read_text().startswith("\n")


def test_config_for_data_fits_a_bpe_to_megabytes_of_text_only():
    from genkernels.data.text import TextDataset
    from genkernels.models.gpt import BPE_AUTO_MIN_BYTES, GPT

    small = TextDataset("stdlib", "val", block_size=32, max_bytes=5000)
    assert GPT.config_for_data(small, {"dim": 32, "depth": 1, "num_heads": 4}).tokenizer == "byte"
    large = TextDataset("stdlib", "val", block_size=32, max_bytes=BPE_AUTO_MIN_BYTES)
    fitted = GPT.config_for_data(large, {"dim": 32, "depth": 1, "num_heads": 4, "bpe_vocab": 512})
    assert fitted.tokenizer == "bpe" and fitted.vocab_size == 512 and fitted.tokenizer_json
    kept = GPT.config_for_data(large, {"dim": 32, "depth": 1, "num_heads": 4, "tokenizer": "byte"})
    assert kept.tokenizer == "byte" and kept.vocab_size == 256
