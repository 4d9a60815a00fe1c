"""pytest-benchmark cases for the fused normalisation ops (same setups as `genkernels bench --suite norm`).

Run:  python -m pytest bench/bench_norm.py --benchmark-group-by=param:case
Each case first checks the provider's result against the eager reference, then times it (2^22
elements; torch.compile is left to `genkernels bench --suite norm`, where its compile time is
excluded from the timing but not from the wall clock).
"""
import pytest
import torch

import genkernels
from genkernels.bench import norm

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("provider", [p for p in norm.providers(DEVICE) if p != "compile"])
@pytest.mark.parametrize("case", norm.CASES, ids=[c[0] for c in norm.CASES])
def test_norm_op(benchmark, case, provider):
    name, op, shape, modulated, backward = case
    fn, nbytes = norm.case_function(provider, op, shape, modulated, backward, torch.float32, DEVICE)
    ref, _ = norm.case_function("eager", op, shape, modulated, backward, torch.float32, DEVICE)
    expected = ref()
    torch.testing.assert_close(fn(), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    benchmark.extra_info.update(case=name, provider=provider, shape=list(shape), bytes=nbytes, device=str(DEVICE),
                                threads=torch.get_num_threads(), torch=torch.__version__,
                                genkernels=genkernels.__version__)
    benchmark(fn)
