"""The `genkernels bench` table runs end to end (tiny sizes) and records what it measured, and the
pytest-benchmark files in bench/ time the same case definitions (genkernels/bench/*)."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from genkernels.bench import diffusion, main, overhead
from tests.helpers import triton_device, triton_test

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench_module(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"bench_{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_writes_every_provider(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--numel", "4096", "--batch", "4", "--no-compile", "--suite", "diffusion", "overhead",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["environment"]["torch"]
    rows = result["diffusion"]
    ops = {r["op"] for r in rows}
    assert ops == {"q_sample", "diffusion_loss", "diffusion_loss_fwd_bwd", "ddpm_step", "ddim_step"}
    assert {r["provider"] for r in rows} >= {"eager", "cpu"}
    assert all(r["ms"] > 0 and r["GB/s"] > 0 for r in rows)
    assert [r["case"] for r in result["overhead"]] == list(overhead.cases())
    assert all(r["us_per_call"] > 0 for r in result["overhead"])
    assert "speedup_vs_eager" in capsys.readouterr().out


def test_pytest_benchmark_cases_are_the_suite_cases():
    bench_overhead = _bench_module("overhead")
    assert list(bench_overhead.CASES) == list(overhead.cases())
    for name, fn in bench_overhead.CASES.items():  # every case runs and returns a result
        out = fn()
        outs = out if isinstance(out, tuple) else (out,)
        assert all(isinstance(o, torch.Tensor) for o in outs) and outs[0].numel(), name
    bench_diffusion = _bench_module("diffusion")
    marks = {m.args[0]: m.args[1] for m in bench_diffusion.test_diffusion_op.pytestmark}
    assert list(marks["op"]) == list(diffusion.OPS)
    assert bench_diffusion.diffusion is diffusion


def test_model_and_masked_conv_suites_run_tiny(tmp_path, monkeypatch, capsys):
    """`genkernels bench --suite masked_conv wavenet pixelcnn` end to end on tiny tables: each
    suite checks its providers agree before timing and records what it timed."""
    from genkernels.bench import masked_conv, pixelcnn, wavenet

    monkeypatch.setattr(masked_conv, "CPU_CASES", masked_conv.TINY_CASES)
    monkeypatch.setattr(wavenet, "MODELS", wavenet.TINY_MODELS)
    monkeypatch.setattr(pixelcnn, "MODELS", pixelcnn.TINY_MODELS)
    out = tmp_path / "bench.json"
    assert main(["--suite", "masked_conv", "wavenet", "pixelcnn", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert "load_average_1min_at_end" in result["environment"]
    rows = result["masked_conv"]
    assert [(r["op"], r["mode"], r["provider"]) for r in rows] == [
        (c.name, m, p) for c in masked_conv.TINY_CASES for m in masked_conv.MODES for p in masked_conv.PROVIDERS]
    assert all(r["ms"] > 0 and r["speedup_vs_conv2d"] > 0 for r in rows)
    assert {r["backend"] for r in rows} == {"conv2d", "torch"}  # off CUDA the op runs the reference
    assert [(r["model"], r["batch"]) for r in result["wavenet"]] == [("tiny, RF 15", 1), ("tiny, RF 15", 16)]
    assert all(r["receptive_field"] == 15 and r["speedup"] > 0 and r["real_time_factor_16khz"] > 0
               for r in result["wavenet"])
    (px,) = result["pixelcnn"]
    assert px["model"] == "tiny 8x8" and px["image_shape"] == "1x8x8" and px["speedup"] > 0
    assert px["windowed_images_per_s"] > 0 and px["naive_images_per_s"] > 0
    printed = capsys.readouterr().out
    assert "speedup_vs_conv2d" in printed and "real_time_factor_16khz" in printed and "naive_images_per_s" in printed


def test_masked_conv_check_catches_a_wrong_result():
    from genkernels.bench import masked_conv

    case = masked_conv.TINY_CASES[0]
    for mode in masked_conv.MODES:
        ref = masked_conv.case_function("conv2d", case, mode)()
        masked_conv.check_close(masked_conv.case_function("genkernels", case, mode)(), ref, torch.float32, "cpu")
        wrong = tuple(r + 0.01 for r in ref) if isinstance(ref, tuple) else ref + 0.01
        try:
            masked_conv.check_close(wrong, ref, torch.float32, "cpu")
        except AssertionError:
            continue
        raise AssertionError(f"check_close accepted a wrong {mode} result")


@triton_test
def test_masked_conv_check_passes_the_triton_kernel():
    """On the GPU path (here the interpreter) the suite's correctness gate accepts the kernel."""
    import genkernels
    from genkernels.bench import masked_conv

    device = triton_device()
    for case in masked_conv.TINY_CASES:
        for mode in masked_conv.MODES:
            with genkernels.use_backend("triton"):
                out = masked_conv.case_function("genkernels", case, mode, torch.float32, device)()
            ref = masked_conv.case_function("conv2d", case, mode, torch.float32, device)()
            masked_conv.check_close(out, ref, torch.float32, device)


def test_model_and_masked_conv_bench_files_use_the_suite_tables(tmp_path, monkeypatch):
    from genkernels.bench import masked_conv, pixelcnn, wavenet

    bench_masked_conv = _bench_module("masked_conv")
    assert bench_masked_conv.masked_conv is masked_conv
    assert bench_masked_conv.CASES == masked_conv.default_cases(bench_masked_conv.DEVICE)
    marks = {m.args[0]: m.args[1] for m in bench_masked_conv.test_masked_conv.pytestmark}
    assert tuple(marks["case"]) == bench_masked_conv.CASES
    assert tuple(marks["mode"]) == masked_conv.MODES and tuple(marks["provider"]) == masked_conv.PROVIDERS
    bench_pixelcnn = _bench_module("pixelcnn")
    assert bench_pixelcnn.pixelcnn is pixelcnn and bench_pixelcnn.MODELS is pixelcnn.MODELS
    monkeypatch.setattr(pixelcnn, "MODELS", pixelcnn.TINY_MODELS)  # its script writes the suite's rows
    out = tmp_path / "pixelcnn.json"
    threads = torch.get_num_threads()
    try:
        assert bench_pixelcnn.main(["--device", "cpu", "--batch", "2", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    assert [r["model"] for r in json.loads(out.read_text())["pixelcnn"]] == ["tiny 8x8"]
    assert _bench_module("wavenet").main is wavenet.main


def test_norm_suite_runs_tiny(tmp_path, monkeypatch):
    """`genkernels bench --suite norm` end to end on tiny shapes: every provider agrees with the
    eager reference before it is timed, at 1 and 2 threads; bench/bench_norm.py times the same cases."""
    from genkernels.bench import norm

    monkeypatch.setattr(norm, "CASES", norm.TINY_CASES)
    quick = norm.measure_interleaved
    monkeypatch.setattr(norm, "measure_interleaved", lambda fns, device: quick(fns, device, warmup=1, repeat=2,
                                                                                min_time=0.0))
    out = tmp_path / "norm.json"
    assert main(["--device", "cpu", "--suite", "norm", "--no-compile", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["norm"]
    assert {r["op"] for r in rows} == {c[0] for c in norm.TINY_CASES}
    assert {r["provider"] for r in rows} >= {"eager"} and all(r["ms"] > 0 for r in rows)
    bench_norm = _bench_module("norm")
    assert bench_norm.norm is norm
    marks = {m.args[0]: m.args[1] for m in bench_norm.test_norm_op.pytestmark}
    assert [c[0] for c in marks["case"]] == [c[0] for c in norm.CASES]


def test_sampler_suite_runs_tiny():
    """The `sampler` suite's cases on tiny images: the fused and unfused sampling loops agree (the
    suite checks it before timing) and every rate is positive."""
    from genkernels.bench import sampler

    rows = sampler.run_suite("cpu", sizes=(8,), batch=4, repeat=2)
    assert {r["sampler"] for r in rows} == {c[0] for c in sampler.CASES}
    assert all(r["fused_images_per_s"] > 0 and r["unfused_images_per_s"] > 0 for r in rows)
    assert all(r["max_abs_diff"] <= 1e-3 for r in rows)


def test_transformer_ops_suite_runs_tiny():
    """The `transformer_ops` cases on tiny shapes: every provider agrees with the eager reference
    before it is timed; the linear + cross-entropy rows report a peak memory below the
    materialised-logits path's."""
    from genkernels.bench import transformer_ops

    rows = transformer_ops.run_suite("cpu", with_compile=False, cases=transformer_ops.TINY_CASES, lce=(64, 16, 512))
    ops = {r["op"] for r in rows}
    assert {c[0] for c in transformer_ops.TINY_CASES} <= ops
    assert all(r["ms"] > 0 for r in rows)


def test_unet_suite_runs_tiny():
    """The `unet` suite on a tiny UNet: training step, sampling step (with the share of time outside
    matmul / convolution / attention) and guided sampling rows, each provider checked before timing."""
    from genkernels.bench import unet

    rows = unet.run_suite("cpu", with_compile=False, tiny=True)
    assert [r["provider"] for r in rows["train"]] == ["eager, reference ops", "eager, fused ops"]
    assert all(r["ms"] > 0 for r in rows["train"] + rows["step"])
    assert all(0 <= r["outside_matmul_conv_attn"] <= 1 for r in rows["step"])
    assert all(r["images_per_s"] > 0 for r in rows["sampler"] if "images_per_s" in r)


def test_generation_suite_runs_tiny(monkeypatch):
    """The `generation` suite on a tiny GPT: cached and recomputed greedy generation agree (checked
    before timing), the integrated recompute estimate is reported beside the measurement, the
    linear + cross-entropy rows cover every provider and the training rows are positive."""
    from genkernels.bench import SUITES, generation

    assert "generation" in SUITES
    lce_shapes = []  # lce_rows runs subprocesses: checked once below, outside run_suite
    monkeypatch.setattr(generation, "lce_rows", lambda device, shape: lce_shapes.append(shape) or [
        {"provider": p, "ms": 1.0, "peak_MiB": 1.0} for p in ("materialised", "chunked", "chunked_recompute")])
    rows = generation.run_suite("cpu", with_compile=False, tiny=True)
    assert lce_shapes == list(generation.TINY["lce"])
    gen = rows["generation"]
    assert [r["tokens"] for r in gen] == list(generation.TINY["lengths"])
    assert all(r["recompute_method"] == "measured" and r["cached_tokens_per_s"] > 0 and r["speedup"] > 0
               and r["recompute_estimate_error"] is not None for r in gen)
    assert [r["provider"] for r in rows["lce"]] == ["materialised", "chunked", "chunked_recompute"]
    assert all(r["ms"] > 0 and r["peak_MiB"] > 0 for r in rows["lce"])
    assert [r["provider"] for r in rows["train"]] == ["eager"] and rows["train"][0]["tokens_per_s"] > 0
    # the longest lengths are integrated, not run, when past measure_up_to
    (row,) = generation.generation_rows("cpu", (12,), generation.TINY["config"], prompt=4, measure_up_to=8,
                                        points=3, repeat=1)
    assert row["recompute_method"].startswith("integrated") and row["recompute_tokens_per_s"] > 0
    bench_generation = _bench_module("generation")
    assert bench_generation.generation is generation


def test_lstm_suite_runs_tiny(tmp_path, monkeypatch):
    """`genkernels bench --suite lstm` end to end on tiny sizes: every provider's output is checked
    against torch.nn.LSTM (or the eager LN-LSTM) before it is timed; bench/bench_lstm.py times the
    same training cases."""
    from genkernels.bench import lstm

    monkeypatch.setattr(lstm, "TRAIN_CASES", lstm.TINY_TRAIN)
    monkeypatch.setattr(lstm, "LN_CASES", lstm.TINY_LN)
    monkeypatch.setattr(lstm, "GEN_CASES", lstm.TINY_GEN)
    monkeypatch.setattr(lstm, "TIMING", dict(warmup=1, repeat=2, min_time=0.0))
    out = tmp_path / "lstm.json"
    assert main(["--device", "cpu", "--suite", "lstm", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["lstm"]
    assert {r["provider"] for r in rows["train"]} == {"torch.nn.LSTM", "eager LN-LSTM", "genkernels.nn.LSTM"}
    assert len(rows["generation"]) == 4 and all(r["us_per_step"] > 0 for r in rows["generation"])
    assert _bench_module("lstm").lstm is lstm


def test_molecules_suite_runs_tiny(tmp_path, monkeypatch):
    """`genkernels bench --suite molecules` end to end on tiny models: every provider draws the same
    molecules from the same seed (checked) before it is timed; the metric timing is skipped here."""
    pytest.importorskip("rdkit")
    from genkernels.bench import molecules

    original = molecules.sampling_rows
    monkeypatch.setattr(molecules, "sampling_rows", lambda device, batch: original(device, batch, repeat=1, tiny=True))
    out = tmp_path / "molecules.json"
    assert main(["--device", "cpu", "--suite", "molecules", "--moses-molecules", "0", "--sampling-batch", "8",
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["molecules"]["sampling"]
    assert [r["model"] for r in rows] == ["smiles-lstm"] * 3 + ["smiles-gpt"] * 2
    assert all(r["molecules_per_s"] > 0 and r["tokens_per_s"] > 0 for r in rows)
