"""GPT's music mode: fitted to music tokens (GPTConfig.music_form), it trains, samples pieces from
BOS with the KV cache (equal to re-running the context), writes MIDI + WAV and a piano roll, and
evaluates with the same keys as MusicLSTM; text GPTs and old configs are unchanged."""
import dataclasses
import io
import json
import wave

import numpy as np
import pytest
import torch

pytest.importorskip("mido")

from genkernels.data.music import BOS, EOS, PAD, ChoralesDataset, midi_to_events  # noqa: E402
from genkernels.models.gpt import GPT, GPTConfig  # noqa: E402
from genkernels.models.music_lstm import MusicLSTM, MusicLSTMConfig  # noqa: E402
from tests.models.test_music_lstm import EVAL_KEYS, write_midi_folder  # noqa: E402

TINY = {"dim": 32, "depth": 1, "num_heads": 2}


@pytest.fixture(scope="module")
def chorales():
    pytest.importorskip("music21")
    return (ChoralesDataset("train", block_size=32, max_pieces=6),
            ChoralesDataset("test", block_size=32, max_pieces=3))


def test_config_for_music_data_and_old_configs(chorales):
    train, _ = chorales
    config = GPT.config_for_data(train, TINY)
    assert (config.music_form, config.vocab_size, config.context, config.tokenizer) == ("events", 535, 32, "byte")
    grid = ChoralesDataset("train", form="grid", block_size=32, max_pieces=2)
    assert GPT.config_for_data(grid, TINY).music_form == "grid"
    # a config saved before music mode (no music_form) loads as a text model
    old = {k: v for k, v in dataclasses.asdict(GPTConfig(**TINY)).items() if k != "music_form"}
    model = GPT.from_config_dict(old)
    assert model.config.music_form is None and model.metric_units["loss"] == "nats/byte"
    with pytest.raises(ValueError, match="vocab_size must be 535 for music_form='events'"):
        GPTConfig(music_form="events", **TINY)
    with pytest.raises(ValueError, match="tokenizer must be 'byte'"):
        GPTConfig(music_form="events", vocab_size=535, tokenizer="bpe", tokenizer_json="{}", **TINY)
    with pytest.raises(ValueError, match="music_form"):
        GPTConfig(music_form="notes", **TINY)


def test_loss_drops_and_units(chorales):
    train, _ = chorales
    torch.manual_seed(0)
    model = GPT(GPT.config_for_data(train, TINY))
    assert model.metric_units == {"loss": "nats/token", "bits_per_token": "bits/token"}
    batch = torch.stack([train[i] for i in range(len(train))])
    first = model.loss(batch)
    assert set(first) == {"loss", "bits_per_token"}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(30):
        loss = model.loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(model.loss(batch)["loss"].detach()) < float(first["loss"].detach()) - 2.0


def test_sample_from_bos_cached_equals_uncached(chorales):
    train, _ = chorales
    torch.manual_seed(0)
    model = GPT(GPT.config_for_data(train, TINY)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8.0)  # varied greedy continuations
    prompts = [[BOS], [BOS, 100, 250, 4]]
    assert model.generate(prompts, 20, temperature=0) == model.generate_uncached(prompts, 20)
    samples = model.sample(4, seed=1)
    assert samples.dtype == torch.int64 and samples.shape[0] == 4 and samples.shape[1] <= model.config.context
    assert (samples[:, 0] == BOS).all()
    for row in samples.tolist():
        if EOS in row:
            assert all(t == PAD for t in row[row.index(EOS) + 1:])
    assert torch.equal(samples, model.sample(4, seed=1))
    with pytest.raises(ValueError, match="no text prompt"):
        model.sample(1, prompt="def f")


def test_files_figures_and_evaluate_match_music_lstm(chorales):
    train, test = chorales
    torch.manual_seed(0)
    model = GPT(GPT.config_for_data(train, TINY)).eval()
    samples = model.sample(2, max_new_tokens=30, seed=0)
    files = model.sample_files(samples.float())
    assert sorted(files) == ["sample_00.mid", "sample_00.wav", "sample_01.mid", "sample_01.wav"]
    assert midi_to_events(files["sample_00.mid"])[0] == BOS
    with wave.open(io.BytesIO(files["sample_01.wav"])) as w:
        assert w.getframerate() == 16000
    assert set(model.figures(samples)) == {"piano_roll"}
    metrics = model.evaluate(test, max_items=4)
    assert EVAL_KEYS <= set(metrics)
    lstm = MusicLSTM(MusicLSTMConfig(embed_dim=8, hidden_size=8, num_layers=1, context=32)).eval()
    assert set(metrics) == set(lstm.evaluate(test, max_items=4, num_samples=16, max_new_tokens=30))
    assert metrics["unigram_nll"] == pytest.approx(lstm.evaluate(test, max_items=4, num_samples=0)["unigram_nll"])
    assert np.isfinite(metrics["loss"]) and metrics["tokens"] == 4 * 32


def test_text_and_music_do_not_mix(chorales):
    train, _ = chorales
    text_gpt = GPT(GPTConfig(**TINY))
    with pytest.raises(ValueError, match="is music, but this GPT is a text model"):
        text_gpt.check_dataset(train)
    music_gpt = GPT(GPT.config_for_data(train, TINY))
    from genkernels.data.text import TextDataset
    with pytest.raises(ValueError, match="this GPT is a music model"):
        music_gpt.check_dataset(TextDataset.from_bytes(torch.arange(100, dtype=torch.uint8), block_size=8))
    grid = ChoralesDataset("train", form="grid", block_size=32, max_pieces=2)
    with pytest.raises(ValueError, match="form 'grid'"):
        music_gpt.check_dataset(grid)
    with pytest.raises(ValueError, match="must lie in"):
        music_gpt.loss(torch.full((1, 9), 600))
    # the text model is as before: bits per byte
    assert "bits_per_byte" in text_gpt.loss(torch.randint(0, 256, (2, 9)))


def test_cli_train_gpt_on_music(tmp_path, capsys):
    from genkernels.cli import main

    folder = write_midi_folder(tmp_path / "midi")
    out = tmp_path / "run"
    code = main(["train", "gpt", "--data", str(folder), "--out", str(out), "--steps", "2", "--batch-size", "4",
                 "--eval-every", "2", "--eval-max-items", "2", "--num-samples", "2", "--checkpoint-every", "0",
                 "--no-progress", "--device", "cpu", "--precision", "fp32",
                 "--set", "dim=16", "--set", "depth=1", "--set", "num_heads=2"])
    assert code == 0, capsys.readouterr().err
    assert {"piano_roll.png", "sample_00.mid", "sample_00.wav", "metrics.json"} <= {p.name for p in out.iterdir()}
    code = main(["sample", str(out), "-n", "2", "--max-new-tokens", "20", "--out", str(tmp_path / "s"),
                 "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert {"sample_01.mid", "sample_01.wav", "piano_roll.png"} <= {p.name for p in (tmp_path / "s").iterdir()}
    capsys.readouterr()
    code = main(["eval", str(out), "--max-items", "2", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert {"bits_per_token", "unigram_nll", "bigram_nll", "samples_in_key"} <= set(json.loads(captured.out)["metrics"])
