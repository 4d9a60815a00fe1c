"""WaveNet generation speed: incremental (ring buffers, O(layers) per sample; Paine et al. 2016)
against naive recomputation (the whole network over the receptive field for every sample).

Per model size, in one run: the two samplers are first checked to draw the same codes from the
same seed; then samples/second of each at steady state (all clips of the batch together), their
ratio, and the real-time factor at 16 kHz of each clip (steps per second / 16,000; > 1 is faster
than real time).

Steady state: the incremental sampler's cost per sample does not depend on t, so it is timed over
whole `generate` calls. The naive sampler's cost grows until t reaches the receptive field and is
constant after; it is timed as one of its steps at that point (network over a full receptive-field
window + the draw), what every later sample costs.
"""
from __future__ import annotations

import time

import torch

from genkernels.models.wavenet import WaveNet, WaveNetConfig

# (name, config fields): receptive field 2,047 samples (10 layers, dilations 1..512, 2 cycles)
MODELS = (
    ("20 layers, R=32 S=64", dict(residual_channels=32, skip_channels=64, layers_per_cycle=10, cycles=2)),
    ("20 layers, R=64 S=64", dict(residual_channels=64, skip_channels=64, layers_per_cycle=10, cycles=2)),
    ("30 layers, R=64 S=64", dict(residual_channels=64, skip_channels=64, layers_per_cycle=10, cycles=3)),
)
TINY_MODELS = (("tiny, RF 15", dict(residual_channels=4, skip_channels=4, layers_per_cycle=3, cycles=2)),)
REAL_TIME_RATE = 16_000


def _median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bench_model(fields: dict, batch: int = 1, length: int = 256, repeat: int = 3, device="cpu") -> dict:
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(**fields)).to(device).eval()
    field = model.config.receptive_field
    # correctness before timing: both samplers draw the same codes from the same seed
    same = torch.equal(model.generate(batch, 48, seed=1), model.generate(batch, 48, seed=1, incremental=False))
    if not same:
        raise AssertionError("incremental and naive samplers disagree")

    model.generate(batch, 16, seed=0)  # warm-up
    incremental = _median_seconds(lambda: model.generate(batch, length, seed=0), repeat) / length

    window = torch.randint(0, model.config.num_levels, (batch, field), device=device)
    uniforms = torch.rand(batch, device=device, dtype=torch.float64)

    @torch.no_grad()
    def naive_step():
        model._draw(model.network(window)[:, :, -1], uniforms, 1.0)

    naive_step()
    naive = _median_seconds(naive_step, max(repeat, 5))
    return {"receptive_field": field, "layers": len(model.layers), "batch": batch,
            "parameters": sum(p.numel() for p in model.parameters()),
            "incremental_samples_per_s": batch / incremental, "naive_samples_per_s": batch / naive,
            "speedup": naive / incremental,
            "real_time_factor_16khz": 1.0 / incremental / REAL_TIME_RATE}


def run_suite(device, models=None, batches=(1, 16), length: int = 256, repeat: int = 3) -> list[dict]:
    """One row per model and batch (the table of `genkernels bench --suite wavenet` and of main);
    models: (name, config fields) pairs, default MODELS."""
    rows = []
    for name, fields in MODELS if models is None else models:
        for batch in batches:
            rows.append({"model": name, **bench_model(fields, batch, length, repeat, device=device)})
    return rows


def format_row(row: dict) -> str:
    return (f"{row['model']:22s} batch {row['batch']:3d}  RF {row['receptive_field']}  incremental "
            f"{row['incremental_samples_per_s']:9.0f} samples/s  naive {row['naive_samples_per_s']:8.1f} "
            f"samples/s  speedup {row['speedup']:6.1f}x  real-time factor at 16 kHz "
            f"{row['real_time_factor_16khz']:.3f}")


def main(argv=None) -> int:
    import argparse
    import json
    import os
    import platform

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--length", type=int, default=256, help="samples per timed incremental call")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name, fields in MODELS:
        for batch in args.batch:
            rows += run_suite(args.device, ((name, fields),), (batch,), args.length)
            print(format_row(rows[-1]), flush=True)
    if args.json:
        environment = {"device": str(args.device), "threads": args.threads, "torch": torch.__version__,
                       "python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                       "dtype": "float32", "cpus": os.cpu_count(),
                       "load_average_1min_at_end": os.getloadavg()[0]}  # other jobs sharing the cores
        with open(args.json, "w") as file:
            json.dump({"environment": environment, "results": rows}, file, indent=2)
            file.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
