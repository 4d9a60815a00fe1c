"""MusicLSTM: training lowers the loss, stateful generation equals re-running the prefix, samples
become MIDI that reads back and WAV, evaluate's keys, bad input, and the CLI end to end."""
import io
import json
import wave

import numpy as np
import pytest
import torch

pytest.importorskip("mido")

from genkernels.data.music import (  # noqa: E402
    BOS, EOS, PAD, ChoralesDataset, MidiFolderDataset, decode_events, encode_events, events_to_midi, grid_to_notes,
    midi_to_events,
)
from genkernels.metrics.music import random_pieces  # noqa: E402
from genkernels.models import REGISTRY, get_model_class  # noqa: E402
from genkernels.models._music import evaluate_music, music_sample_files, pad_rows  # noqa: E402
from genkernels.models.music_lstm import MusicLSTM, MusicLSTMConfig  # noqa: E402

TINY = {"embed_dim": 16, "hidden_size": 32, "num_layers": 2}
STAT_KEYS = {f"{s}_{k}" for s in ("samples", "random", "unigram")
             for k in ("pitch_class_js", "note_length_js", "interval_js", "in_key", "mean_polyphony")}
EVAL_KEYS = {"loss", "bits_per_token", "unigram_nll", "unigram_bits_per_token", "bigram_nll",
             "bigram_bits_per_token", "samples_steps", "samples_ended", "heldout_in_key",
             "heldout_mean_polyphony"} | STAT_KEYS


def write_midi_folder(path, count: int = 20, steps: int = 256):
    """`count` MIDI files of random four-voice pieces (every 20th file goes to val and to test)."""
    path.mkdir(parents=True, exist_ok=True)
    for i, (grid, onsets) in enumerate(random_pieces(count, steps, seed=1)):
        events_to_midi(grid, path / f"piece_{i:02d}.mid", onsets=onsets)
    return path


@pytest.fixture(scope="module")
def midi_folder(tmp_path_factory):
    return write_midi_folder(tmp_path_factory.mktemp("midi"))


@pytest.fixture(scope="module")
def chorales():
    pytest.importorskip("music21")
    return (ChoralesDataset("train", block_size=32, max_pieces=6),
            ChoralesDataset("test", block_size=32, max_pieces=3))


def shaken(model: MusicLSTM, scale: float = 0.6, seed: int = 0) -> MusicLSTM:
    """Random weights large enough that greedy generation wanders over many tokens."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            p.copy_(1 + 0.1 * noise if "ln_weight" in name else noise * scale)  # layer-norm gains near 1
    return model.eval()


def test_registered_and_config_from_data(chorales):
    train, _ = chorales
    assert REGISTRY["music-lstm"] == "genkernels.models.music_lstm:MusicLSTM"
    assert get_model_class("music-lstm") is MusicLSTM
    config = MusicLSTM.config_for_data(train, {"hidden_size": 16})
    assert (config.vocab_size, config.form, config.context, config.hidden_size) == (535, "events", 32, 16)
    grid = ChoralesDataset("train", form="grid", block_size=32, max_pieces=2)
    assert MusicLSTM.config_for_data(grid).vocab_size == 130
    with pytest.raises(ValueError, match="music-lstm trains on music"):
        MusicLSTM.config_for_data(torch.utils.data.TensorDataset(torch.zeros(2)))


def test_loss_drops_below_unigram(chorales):
    train, test = chorales
    torch.manual_seed(0)
    model = MusicLSTM(MusicLSTM.config_for_data(train, {**TINY, "dropout": 0.0}))
    batch = torch.stack([train[i] for i in range(len(train))])
    first = float(model.loss(batch)["loss"].detach())
    assert abs(first - np.log(535)) < 0.2  # near uniform at init
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = model.loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    metrics = model.evaluate(train, num_samples=0)
    assert metrics["loss"] < first - 2.0
    assert metrics["loss"] < metrics["unigram_nll"]  # on its own training windows
    assert metrics["bits_per_token"] == pytest.approx(metrics["loss"] / np.log(2))


@pytest.mark.parametrize("options", [{}, {"layer_norm": True}, {"num_layers": 1}, {"num_layers": 1, "hidden_size": 256}])
def test_stateful_generation_equals_rerunning_the_prefix(options):
    torch.manual_seed(0)
    model = shaken(MusicLSTM(MusicLSTMConfig(**{**TINY, **options})))
    prompts = [[BOS], [BOS, 100, 250, 4], [BOS, 30]]  # different lengths: the step-by-step prompt path
    cached = model.generate(prompts, 24, temperature=0, stop_tokens=[])
    assert cached == model.generate_uncached(prompts, 24)
    assert len({t for row in cached for t in row}) > 5  # not a constant sequence
    same = model.generate([[BOS, 100, 250, 4]] * 2, 24, temperature=0, stop_tokens=[])  # one-pass prompt path
    assert same == [cached[1]] * 2
    # The carried state gives the logits of the whole-sequence forward at every step (at the
    # model's own init: the shaken weights above are chaotic, rounding differences grow in them).
    model = MusicLSTM(MusicLSTMConfig(**{**TINY, **options})).eval()
    tokens = torch.randint(0, 535, (2, 30))
    full, _ = model(tokens)
    state, steps = None, []
    for t in range(tokens.shape[1]):
        logits, state = model(tokens[:, t:t + 1], state)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_sample_rows_stop_and_pad():
    torch.manual_seed(0)
    model = MusicLSTM(MusicLSTMConfig(**TINY)).eval()
    with torch.no_grad():  # make EOS likely so some rows stop early
        model.head.bias[EOS] = 4.0
    samples = model.sample(6, max_new_tokens=40, seed=3)
    assert samples.dtype == torch.int64 and samples.shape[0] == 6 and samples.shape[1] <= 41
    assert (samples[:, 0] == BOS).all()
    stopped = 0
    for row in samples.tolist():
        if EOS in row:
            stopped += 1
            assert all(t == PAD for t in row[row.index(EOS) + 1:])
    assert stopped >= 1
    assert torch.equal(samples, model.sample(6, max_new_tokens=40, seed=3))  # seeded
    primed = model.sample(2, max_new_tokens=5, temperature=0, primer=[300, 4])
    assert primed[:, :3].tolist() == [[BOS, 300, 4]] * 2


def test_sample_files_write_midi_that_reads_back_and_wav(tmp_path):
    torch.manual_seed(0)
    model = shaken(MusicLSTM(MusicLSTMConfig(**TINY)), scale=0.3)
    assert len(model.sample_files(model.sample(3, max_new_tokens=80, seed=0))) == 6
    # rows as sample() gives them (BOS ... EOS, PAD), holding known music
    samples = pad_rows([encode_events(g, o).tolist() for g, o in random_pieces(2, 48, seed=2)], PAD)
    files = model.sample_files(samples.float())  # the CLI hands samples over as float
    assert sorted(files) == ["sample_00.mid", "sample_00.wav", "sample_01.mid", "sample_01.wav"]
    for i in range(2):
        # the same notes (a MIDI file's voices are re-ordered by mean pitch when read, so compare
        # (start, duration, pitch) without the voice)
        notes = grid_to_notes(*decode_events(samples[i].numpy()))[:, :3]
        back = grid_to_notes(*decode_events(midi_to_events(files[f"sample_{i:02d}.mid"])))[:, :3]
        assert len(notes) > 10 and sorted(map(tuple, back)) == sorted(map(tuple, notes))
        with wave.open(io.BytesIO(files[f"sample_{i:02d}.wav"])) as w:
            assert w.getnchannels() == 1 and w.getsampwidth() == 2 and w.getframerate() == 16000
    assert files == music_sample_files(samples, "events")
    figures = model.figures(samples)
    assert set(figures) == {"piano_roll"}
    from genkernels.figures import save_figures
    save_figures(figures, tmp_path)
    assert (tmp_path / "piano_roll.png").read_bytes().startswith(b"\x89PNG")


def test_evaluate_keys_and_baselines(chorales):
    train, test = chorales
    torch.manual_seed(0)
    model = MusicLSTM(MusicLSTM.config_for_data(train, TINY)).eval()
    metrics = model.evaluate(test, max_items=4, num_samples=3, max_new_tokens=60, train=train)
    assert EVAL_KEYS | {f"train_{k}" for k in ("pitch_class_js", "in_key")} <= set(metrics)
    assert metrics["tokens"] == 4 * 32
    assert metrics["bigram_nll"] < metrics["unigram_nll"] < np.log(535)
    assert all(np.isfinite(v) for k, v in metrics.items() if not k.startswith("samples_"))
    # The same numbers from the shared helper with the model's NLL.
    again = evaluate_music(test, model._nll, None, form="events", vocab_size=535, max_items=4, train=train)
    assert again["loss"] == pytest.approx(metrics["loss"]) and again["unigram_nll"] == metrics["unigram_nll"]


def test_bad_input_errors():
    model = MusicLSTM(MusicLSTMConfig(**TINY))
    with pytest.raises(ValueError, match="batch must be an int64 tensor"):
        model.loss(torch.zeros(2, 9))
    with pytest.raises(ValueError, match=r"must lie in \[0, vocab_size = 535\)"):
        model.loss(torch.full((2, 9), 535))
    with pytest.raises(ValueError, match="windows"):
        model.loss(torch.zeros(2, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="prompt_tokens"):
        model.generate(torch.zeros(1, 3), 4)
    with pytest.raises(ValueError, match="outside"):
        model.generate([[BOS, 999]], 4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate([[BOS]], -1)
    with pytest.raises(ValueError, match="vocab_size must be 130 for form='grid'"):
        MusicLSTMConfig(form="grid")
    with pytest.raises(ValueError, match="form"):
        MusicLSTMConfig(form="notes")
    with pytest.raises(ValueError, match="dropout must be < 1"):
        MusicLSTMConfig(dropout=1.0)
    with pytest.raises(ValueError, match="whole token ids"):
        model.sample_files(torch.tensor([[1.5, 2.0]]))


def test_grid_form_generates_and_decodes():
    torch.manual_seed(0)
    model = shaken(MusicLSTM(MusicLSTMConfig(vocab_size=130, form="grid", **TINY)), scale=0.3)
    samples = model.sample(2, max_new_tokens=64, seed=1)
    assert (samples[:, 0] == 129).all()
    files = model.sample_files(samples)
    assert len(files) == 4 and files["sample_00.mid"].startswith(b"MThd")


def test_cli_train_sample_eval(tmp_path, midi_folder, capsys):
    from genkernels.cli import main

    out = tmp_path / "run"
    code = main(["train", "music-lstm", "--data", str(midi_folder), "--out", str(out), "--steps", "2",
                 "--batch-size", "4", "--eval-every", "2", "--eval-max-items", "2", "--num-samples", "2",
                 "--checkpoint-every", "0", "--no-progress", "--device", "cpu",
                 "--set", "hidden_size=16", "--set", "embed_dim=8", "--set", "num_layers=1"])
    assert code == 0, capsys.readouterr().err
    assert {"piano_roll.png", "sample_00.mid", "sample_00.wav", "loss.png", "metrics.json"} <= {
        p.name for p in out.iterdir()}
    code = main(["sample", str(out), "-n", "2", "--max-new-tokens", "30", "--out", str(tmp_path / "s"),
                 "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    written = {p.name for p in (tmp_path / "s").iterdir()}
    assert {"sample_00.mid", "sample_01.mid", "sample_00.wav", "piano_roll.png"} <= written
    assert midi_to_events(tmp_path / "s" / "sample_01.mid")[0] == BOS
    capsys.readouterr()
    code = main(["eval", str(out), "--max-items", "2", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert "loss" in result["losses"] and {"bits_per_token", "unigram_nll", "samples_pitch_class_js"} <= set(
        result["metrics"])
    assert isinstance(MidiFolderDataset(midi_folder, "test"), MidiFolderDataset)
