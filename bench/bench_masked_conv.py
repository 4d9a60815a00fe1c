"""pytest-benchmark cases for the masked conv: genkernels.ops.masked_conv2d vs F.conv2d on the masked
weight (same case table as `genkernels bench --suite masked_conv`: genkernels/bench/masked_conv.py).

Run:  python -m pytest bench/bench_masked_conv.py --benchmark-group-by=param:case
On a CPU masked_conv2d runs that same conv2d reference (the Triton kernel needs CUDA), so the CPU
numbers measure the wrapper; on a GPU it is the Triton kernel against cuDNN. Each case checks the
provider against conv2d before timing.
"""
import pytest
import torch

import genkernels
from genkernels.bench import masked_conv

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CASES = masked_conv.default_cases(DEVICE)


@pytest.mark.parametrize("provider", masked_conv.PROVIDERS)
@pytest.mark.parametrize("mode", masked_conv.MODES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_masked_conv(benchmark, case, mode, provider):
    fn = masked_conv.case_function(provider, case, mode, torch.float32, DEVICE)
    ref = masked_conv.case_function("conv2d", case, mode, torch.float32, DEVICE)
    masked_conv.check_close(fn(), ref(), torch.float32, DEVICE)
    benchmark.extra_info.update(case=case.name, mode=mode, provider=provider, device=str(DEVICE),
                                torch=torch.__version__, genkernels=genkernels.__version__)
    benchmark(fn)
