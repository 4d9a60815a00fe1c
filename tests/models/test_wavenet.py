"""WaveNet: causality of the whole model, incremental sampling equal to naive recomputation,
learning on the synthetic audio, and the CLI train / sample / eval path (WAV output)."""
import json
import math

import pytest
import torch

from genkernels.cli import main
from genkernels.data import get_dataset
from genkernels.data.audio import read_wav
from genkernels.models import get_model_class
from genkernels.models.wavenet import WaveNet, WaveNetConfig

TINY = dict(residual_channels=6, skip_channels=8, kernel_size=2, layers_per_cycle=3, cycles=2, num_levels=16)


def test_config_validation_and_receptive_field():
    config = WaveNetConfig(layers_per_cycle=10, cycles=2, kernel_size=2)
    assert config.dilations == [2 ** i for i in range(10)] * 2
    assert config.receptive_field == 1 + 2 * 1023
    assert WaveNetConfig(**TINY).receptive_field == 15
    with pytest.raises(TypeError, match="WaveNetConfig.residual_channels must be an int"):
        WaveNetConfig(residual_channels=2.5)
    with pytest.raises(ValueError, match="WaveNetConfig.num_levels must be >= 2"):
        WaveNetConfig(num_levels=1)
    with pytest.raises(ValueError, match="WaveNetConfig.dropout must be < 1"):
        WaveNetConfig(dropout=1.0)


def test_whole_model_is_causal():
    """Changing codes at s > t leaves the logits at <= t bit for bit; position t+1 sees code t."""
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(**TINY)).double().eval()
    codes = torch.randint(0, 16, (2, 30))
    logits = model(codes)
    assert logits.shape == (2, 16, 30)
    for t in (0, 7, 20, 28):
        changed = codes.clone()
        changed[:, t:] = (changed[:, t:] + 5) % 16
        other = model(changed)
        assert torch.equal(other[:, :, :t + 1], logits[:, :, :t + 1]), f"logits at <= {t} see code {t}"
        assert not torch.equal(other[:, :, t + 1], logits[:, :, t + 1])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("conditioned, temperature", [(False, 1.0), (True, 0.7), (False, 0.0)])
def test_incremental_generation_equals_naive_recomputation(dtype, conditioned, temperature):
    """Same seed, same uniforms: the ring-buffer sampler draws the naive sampler's codes, over a
    length (40) well past the receptive field (15), so the naive windowing is exercised too."""
    torch.manual_seed(0)
    config = WaveNetConfig(**TINY, num_classes=3 if conditioned else 0, cond_dim=4)
    model = WaveNet(config).to(dtype)
    with torch.no_grad():  # sharper logits than at init, so the draws depend on the context
        for p in model.parameters():
            p.mul_(3.0)
    labels = [0, 2, 1] if conditioned else None
    fast = model.generate(3, 40, temperature=temperature, labels=labels, seed=123)
    naive = model.generate(3, 40, temperature=temperature, labels=labels, seed=123, incremental=False)
    assert fast.shape == (3, 40) and fast.dtype == torch.long
    assert torch.equal(fast, naive)
    assert temperature == 0 or len(fast.unique()) > 3  # random draws, not a constant sequence
    other_seed = model.generate(3, 40, temperature=temperature, labels=labels, seed=124)
    assert temperature == 0 or not torch.equal(fast, other_seed)
    # the full forward pass scores the drawn codes
    assert torch.isfinite(model.log_prob(fast, torch.tensor(labels) if conditioned else None)).all()


def _train(model, train, steps=60):
    """`steps` seeded Adam steps (lr 3e-3) on batches of 8 clips; returns the last step's losses."""
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        indices = torch.randint(0, len(train), (8,), generator=generator).tolist()
        losses = model.loss(torch.stack([train[i] for i in indices]))
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    return losses


def test_tiny_model_learns_the_synthetic_audio():
    """60 steps on crops of the synthetic phrases: held-out bits/sample fall well below the initial
    model's (~ uniform 8 bits)."""
    torch.manual_seed(0)
    train, val = get_dataset("audio", "train"), get_dataset("audio", "val")
    model = WaveNet(WaveNet.config_for_data(train, dict(residual_channels=16, skip_channels=32,
                                                        layers_per_cycle=6, cycles=1, train_length=256)))
    model.eval()
    before = model.evaluate(val, max_items=4)
    assert before["uniform_bits_per_sample"] == 8.0 and abs(before["nll_bits_per_sample"] - 8.0) < 0.2
    losses = _train(model, train)
    assert losses["bits_per_sample"].item() == pytest.approx(losses["loss"].item() / math.log(2))
    model.eval()
    after = model.evaluate(val, max_items=4)
    assert after["nll_bits_per_sample"] < before["nll_bits_per_sample"] - 1.0
    # evaluate's bits/sample are log_prob's, per sample
    clips = torch.stack([val[i] for i in range(4)])
    bits = -model.log_prob(clips).sum().item() / clips.numel() / math.log(2)
    assert bits == pytest.approx(after["nll_bits_per_sample"], rel=1e-5)


def test_sample_returns_audio_and_figures_and_wav():
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(**TINY, sample_length=50))
    audio = model.sample(2)
    assert audio.shape == (2, 50) and audio.dtype == torch.float32 and audio.abs().max() <= 1.0
    assert model.sample(1, length=7).shape == (1, 7)
    figure = model.figures(audio)["samples"]
    assert len(figure.axes) == 4  # waveform and spectrogram per clip
    wav = model.sample_files(audio)["samples.wav"]
    assert wav[:4] == b"RIFF"
    with pytest.raises(ValueError, match="unconditional"):
        model.sample(2, labels=1)
    assert get_model_class("wavenet") is WaveNet and WaveNet.sample_conditions() == ["labels", "temperature", "length"]


def test_conditional_model_needs_labels():
    model = WaveNet(WaveNetConfig(**TINY, num_classes=2))
    with pytest.raises(ValueError, match="must give \\(audio, label\\) pairs"):
        model.loss(torch.zeros(2, 20))
    losses = model.loss((torch.zeros(2, 20), torch.tensor([0, 1])))
    assert torch.isfinite(losses["loss"])
    with pytest.raises(ValueError, match="needs \\(audio, label\\) items"):
        WaveNet.config_for_data(get_dataset("audio", "val"), {"num_classes": 2})
    with pytest.raises(ValueError, match="wavenet trains on audio"):
        WaveNet.config_for_data(get_dataset("moons", "train"), {}, data_name="moons")


def test_cli_train_sample_eval_write_wav(capsys, tmp_path):
    out = tmp_path / "run"
    settings = ["residual_channels=8", "skip_channels=8", "layers_per_cycle=3", "cycles=1", "train_length=128",
                "sample_length=300"]
    argv = ["train", "wavenet", "--out", str(out), "--steps", "5", "--batch-size", "4", "--eval-every", "0",
            "--eval-max-items", "2", "--num-samples", "2", "--checkpoint-every", "0", "--no-progress",
            "--device", "cpu"] + [arg for s in settings for arg in ("--set", s)]
    assert main(argv) == 0, capsys.readouterr().err
    assert {"samples.png", "samples.wav", "loss.png", "metrics.json", "checkpoint"} <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval"]["eval/uniform_bits_per_sample"] == 8.0
    capsys.readouterr()
    assert main(["sample", str(out), "-n", "2", "--out", str(tmp_path / "s"), "--device", "cpu",
                 "--condition", "length=200"]) == 0, capsys.readouterr().err
    audio, rate = read_wav(tmp_path / "s" / "samples.wav")
    assert rate == 8000 and audio.shape == (2 * (200 + 2000),)  # each clip + 0.25 s of silence
    assert (tmp_path / "s" / "samples.png").is_file()
    capsys.readouterr()
    assert main(["eval", str(out), "--max-items", "2", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["nll_bits_per_sample"] > 0


def test_generation_bench_runs_and_checks_the_samplers_agree(tmp_path):
    from genkernels.bench import wavenet as bench

    row = bench.bench_model(dict(residual_channels=4, skip_channels=4, layers_per_cycle=4, cycles=1),
                            batch=2, length=8, repeat=1)
    assert row["receptive_field"] == 16 and row["layers"] == 4 and row["batch"] == 2
    assert row["incremental_samples_per_s"] > 0 and row["naive_samples_per_s"] > 0
    assert row["speedup"] == pytest.approx(row["incremental_samples_per_s"] / row["naive_samples_per_s"])


def test_cli_trains_on_a_folder_of_wav_files(capsys, tmp_path):
    """A user's WAV folder (written with write_wav, read back with read_wav): 21 one-second clips."""
    import numpy as np

    from genkernels.data.audio import write_wav

    folder = tmp_path / "wavs"
    folder.mkdir()
    t = np.arange(21 * 8000) / 8000
    write_wav(folder / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 8000)
    out = tmp_path / "run"
    argv = ["train", "wavenet", "--data", str(folder), "--out", str(out), "--steps", "2", "--batch-size", "2",
            "--eval-every", "0", "--num-samples", "1", "--checkpoint-every", "0", "--no-progress", "--device", "cpu",
            "--set", "residual_channels=4", "--set", "skip_channels=4", "--set", "layers_per_cycle=2",
            "--set", "train_length=64", "--set", "sample_length=100"]
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["data"] == str(folder)
    audio, rate = read_wav(out / "samples.wav")
    assert rate == 8000 and audio.shape == (100 + 2000,)


# -- logistic-mixture output head (config.likelihood = "logistic_mixture") ------------------------------

MIXTURE = dict(TINY, likelihood="logistic_mixture", num_mixtures=3)


def test_default_categorical_output_is_unchanged():
    """Values recorded before the likelihood option existed: same parameters, loss, log_prob, draws."""
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(**TINY)).double()
    assert model.config.likelihood == "categorical" and model.head_out.out_channels == 16
    assert sum(p.numel() for p in model.parameters()) == 1836
    assert model.generate(2, 12, seed=7).tolist() == [[4, 13, 14, 4, 12, 1, 2, 1, 0, 1, 14, 10],
                                                      [4, 9, 13, 8, 11, 0, 0, 13, 15, 15, 13, 4]]
    torch.manual_seed(1)
    codes = torch.randint(0, 16, (2, 20))
    model.eval()
    assert model.loss(codes)["loss"].item() == 2.7627453804016113
    assert model.log_prob(codes).tolist() == [-55.642791748046875, -54.86701965332031]


def test_mixture_config_validation():
    config = WaveNetConfig(**MIXTURE)
    assert WaveNet(config).head_out.out_channels == 9  # 3K
    with pytest.raises(ValueError, match="WaveNetConfig.likelihood must be one of"):
        WaveNetConfig(likelihood="logistic")
    with pytest.raises(ValueError, match="WaveNetConfig.num_mixtures must be >= 1"):
        WaveNetConfig(likelihood="logistic_mixture", num_mixtures=0)
    with pytest.raises(TypeError, match="WaveNetConfig.num_mixtures must be an int"):
        WaveNetConfig(num_mixtures=2.0)


def test_mixture_loss_is_finite_and_probabilities_sum_to_one():
    """L = 256, float64: p(x_T | x_<T) over all 256 last codes sums to 1, i.e. logsumexp of the
    clips' log_probs equals the log_prob of the shared prefix (causality gives the other terms)."""
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(**dict(MIXTURE, num_levels=256))).double().eval()
    prefix = torch.randint(0, 256, (1, 9))
    clips = torch.cat([prefix.expand(256, 9), torch.arange(256).unsqueeze(1)], dim=1)  # every last code
    total = torch.logsumexp(model.log_prob(clips), dim=0)
    assert model.log_prob(clips).dtype == torch.float64
    assert total.item() == pytest.approx(model.log_prob(prefix).item(), abs=1e-9)
    model.train()
    losses = model.loss(torch.rand(3, 40) * 2 - 1)
    assert torch.isfinite(losses["loss"]) and losses["loss"].item() > 0
    losses["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_mixture_incremental_generation_equals_naive(dtype, temperature):
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(**MIXTURE)).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    fast = model.generate(3, 40, temperature=temperature, seed=123)
    naive = model.generate(3, 40, temperature=temperature, seed=123, incremental=False)
    assert fast.shape == (3, 40) and fast.dtype == torch.long
    assert torch.equal(fast, naive)
    assert fast.min() >= 0 and fast.max() <= 15
    assert temperature == 0 or len(fast.unique()) > 3
    assert temperature == 0 or not torch.equal(fast, model.generate(3, 40, temperature=temperature, seed=124))
    assert torch.isfinite(model.log_prob(fast)).all()


def test_mixture_draw_follows_the_distribution():
    """The two-uniform sampler draws codes with the head's probabilities (one step, many draws)."""
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(**MIXTURE)).double()
    params = torch.randn(1, 9, dtype=torch.float64).expand(20000, 9)
    codes = model._draw(params, torch.rand(20000, 2, dtype=torch.float64), 1.0)
    frequencies = torch.bincount(codes, minlength=16).double() / 20000
    levels = torch.arange(16).unsqueeze(1)
    probs = model.head.log_prob(params[:1].unsqueeze(2).expand(16, 9, 1), levels).exp().squeeze(1)
    assert (frequencies - probs).abs().max() < 0.02


def test_tiny_mixture_model_learns():
    """60 steps on the synthetic phrases: held-out bits/sample drop by > 1 bit and below uniform (8)."""
    torch.manual_seed(0)
    train, val = get_dataset("audio", "train"), get_dataset("audio", "val")
    model = WaveNet(WaveNet.config_for_data(train, dict(residual_channels=16, skip_channels=32, layers_per_cycle=6,
                                                        cycles=1, train_length=256, likelihood="logistic_mixture")))
    model.eval()
    before = model.evaluate(val, max_items=4)["nll_bits_per_sample"]
    losses = _train(model, train)
    model.eval()
    after = model.evaluate(val, max_items=4)["nll_bits_per_sample"]
    # at init (scale ~1 on [-1, 1]) the edge bins hold much of the mass: ~9 bits, worse than uniform
    assert after < before - 1.0 and after < 8.0


def test_cli_train_and_sample_with_the_mixture(capsys, tmp_path):
    out = tmp_path / "run"
    settings = ["residual_channels=4", "skip_channels=4", "layers_per_cycle=2", "cycles=1", "train_length=64",
                "sample_length=100", "likelihood=logistic_mixture", "num_mixtures=2"]
    argv = ["train", "wavenet", "--out", str(out), "--steps", "3", "--batch-size", "2", "--eval-every", "0",
            "--eval-max-items", "1", "--num-samples", "1", "--checkpoint-every", "0", "--no-progress",
            "--device", "cpu"] + [arg for s in settings for arg in ("--set", s)]
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["eval"]["eval/nll_bits_per_sample"] > 0
    capsys.readouterr()
    assert main(["sample", str(out), "-n", "2", "--out", str(tmp_path / "s"), "--device", "cpu",
                 "--condition", "length=50"]) == 0, capsys.readouterr().err
    audio, rate = read_wav(tmp_path / "s" / "samples.wav")
    assert rate == 8000 and audio.shape == (2 * (50 + 2000),)


# -- the static-buffer sampling step (CUDA graphs) -----------------------------------------------------


def _ring_buffer_logits(model, codes, cond, n):
    """The step-by-step path of WaveNetLayer.step on Python-headed RingBuffers (the sampler before
    the static-buffer step): logits (N, P) of every step, given the drawn codes."""
    states = [layer.init_state(n, cond) for layer in model.layers]
    hidden_w, out_w = (conv.weight[:, :, 0].t().contiguous() for conv in (model.head_hidden, model.head_out))
    previous = torch.full((n,), model.start_code, dtype=torch.long)
    for t in range(codes.shape[1]):
        h, skips = model.embed(previous), 0
        for layer, state in zip(model.layers, states):
            h, skip = layer.step(h, state)
            skips = skips + skip
        hidden = torch.addmm(model.head_hidden.bias, torch.relu(skips), hidden_w).relu_()
        yield torch.addmm(model.head_out.bias, hidden, out_w)
        previous = codes[:, t]


@pytest.mark.parametrize("fields, conditioned", [(TINY, True), (MIXTURE, False)])
def test_static_buffer_step_equals_the_ring_buffer_path_bit_for_bit(fields, conditioned):
    """_sample_step (what a CUDA graph captures; run eagerly here) gives the RingBuffer path's logits
    and draws bit for bit, in float32, well past the receptive field (15)."""
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(**fields, num_classes=3 if conditioned else 0, cond_dim=4)).eval()
    n, length = 2, 40
    cond = model._cond(torch.tensor([2, 0])) if conditioned else None
    shape = (length, n) if model.head is None else (length, n, 2)
    uniforms = torch.rand(shape, dtype=torch.float64)
    with torch.no_grad():
        state = model._sampler_state(n, 0.8, cond, uniforms)
        static_logits = [model._sample_step(state) for _ in range(length)]
        assert int(state.clock.t) == length
        for t, logits in enumerate(_ring_buffer_logits(model, state.codes, cond, n)):
            assert torch.equal(static_logits[t], logits), f"step {t}"
            assert torch.equal(state.codes[:, t], model._draw(logits, uniforms[t], 0.8))
    labels = [2, 0] if conditioned else None
    assert torch.equal(model.generate(n, length, seed=5, labels=labels),
                       model.generate(n, length, seed=5, labels=labels, cuda_graph=False))


def test_cuda_graph_argument_is_checked():
    model = WaveNet(WaveNetConfig(**TINY))
    with pytest.raises(ValueError, match="cuda_graph=True .* needs a model on a CUDA device"):
        model.generate(1, 4, cuda_graph=True)
    with pytest.raises(TypeError, match="cuda_graph"):
        model.generate(1, 4, cuda_graph="yes")
    assert model.generate(1, 4, seed=0, cuda_graph=False).shape == (1, 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("fields", [TINY, MIXTURE])
def test_cuda_graph_generation_equals_eager_and_naive(fields):
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(**fields)).cuda()
    graph = model.generate(3, 40, seed=11, cuda_graph=True)
    assert torch.equal(graph, model.generate(3, 40, seed=11, cuda_graph=False))
    assert torch.equal(graph, model.generate(3, 40, seed=11, incremental=False))
    assert torch.equal(model.generate(2, 1, seed=3, cuda_graph=True), model.generate(2, 1, seed=3, cuda_graph=False))
    with pytest.raises(ValueError, match="naive sampler"):
        model.generate(1, 4, incremental=False, cuda_graph=True)


def test_causal_conv_bench_checks_and_times_both_providers():
    from genkernels.bench import wavenet as bench

    rows = bench.conv_suite("cpu", dtypes=(torch.float32,), repeat=1)
    modes_and_providers = [(m, p) for m in bench.CONV_MODES for p in bench.CONV_PROVIDERS]
    assert [(r["mode"], r["provider"]) for r in rows] == modes_and_providers
    assert all(r["ms"] > 0 and r["speedup_vs_conv1d"] > 0 for r in rows)
    case = bench.TINY_CONV_CASES[0]
    ref = bench.conv_function("conv1d", case, "fwd")()
    with pytest.raises(AssertionError, match="differs from conv1d"):
        bench._check_close(ref + 0.01, ref, torch.float32, "cpu")


@pytest.mark.parametrize("capture_fails", [False, True])
def test_cuda_graph_control_flow_with_a_stand_in_graph(monkeypatch, capture_fails):
    """generate's CUDA-graph path on a CPU, with the stream warm-up and the capture replaced by
    stand-ins (a capture records the step without running it; its replay runs it): step 0 eagerly,
    then length - 1 replays give the eager codes; a failed capture under cuda_graph=None warns and
    finishes eagerly."""
    import functools

    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(**TINY))
    captures = []

    def capture(state):
        if capture_fails:
            raise RuntimeError("operation not permitted when stream is capturing")
        captures.append(int(state.clock.t))
        return functools.partial(model._sample_step, state)

    monkeypatch.setattr(model, "_warm_up_step", model._sample_step)
    monkeypatch.setattr(model, "_capture_step", capture)
    expected = model.generate(2, 30, seed=4, cuda_graph=False)
    uniforms = torch.rand(30, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    state = model._sampler_state(2, 1.0, None, uniforms)
    if capture_fails:
        with pytest.warns(RuntimeWarning, match="sampling eagerly"):
            codes = model._generate_cuda_graph(state, 30, required=False)
        with pytest.raises(RuntimeError, match="capturing"):
            model._generate_cuda_graph(model._sampler_state(2, 1.0, None, uniforms), 30, required=True)
    else:
        codes = model._generate_cuda_graph(state, 30, required=False)
        assert captures == [1]  # captured after the eager step 0
    assert torch.equal(codes, expected) and int(state.clock.t) == 30
