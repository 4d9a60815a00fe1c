"""Host overhead per call on a tiny tensor: the cost of the op machinery, not of the math.

One case table, `cases()`, backs both `genkernels bench --suite overhead` and the pytest-benchmark
cases in bench/bench_overhead.py. It compares a bare torch.add, the registered genkernels op
called via torch.ops (Library.define/impl + register_autograd, the route torch.compile sees), the
same kernel wrapped with torch.library.custom_op (the alternative registration), and the public
functions: with no autograd graph needed they call the kernel directly (ops/_library.py route 1),
with an input that requires grad they take the eager autograd.Function (route 2).

`python bench/bench_overhead.py --before DIR` times the same table on another checkout (DIR holds
its `genkernels` package, extensions built) and on this one, interleaved in one run, and prints
the before/after table.
"""
from __future__ import annotations

import functools
import statistics
import time

import torch


@functools.lru_cache(maxsize=None)
def _custom_op_twin():
    from genkernels.ops.q_sample import _q_sample_kernel

    @torch.library.custom_op("genkernels_bench::q_sample_custom_op", mutates_args=())
    def twin(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return _q_sample_kernel(x0, noise, t, 0, table, False)[0]

    return twin


def _no_grad(fn):
    def run():
        with torch.no_grad():
            return fn()
    return run


def cases(numel: int = 16) -> dict:
    """{case name: fn() -> Tensor or tuple} on (1, numel) float32 CPU tensors.

    Uses only the public API plus torch.ops.genkernels.q_sample and ops.q_sample._q_sample_kernel,
    which every checkout since the overhead table exists has, so a before/after run can time an
    older tree with this table.
    """
    from genkernels.diffusion import ddim_step, ddpm_step, diffusion_loss, make_schedule, q_sample
    from genkernels.ops.reparam_kl import reparam_kl

    g = torch.Generator().manual_seed(0)
    sched = make_schedule("linear", 1000)
    x0, noise, out = (torch.randn(1, numel, generator=g) for _ in range(3))
    x0_grad = x0.clone().requires_grad_()
    t = torch.tensor([10])
    table = sched.table("cpu")
    twin = _custom_op_twin()
    return {
        "torch.add": lambda: torch.add(x0, noise),
        "torch.ops.genkernels.q_sample (registered op)": lambda: torch.ops.genkernels.q_sample(
            x0, noise, t, 0, table, False),
        "q_sample custom_op twin": lambda: twin(x0, noise, t, table),
        "q_sample (public, no grad)": lambda: q_sample(x0, noise, t, sched),
        "q_sample (public, input requires grad)": lambda: q_sample(x0_grad, noise, t, sched),
        "ddpm_step (public, no grad)": lambda: ddpm_step(out, x0, 10, sched, seed=1),
        "ddim_step (public, no grad)": lambda: ddim_step(out, x0, 10, 5, sched, seed=1),
        "diffusion_loss (public, torch.no_grad)": _no_grad(lambda: diffusion_loss(out, x0, noise, t, sched)),
        "reparam_kl (public, torch.no_grad)": _no_grad(lambda: reparam_kl(x0, noise, 1)),
    }


def cpu_time_per_call(fn, *, warmup: int = 50, repeat: int = 25, min_time: float = 0.02) -> float:
    """Median CPU seconds of the calling thread per call of fn (samples of about min_time each).

    Thread CPU time rather than wall time: a host-overhead call neither waits nor sleeps, so the
    two agree on an idle machine, and CPU time stays put when other processes share the cores.
    """
    for _ in range(warmup):
        fn()
    start = time.thread_time()
    fn()
    inner = max(1, int(min_time / max(time.thread_time() - start, 1e-7)))
    samples = []
    for _ in range(repeat):
        start = time.thread_time()
        for _ in range(inner):
            fn()
        samples.append((time.thread_time() - start) / inner)
    return statistics.median(samples)


def time_cases(numel: int = 16, repeat: int = 25) -> dict[str, float]:
    """{case: microseconds per call} (see cpu_time_per_call)."""
    return {name: cpu_time_per_call(fn, repeat=repeat) * 1e6 for name, fn in cases(numel).items()}


def overhead_rows(numel: int = 16):
    return [{"case": name, "numel": numel, "us_per_call": us} for name, us in time_cases(numel).items()]
