"""WaveNet generation speed: incremental (ring buffers, O(layers) per sample; Paine et al. 2016)
against naive recomputation (the whole network over the receptive field for every sample).

Per model size, in one run: the two samplers are first checked to draw the same codes from the
same seed; then samples/second of each at steady state (all clips of the batch together), their
ratio, and the real-time factor at 16 kHz of each clip (steps per second / 16,000; > 1 is faster
than real time). On CUDA the incremental sampler is timed twice, as `generate` runs it by default
(the step captured once per call as a CUDA graph and replayed per sample; the capture is inside
the timed call) and eagerly (cuda_graph=False, every kernel launched from Python): columns
"eager_*" and "graph_speedup"; "graph_matches_eager" records whether both drew the same codes.

On CUDA the suite also times the dilated causal conv of a WaveNet layer (`conv_suite`):
genkernels.ops.causal_conv1d (Triton, gate fused) against F.conv1d on the left-padded input then
the tanh * sigmoid gate in eager PyTorch (cuDNN), forward and forward + backward, after checking
that they agree.

Steady state: the incremental sampler's cost per sample does not depend on t, so it is timed over
whole `generate` calls. The naive sampler's cost grows until t reaches the receptive field and is
constant after; it is timed as one of its steps at that point (network over a full receptive-field
window + the draw), what every later sample costs.
"""
from __future__ import annotations

import contextlib
import time
from typing import NamedTuple

import torch
import torch.nn.functional as F

from genkernels.models.wavenet import WaveNet, WaveNetConfig

# (name, config fields): receptive field 2,047 samples (10 layers, dilations 1..512, 2 cycles)
MODELS = (
    ("20 layers, R=32 S=64", dict(residual_channels=32, skip_channels=64, layers_per_cycle=10, cycles=2)),
    ("20 layers, R=64 S=64", dict(residual_channels=64, skip_channels=64, layers_per_cycle=10, cycles=2)),
    ("30 layers, R=64 S=64", dict(residual_channels=64, skip_channels=64, layers_per_cycle=10, cycles=3)),
)
TINY_MODELS = (("tiny, RF 15", dict(residual_channels=4, skip_channels=4, layers_per_cycle=3, cycles=2)),)
REAL_TIME_RATE = 16_000


def _median_seconds(fn, repeat: int, device="cpu") -> float:
    from genkernels.bench.timing import synchronize

    device = torch.device(device)
    times = []
    for _ in range(repeat):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


@contextlib.contextmanager
def _no_tf32():
    """cuDNN convolutions default to TF32 on GPUs; the naive sampler's 1x1 convs (and its dilated
    convs, where the Triton kernel is off) must round like the incremental sampler's fp32 matmuls
    for the two to draw the same codes."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def bench_model(fields: dict, batch: int = 1, length: int = 256, repeat: int = 3, device="cpu") -> dict:
    device = torch.device(device)
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(**fields)).to(device).eval()
    field = model.config.receptive_field
    # correctness before timing: both samplers draw the same codes from the same seed
    with _no_tf32():
        same = torch.equal(model.generate(batch, 48, seed=1), model.generate(batch, 48, seed=1, incremental=False))
    if not same:
        raise AssertionError("incremental and naive samplers disagree")
    cuda = device.type == "cuda"
    # the graph replays the eager step's kernels, so the codes should agree bit for bit; recorded, not
    # raised: a library choosing another kernel under capture would change last bits, not correctness
    graph_matches_eager = cuda and torch.equal(model.generate(batch, 48, seed=2),
                                               model.generate(batch, 48, seed=2, cuda_graph=False))

    model.generate(batch, 16, seed=0)  # warm-up
    incremental = _median_seconds(lambda: model.generate(batch, length, seed=0), repeat, device) / length

    window = torch.randint(0, model.config.num_levels, (batch, field), device=device)
    uniforms = torch.rand(batch, device=device, dtype=torch.float64)

    @torch.no_grad()
    def naive_step():
        model._draw(model.network(window)[:, :, -1], uniforms, 1.0)

    naive_step()
    naive = _median_seconds(naive_step, max(repeat, 5), device)
    row = {"receptive_field": field, "layers": len(model.layers), "batch": batch,
           "parameters": sum(p.numel() for p in model.parameters()),
           "incremental_samples_per_s": batch / incremental, "naive_samples_per_s": batch / naive,
           "speedup": naive / incremental,
           "real_time_factor_16khz": 1.0 / incremental / REAL_TIME_RATE}
    if cuda:
        eager = _median_seconds(lambda: model.generate(batch, length, seed=0, cuda_graph=False), repeat,
                                device) / length
        row.update(eager_samples_per_s=batch / eager, eager_real_time_factor_16khz=1.0 / eager / REAL_TIME_RATE,
                   graph_speedup=eager / incremental, graph_matches_eager=graph_matches_eager)
    return row


def run_suite(device, models=None, batches=(1, 16), length: int | None = None, repeat: int = 3,
              conv: bool | None = None) -> list[dict]:
    """One row per model and batch (the table of `genkernels bench --suite wavenet` and of main);
    models: (name, config fields) pairs, default MODELS; length: samples per timed incremental call
    (256 on a CPU, 1024 on CUDA, where the graph capture of each call is amortised over them).
    conv (default: on CUDA): also print the causal-conv table (`conv_suite`)."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    length = length if length is not None else 1024 if cuda else 256
    rows = []
    for name, fields in MODELS if models is None else models:
        for batch in batches:
            rows.append({"model": name, **bench_model(fields, batch, length, repeat, device=device)})
    if cuda:
        print("\nWaveNet incremental sampling on CUDA, CUDA graph vs eager:\n" + _table(rows, GRAPH_COLUMNS))
    if cuda if conv is None else conv:
        print(f"\ncausal conv ({CONV_NOTE}):\n" + _table(conv_suite(device), CONV_COLUMNS))
    return rows


# ----------------------------------------------------------------------------------------------
# The dilated causal conv of a layer: genkernels.ops.causal_conv1d vs F.conv1d + eager gate
# ----------------------------------------------------------------------------------------------
class ConvCase(NamedTuple):
    channels: int   # R: input channels, and output channels after the gate (the conv makes 2R)
    kernel_size: int
    dilation: int
    length: int     # T
    batch: int

    @property
    def name(self) -> str:
        return f"R{self.channels} k{self.kernel_size} d{self.dilation} T{self.length} N{self.batch}"


# one second of 16 kHz audio, a training batch of 8; dilations at both ends of a 10-layer cycle
GPU_CONV_CASES = tuple(ConvCase(64, 2, d, 16_000, 8) for d in (1, 512)) + (ConvCase(128, 3, 64, 16_000, 8),)
TINY_CONV_CASES = (ConvCase(4, 2, 2, 33, 2),)
CONV_MODES = ("fwd", "fwd_bwd")
CONV_PROVIDERS = ("conv1d", "genkernels")
CONV_COLUMNS = ["op", "mode", "provider", "dtype", "ms", "speedup_vs_conv1d"]
GRAPH_COLUMNS = ["model", "batch", "samples_per_s", "eager_samples_per_s", "graph_speedup",
                 "real_time_factor_16khz", "eager_real_time_factor_16khz", "graph_matches_eager"]
CONV_NOTE = ("genkernels.causal_conv1d(gated=True), Triton with the gate fused, vs F.conv1d on the left-padded "
             "input + tanh * sigmoid in eager PyTorch; off CUDA the op runs that same reference")


def conv_function(provider: str, case: ConvCase, mode: str, dtype=torch.float32, device="cpu"):
    """fn() -> the gated output (fwd) or (dx, dweight, dbias) (fwd_bwd) of one provider, fresh inputs."""
    from genkernels.ops.causal_conv1d import causal_conv1d

    g = torch.Generator().manual_seed(0)
    c, k = case.channels, case.kernel_size
    x = torch.randn(case.batch, c, case.length, generator=g).to(device, dtype)
    weight = (torch.randn(2 * c, c, k, generator=g) * (c * k) ** -0.5).to(device, dtype)
    bias = (torch.randn(2 * c, generator=g) * 0.1).to(device, dtype)
    grad = torch.randn(case.batch, c, case.length, generator=g).to(device, dtype)
    history = (k - 1) * case.dilation
    if provider == "conv1d":
        def forward():
            a, b = F.conv1d(F.pad(x, (history, 0)), weight, bias, dilation=case.dilation).chunk(2, dim=1)
            return torch.tanh(a) * torch.sigmoid(b)
    else:
        def forward():
            return causal_conv1d(x, weight, bias, case.dilation, gated=True)
    if mode == "fwd":
        return torch.no_grad()(forward)
    for tensor in (x, weight, bias):
        tensor.requires_grad_(True)
    return lambda: torch.autograd.grad(forward(), (x, weight, bias), grad)


def _check_close(out, ref, dtype, device) -> None:
    """Max |error| within tol * max(1, max |ref|) per tensor (TF32 in cuDNN's fp32 default, bf16)."""
    outs, refs = (out, ref) if isinstance(out, tuple) else ((out,), (ref,))
    tol = 3e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-2 if torch.device(device).type == "cuda" else 1e-4
    for name, o, r in zip(("out/dx", "dweight", "dbias"), outs, refs):
        err = (o.float() - r.float()).abs().max().item()
        if not err <= tol * max(1.0, r.float().abs().max().item()):
            raise AssertionError(f"wavenet conv bench: {name} differs from conv1d by {err:.3g}")


def conv_suite(device, dtypes=(torch.float32, torch.bfloat16), cases=None, repeat: int = 10) -> list[dict]:
    """One row per case, dtype, mode and provider: ms, and conv1d's time over this provider's."""
    from genkernels.bench.timing import measure

    device = torch.device(device)
    cases = (GPU_CONV_CASES if device.type == "cuda" else TINY_CONV_CASES) if cases is None else cases
    rows = []
    for case in cases:
        for dtype in dtypes:
            for mode in CONV_MODES:
                fns = {p: conv_function(p, case, mode, dtype, device) for p in CONV_PROVIDERS}
                _check_close(fns["genkernels"](), fns["conv1d"](), dtype, device)  # correctness before timing
                times = {p: measure(fn, device, repeat=repeat) for p, fn in fns.items()}
                rows += [{"op": case.name, "mode": mode, "provider": p, "dtype": str(dtype).replace("torch.", ""),
                          "ms": times[p] * 1e3, "speedup_vs_conv1d": times["conv1d"] / times[p]}
                         for p in CONV_PROVIDERS]
    return rows


def _table(rows, columns) -> str:
    from genkernels.bench import format_table

    rows = [dict(r, samples_per_s=r.get("incremental_samples_per_s")) for r in rows]
    return format_table(rows, columns)


def format_row(row: dict) -> str:
    return (f"{row['model']:22s} batch {row['batch']:3d}  RF {row['receptive_field']}  incremental "
            f"{row['incremental_samples_per_s']:9.0f} samples/s  naive {row['naive_samples_per_s']:8.1f} "
            f"samples/s  speedup {row['speedup']:6.1f}x  real-time factor at 16 kHz "
            f"{row['real_time_factor_16khz']:.3f}"
            + (f" (eager, no CUDA graph: {row['eager_real_time_factor_16khz']:.3f}; graph speedup "
               f"{row['graph_speedup']:.1f}x)" if "graph_speedup" in row else ""))


def main(argv=None) -> int:
    import argparse
    import json
    import os
    import platform

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--length", type=int, default=None,
                        help="samples per timed incremental call (default 256 on a CPU, 1024 on CUDA)")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cuda = torch.device(args.device).type == "cuda"
    rows = []
    for name, fields in MODELS:
        for batch in args.batch:
            rows += run_suite(args.device, ((name, fields),), (batch,), args.length, conv=False)
            print(format_row(rows[-1]), flush=True)
    conv_rows = conv_suite(args.device) if cuda else []
    if conv_rows:
        print(f"\ncausal conv ({CONV_NOTE}):\n" + _table(conv_rows, CONV_COLUMNS))
    if args.json:
        environment = {"device": str(args.device), "threads": args.threads, "torch": torch.__version__,
                       "python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                       "dtype": "float32", "cpus": os.cpu_count(),
                       "load_average_1min_at_end": os.getloadavg()[0]}  # other jobs sharing the cores
        if cuda:
            environment["device_name"] = torch.cuda.get_device_name(args.device)
        result = {"environment": environment, "results": rows}
        if conv_rows:
            result["causal_conv1d"] = conv_rows
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)
            file.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
