"""pytest-benchmark cases for fused attention (tiny shapes on CPU); `python bench/bench_attention.py`
prints the full TFLOP/s tables (genkernels/bench/attention.py) and, on a GPU, writes JSON under
bench/results/. Both use genkernels/bench/attention.py's case definitions."""
import json
import time
from pathlib import Path

import pytest
import torch

from genkernels.bench.attention import quick_cases, run_suite

RESULTS = Path(__file__).resolve().parent / "results"
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def main():
    report = run_suite(DEVICE)
    if DEVICE.type == "cuda":
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"attention-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps(report, indent=1))
        print(f"wrote {path}")


@pytest.fixture(scope="module")
def cases():
    return quick_cases(DEVICE)


@pytest.mark.parametrize("case", ["forward", "forward_backward", "decode"])
def test_bench_attention(benchmark, cases, case):
    fn = cases[case]
    fn()
    benchmark(fn)


if __name__ == "__main__":
    main()
