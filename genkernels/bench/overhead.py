"""Host overhead per call on a tiny tensor: the cost of the op machinery, not of the math.

Compares a direct torch.add, the registered genkernels op (Library.define/impl + register_autograd)
called via torch.ops, the same kernel wrapped with torch.library.custom_op (the alternative
route), and the public function (validation included) on its two paths: with no autograd needed it
calls the kernel directly (no dispatcher hop), otherwise it goes through the registered op.
"""
from __future__ import annotations

import functools

import torch

from genkernels.bench.timing import measure
from genkernels.diffusion import make_schedule, q_sample


@functools.lru_cache(maxsize=None)
def _custom_op_twin():
    from genkernels.ops.q_sample import _q_sample_kernel

    @torch.library.custom_op("genkernels_bench::q_sample_custom_op", mutates_args=())
    def twin(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return _q_sample_kernel(x0, noise, t, 0, table, False)[0]

    return twin


def overhead_rows(numel: int = 16):
    sched = make_schedule("linear", 1000)
    x0, noise = torch.randn(1, numel), torch.randn(1, numel)
    x0_grad = x0.clone().requires_grad_()
    t = torch.tensor([10])
    table = sched.table("cpu")
    twin = _custom_op_twin()
    cases = {
        "torch.add (direct)": lambda: torch.add(x0, noise),
        "torch.ops.genkernels.q_sample (Library.define)": lambda: torch.ops.genkernels.q_sample(
            x0, noise, t, 0, table, False),
        "torch.library.custom_op twin": lambda: twin(x0, noise, t, table),
        "genkernels.diffusion.q_sample (public, no grad: direct kernel call)": lambda: q_sample(x0, noise, t, sched),
        "genkernels.diffusion.q_sample (public, input requires grad: op)": lambda: q_sample(x0_grad, noise, t, sched),
    }
    rows = []
    for name, fn in cases.items():
        seconds = measure(fn, "cpu", warmup=50, repeat=25, min_time=0.02)
        rows.append({"case": name, "numel": numel, "us_per_call": seconds * 1e6})
    return rows
