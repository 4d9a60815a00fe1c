"""The `genkernels bench` table runs end to end (tiny sizes) and records what it measured, and the
pytest-benchmark files in bench/ time the same case definitions (genkernels/bench/*)."""
import importlib.util
import json
from pathlib import Path

import torch

from genkernels.bench import diffusion, main, overhead

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
