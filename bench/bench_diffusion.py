"""pytest-benchmark cases for the diffusion ops (same setups as `genkernels bench`).

Run:  python -m pytest bench/bench_diffusion.py --benchmark-group-by=param:op
Each case first checks the provider's result against the reference, then times it.
"""
import pytest
import torch

import genkernels
from genkernels.bench import diffusion

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
NUMEL = 1 << 22
BATCH = 16


@pytest.mark.parametrize("provider", [p for p in diffusion.providers(DEVICE) if p != "compile"])
@pytest.mark.parametrize("op", diffusion.OPS)
def test_diffusion_op(benchmark, op, provider):
    fn, nbytes = diffusion.provider_function(op, provider, NUMEL, BATCH, torch.float32, DEVICE)
    ref, _ = diffusion.provider_function(op, "eager", NUMEL, BATCH, torch.float32, DEVICE)
    torch.testing.assert_close(fn(), ref(), rtol=1e-4, atol=1e-4)
    benchmark.extra_info.update(op=op, provider=provider, numel=NUMEL, bytes=nbytes, device=str(DEVICE),
                                torch=torch.__version__, genkernels=genkernels.__version__)
    benchmark(fn)
