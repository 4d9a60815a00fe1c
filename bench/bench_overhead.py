"""Per-call host overhead of the op registration route on a 16-element tensor.

Run:  python -m pytest bench/bench_overhead.py
"""
import pytest
import torch

from genkernels.bench.overhead import _custom_op_twin
from genkernels.diffusion import make_schedule, q_sample

SCHED = make_schedule("linear", 1000)
X0, NOISE, T = torch.randn(1, 16), torch.randn(1, 16), torch.tensor([10])
TABLE = SCHED.table("cpu")
X0_GRAD = X0.clone().requires_grad_()

CASES = {
    "torch_add_direct": lambda: torch.add(X0, NOISE),
    "library_define_op": lambda: torch.ops.genkernels.q_sample(X0, NOISE, T, 0, TABLE, False),
    "custom_op_twin": lambda: _custom_op_twin()(X0, NOISE, T, TABLE),
    "public_function_no_grad": lambda: q_sample(X0, NOISE, T, SCHED),
    "public_function_requires_grad": lambda: q_sample(X0_GRAD, NOISE, T, SCHED),
}


@pytest.mark.parametrize("case", list(CASES))
def test_overhead(benchmark, case):
    fn = CASES[case]
    out = fn()
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == (1, 16)
    benchmark(fn)
