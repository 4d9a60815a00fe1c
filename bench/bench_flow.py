"""pytest-benchmark cases for the normalizing-flow ops (same setups as `genkernels bench --suite flow`).

Run:  python -m pytest bench/bench_flow.py --benchmark-group-by=param:case
Each case first checks the provider's result against the eager reference, then times it (2^22
elements; torch.compile is left to `genkernels bench --suite flow`, where its compile time is
excluded from the timing but not from the wall clock).
"""
import pytest
import torch

import genkernels
from genkernels.bench import flow

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("provider", [p for p in flow.providers(DEVICE) if p != "compile"])
@pytest.mark.parametrize("case", flow.CASES, ids=[c[0] for c in flow.CASES])
def test_flow_op(benchmark, case, provider):
    name, op, shape, mask, backward = case
    fn, nbytes = flow.case_function(provider, op, shape, mask, backward, torch.float32, DEVICE)
    ref, _ = flow.case_function("eager", op, shape, mask, backward, torch.float32, DEVICE)
    expected = ref()
    torch.testing.assert_close(fn(), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    benchmark.extra_info.update(case=name, provider=provider, shape=list(shape), bytes=nbytes, device=str(DEVICE),
                                threads=torch.get_num_threads(), torch=torch.__version__,
                                genkernels=genkernels.__version__)
    benchmark(fn)
