"""CharLSTM: shapes, training on a tiny text, stateful generation (== re-running the prefix, prompts
of different lengths, continuing from a returned state), sampling, config from data (bytes, or a
BPE: fitted, picked for megabytes of text, or given by the data), config round trip, bad inputs, and
the CLI train / sample --prompt / eval path (bytes and BPE)."""
import json
import math

import pytest
import torch

from genkernels.cli import main
from genkernels.data import TextDataset
from genkernels.models import REGISTRY, get_model_class
from genkernels.models.char_lstm import CharLSTM, CharLSTMConfig

TINY = dict(embed_dim=16, hidden_size=24, num_layers=2, context=32, dropout=0.0)
TEXT = ("def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n\n" * 40).encode()
PROMPTS = [list(b"def "), list(b"x"), list(b"return a"), list(b"(a, b):\n    ")]


def tiny(seed=0, **overrides) -> CharLSTM:
    torch.manual_seed(seed)
    return CharLSTM(CharLSTMConfig(**{**TINY, **overrides})).eval()


def test_registered_and_shapes():
    assert REGISTRY["lstm"] == "genkernels.models.char_lstm:CharLSTM"
    assert get_model_class("lstm") is CharLSTM
    model = tiny()
    tokens = torch.randint(0, 256, (3, 10))
    logits, (h, c) = model(tokens)
    assert logits.shape == (3, 10, 256) and h.shape == c.shape == (2, 3, 24)
    # the state carries: two halves == one pass
    first, state = model(tokens[:, :4])
    second, state2 = model(tokens[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), logits)
    torch.testing.assert_close(state2[0], h)
    step_logits, _ = model.step(tokens[:, 4], state)
    torch.testing.assert_close(step_logits, second[:, 0])
    with torch.no_grad():
        out = model.loss(torch.randint(0, 256, (2, 33)))
    assert out["loss"].shape == () and math.isclose(float(out["bits_per_byte"]), float(out["loss"]) / math.log(2),
                                                    rel_tol=1e-6)
    assert model.log_prob(torch.randint(0, 256, (2, 9))).shape == (2,)


@pytest.mark.parametrize("overrides", [{}, {"layer_norm": True}, {"tie_embeddings": False},
                                       {"embed_dim": 24, "num_layers": 1}])
def test_tying_and_variants(overrides):
    model = tiny(**overrides)
    c = model.config
    tied = c.tie_embeddings
    assert (model.head is None) == tied
    assert (model.proj is not None) == (tied and c.hidden_size != c.embed_dim)
    assert model(torch.randint(0, 256, (2, 5)))[0].shape == (2, 5, 256)


def test_loss_decreases_on_tiny_text():
    torch.manual_seed(0)
    data = TextDataset.from_bytes(TEXT, block_size=32)
    model = CharLSTM(CharLSTM.config_for_data(data, {**TINY, "recurrent_dropout": 0.1})).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = torch.stack([data[i] for i in range(16)])
    with torch.no_grad():
        initial = float(model.loss(batch)["loss"])
    assert abs(initial - math.log(256)) < 0.3  # uniform-ish at init
    for _ in range(40):
        loss = model.loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    metrics = model.evaluate(data, max_items=16)
    assert metrics["loss"] < 0.6 * initial, (initial, metrics)
    assert {"bits_per_byte", "zlib_bits_per_byte", "lzma_bits_per_byte"} <= set(metrics)


@pytest.mark.parametrize("overrides", [{}, {"layer_norm": True, "num_layers": 1}])
def test_cached_generation_equals_uncached_greedy(overrides):
    """temperature=0 (greedy) with the carried state == re-running the whole prefix per token, on
    prompts of different lengths in one batch (and on a (B, T) tensor)."""
    model = tiny(3, **overrides)
    cached = model.generate(PROMPTS, 20, temperature=0)
    assert cached == model.generate_uncached(PROMPTS, 20)
    assert [len(o) for o in cached] == [20] * len(PROMPTS)
    # each prompt alone gives the same as in the batch
    assert [model.generate([p], 20, temperature=0)[0] for p in PROMPTS] == cached
    tensor = torch.tensor([PROMPTS[0], list(b"abcd")])
    assert model.generate(tensor, 7, temperature=0) == model.generate_uncached(tensor, 7)


def test_generation_continues_from_the_returned_state():
    model = tiny(4)
    full = model.generate(PROMPTS, 15, temperature=0)
    first, state = model.generate(PROMPTS, 6, temperature=0, return_state=True)
    assert state[0].shape == (2, len(PROMPTS), 24)
    rest = model.generate([[o[-1]] for o in first], 9, temperature=0, state=state)
    assert [a + b for a, b in zip(first, rest)] == full
    # a state from an explicit prefix: the prompt continues it
    _, prefix_state = model(torch.tensor([list(b"def f")]))
    assert model.generate([list(b"(x)")], 5, temperature=0, state=prefix_state) == \
        model.generate([list(b"def f(x)")], 5, temperature=0)
    # max_new_tokens=0: the state after the prompt but its last token
    out, state0 = model.generate([list(b"ab")], 0, return_state=True)
    assert out == [[]]
    torch.testing.assert_close(state0[0], model(torch.tensor([[ord("a")]]))[1][0])


def test_sampling_controls_and_stream():
    model = tiny(5)
    a = model.generate(PROMPTS, 8, temperature=1.0, seed=7)
    assert a == model.generate(PROMPTS, 8, temperature=1.0, seed=7)
    top1 = model.generate(PROMPTS, 8, temperature=1.0, top_k=1, seed=1)
    assert top1 == model.generate(PROMPTS, 8, temperature=0)
    assert model.generate(PROMPTS, 8, temperature=0.9, top_p=1e-6, seed=2) == top1
    seen = []
    out = model.generate(PROMPTS[:2], 5, temperature=0, stream=lambda step, t: seen.append((step, t.tolist())))
    assert [s for s, _ in seen] == list(range(5))
    assert [t for _, t in seen] == [list(col) for col in zip(*out)]


def test_sample_and_sample_files():
    model = tiny(6)
    samples = model.sample(3, prompt="def f(x):", max_new_tokens=10, seed=0, temperature=0.8)
    assert samples.shape == (3, len(b"def f(x):") + 10) and samples.dtype == torch.int64
    assert bytes(samples[0, :9].tolist()) == b"def f(x):"
    text = model.sample_files(samples)["samples.txt"].decode("utf-8")
    assert text.startswith("def f(x):") and text.count("-" * 40) == 2
    assert model.sample(2, max_new_tokens=3).shape == (2, 4)  # empty prompt: a newline
    assert model.sample(1).shape == (1, 1 + model.config.context)


def test_config_for_data_and_round_trip():
    data = TextDataset.from_bytes(TEXT, block_size=48)
    config = CharLSTM.config_for_data(data, {"hidden_size": 16, "embed_dim": 8})
    assert config.context == 48 and config.vocab_size == 256 and config.tokenizer_json is None
    model = CharLSTM(config).eval()
    again = CharLSTM.from_config_dict(json.loads(json.dumps(model.config_dict())))
    again.load_state_dict(model.state_dict())
    tokens = torch.randint(0, 256, (2, 20))
    with torch.no_grad():
        assert torch.equal(again.eval()(tokens)[0], model(tokens)[0])
    with pytest.raises(ValueError, match="vocab_size"):
        CharLSTM.config_for_data(data, {"vocab_size": 300})
    with pytest.raises(ValueError, match="text"):
        CharLSTM.config_for_data(torch.utils.data.TensorDataset(torch.zeros(3)))


def test_bpe_encoded_dataset():
    pytest.importorskip("tokenizers")
    from genkernels.data.tokenizer import BPETokenizer

    tokenizer = BPETokenizer.train(TEXT, 300)
    data = TextDataset.from_bytes(TEXT, block_size=16, tokenizer=tokenizer)
    config = CharLSTM.config_for_data(data, {k: v for k, v in TINY.items() if k != "context"})
    assert config.vocab_size == tokenizer.vocab_size and config.context == 16 and config.tokenizer_json
    torch.manual_seed(0)
    model = CharLSTM(config).eval()
    assert model.metric_units["loss"] == "nats/token"
    metrics = model.evaluate(data, max_items=4)
    assert metrics["bits_per_byte"] < metrics["bits_per_token"] and metrics["bytes_per_token"] > 1
    byte_data = TextDataset.from_bytes(TEXT, block_size=64)
    prepared = model.prepare_dataset(byte_data)
    assert prepared.tokenizer is model.tokenizer and prepared.block_size == 16
    with pytest.raises(ValueError, match="prepare_dataset"):
        model.check_dataset(byte_data)
    samples = model.sample(2, prompt="def ", max_new_tokens=4, seed=0)
    assert model.sample_files(samples)["samples.txt"].decode().startswith("def ")
    again = CharLSTM.from_config_dict(json.loads(json.dumps(model.config_dict())))
    assert again.tokenizer == model.tokenizer
    assert model.generate([tokenizer.encode("def a"), tokenizer.encode("x")], 6, temperature=0) == \
        model.generate_uncached([tokenizer.encode("def a"), tokenizer.encode("x")], 6)


def test_config_for_data_picks_the_tokenizer(monkeypatch):
    """Byte text at least BPE_AUTO_MIN_BYTES long (lowered here to the tiny text's length) gets a BPE
    of bpe_vocab tokens trained on it, as GPT; tokenizer="byte" keeps bytes; shorter text stays bytes."""
    pytest.importorskip("tokenizers")
    import genkernels.models._text as text_module

    data = TextDataset.from_bytes(TEXT, block_size=32)
    sizes = {k: v for k, v in TINY.items() if k != "context"}
    assert CharLSTM.config_for_data(data, {**sizes, "bpe_vocab": 300}).tokenizer == "byte"  # < 1 MB
    monkeypatch.setattr(text_module, "BPE_AUTO_MIN_BYTES", len(TEXT))
    config = CharLSTM.config_for_data(data, {**sizes, "bpe_vocab": 300})
    assert config.tokenizer == "bpe" and config.context == 32 and config.tokenizer_json
    assert 256 < config.vocab_size <= 300  # the tiny text runs out of merges before 300
    byte = CharLSTM.config_for_data(data, {**sizes, "tokenizer": "byte", "bpe_vocab": 300})
    assert byte.tokenizer == "byte" and byte.vocab_size == 256 and byte.tokenizer_json is None
    assert CharLSTM.config_for_data(data, {**sizes, "vocab_size": 256}).tokenizer == "byte"
    torch.manual_seed(0)
    model = CharLSTM(config).eval()
    prompts = [model.tokenizer.encode("def a"), model.tokenizer.encode("x"), model.tokenizer.encode("return a * b")]
    assert model.generate(prompts, 8, temperature=0) == model.generate_uncached(prompts, 8)
    metrics = model.evaluate(data, max_items=2)  # byte windows, encoded by prepare_dataset
    assert metrics["bytes_per_token"] > 1 and metrics["bits_per_byte"] < metrics["bits_per_token"]
    # a config saved before the tokenizer field (tokenizer_json only) loads as BPE
    old = {k: v for k, v in model.config_dict().items() if k not in ("tokenizer", "bpe_vocab")}
    assert CharLSTM.from_config_dict(json.loads(json.dumps(old))).config.tokenizer == "bpe"
    with pytest.raises(ValueError, match="tokenizer_json is only used with tokenizer='bpe'"):
        CharLSTM.config_for_data(data, {"tokenizer": "byte", "tokenizer_json": config.tokenizer_json})
    with pytest.raises(ValueError, match="vocab_size=256 differs from the BPE"):
        CharLSTM.config_for_data(data, {"tokenizer": "bpe", "bpe_vocab": 300, "vocab_size": 256})
    with pytest.raises(ValueError, match="needs tokenizer_json"):
        CharLSTM(CharLSTMConfig(tokenizer="bpe"))


def test_bad_inputs_raise_clear_errors():
    model = tiny()
    with pytest.raises(TypeError, match="tokens"):
        model(torch.rand(2, 5))
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, vocab_size"):
        model(torch.tensor([[1, 256]]))
    with pytest.raises(ValueError, match="tokens must have shape"):
        model(torch.zeros(5, dtype=torch.int64))
    with pytest.raises(TypeError, match="tokens"):
        model.step(torch.tensor([0.5]))
    with pytest.raises(ValueError, match=r"state's h must have shape \(2, 3, 24\)"):
        model(torch.zeros(3, 4, dtype=torch.int64), (torch.zeros(2, 2, 24), torch.zeros(2, 2, 24)))
    with pytest.raises(TypeError, match="state"):
        model(torch.zeros(3, 4, dtype=torch.int64), torch.zeros(2, 3, 24))
    with pytest.raises(ValueError, match="state"):
        model.generate(PROMPTS, 3, state=model.initial_state(1))
    with pytest.raises(ValueError, match=r"prompt_tokens\[1\] has token 300"):
        model.generate([[1], [300]], 3)
    with pytest.raises(TypeError, match=r"prompt_tokens\[0\]"):
        model.generate([[1.0, 2.0]], 3)
    with pytest.raises(ValueError, match="prompt_tokens"):
        model.generate(torch.ones(1, 3), 3)
    with pytest.raises(ValueError, match="empty"):
        model.generate([[]], 3)
    with pytest.raises(TypeError, match="max_new_tokens"):
        model.generate([[1]], 2.5)
    with pytest.raises(ValueError, match="top_p"):
        model.generate([[1]], 2, top_p=1.5)
    with pytest.raises(TypeError, match="stream"):
        model.generate([[1]], 2, stream=3)
    with pytest.raises(TypeError, match="prompt"):
        model.sample(1, prompt=b"x")
    with pytest.raises(ValueError, match="batch"):
        model.loss(torch.zeros(2, 1, dtype=torch.int64))
    for field, value, error in (("hidden_size", 0, ValueError), ("dropout", 1.0, ValueError),
                                ("num_layers", 1.5, TypeError), ("layer_norm", 1, TypeError),
                                ("tokenizer_json", 3, TypeError), ("tokenizer", "char", ValueError),
                                ("bpe_vocab", 10, ValueError)):
        with pytest.raises(error, match=f"CharLSTMConfig.{field}"):
            CharLSTMConfig(**{field: value})


def test_cli_train_sample_eval(capsys, tmp_path):
    """`genkernels train lstm` on a text folder (tiny), `sample RUN --prompt` streams the continuation,
    `eval RUN` reports bits per byte beside zlib and lzma."""
    folder = tmp_path / "text"
    folder.mkdir()
    (folder / "a.py").write_bytes(TEXT * 3)
    out_dir = tmp_path / "run"
    quick = ["--steps", "2", "--batch-size", "4", "--eval-every", "2", "--log-every", "1", "--eval-max-items", "4",
             "--num-samples", "2", "--checkpoint-every", "0", "--no-progress", "--device", "cpu"]
    code = main(["train", "lstm", "--data", str(folder), "--out", str(out_dir), "--set", "hidden_size=16",
                 "--set", "embed_dim=8", "--set", "num_layers=1", "--set", "context=24", *quick])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert (out_dir / "samples.txt").is_file() and (out_dir / "metrics.json").is_file()
    code = main(["sample", str(out_dir), "--prompt", "def ", "--max-new-tokens", "5", "--out", str(tmp_path / "s"),
                 "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("def ") and "1 samples of lstm" in err
    assert out == (tmp_path / "s" / "samples.txt").read_bytes().decode("utf-8") + "\n"
    code = main(["eval", str(out_dir), "--max-items", "4", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert {"bits_per_byte", "zlib_bits_per_byte", "lzma_bits_per_byte"} <= set(result["metrics"])
    assert result["model"] == "lstm" and "loss" in result["losses"]


def test_cli_bpe_train_sample_prompt(capsys, tmp_path):
    """`train lstm --set tokenizer=bpe` fits a BPE (saved in the config); `sample --prompt` decodes it."""
    pytest.importorskip("tokenizers")
    (tmp_path / "code.txt").write_bytes(TEXT * 3)
    out_dir = tmp_path / "run"
    code = main(["train", "lstm", "--data", str(tmp_path / "code.txt"), "--out", str(out_dir), "--set",
                 "tokenizer=bpe", "--set", "bpe_vocab=300", "--set", "hidden_size=16", "--set", "embed_dim=8",
                 "--set", "num_layers=1", "--set", "context=16", "--steps", "2", "--batch-size", "4",
                 "--eval-every", "2", "--eval-max-items", "4", "--num-samples", "1", "--checkpoint-every", "0",
                 "--no-progress", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    code = main(["sample", str(out_dir), "--prompt", "def mul(", "--max-new-tokens", "4", "--out",
                 str(tmp_path / "s"), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("def mul(")
    assert out == (tmp_path / "s" / "samples.txt").read_bytes().decode("utf-8") + "\n"
