"""pytest-benchmark cases for fused attention (tiny shapes on CPU); `python bench/bench_attention.py`
prints the full TFLOP/s tables (genkernels/bench/attention.py) and, on a GPU, writes JSON under
bench/results/."""
import json
import time
from pathlib import Path

import torch

from genkernels.bench.attention import check, run_suite, setup
from genkernels.ops.attention import attention, attention_decode

RESULTS = Path(__file__).resolve().parent / "results"


def main():
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report = run_suite(device)
    if device.type == "cuda":
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"attention-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps(report, indent=1))
        print(f"wrote {path}")


# ----------------------------------------------------------------------------------------------
# pytest-benchmark cases (tiny on CPU)
# ----------------------------------------------------------------------------------------------
def _bench_shape():
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    seqlen, head_dim = (4096, 128) if device.type == "cuda" else (64, 32)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    batch, heads = (4, 16) if device.type == "cuda" else (1, 2)
    return device, setup(batch, heads, seqlen, head_dim, dtype, device)


def test_bench_attention_forward(benchmark):
    device, (q, k, v, _) = _bench_shape()
    fn = lambda: attention(q, k, v, causal=True)  # noqa: E731
    check(lambda *a: fn(), q, k, v, True)
    with torch.no_grad():
        fn()
        benchmark(lambda: (fn(), torch.cuda.synchronize() if device.type == "cuda" else None))


def test_bench_attention_forward_backward(benchmark):
    device, (q, k, v, dout) = _bench_shape()
    fn = lambda: torch.autograd.grad(attention(q, k, v, causal=True), (q, k, v), dout)  # noqa: E731
    fn()
    benchmark(lambda: (fn(), torch.cuda.synchronize() if device.type == "cuda" else None))


def test_bench_attention_decode(benchmark):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cache_len = 16384 if device.type == "cuda" else 256
    q = torch.randn(2, 1, 8, 64, device=device)
    k_cache, v_cache = torch.randn(2, cache_len, 2, 64, device=device), torch.randn(2, cache_len, 2, 64, device=device)
    lengths = torch.full((2,), cache_len, dtype=torch.int32, device=device)
    attention_decode(q, k_cache, v_cache, lengths)
    benchmark(lambda: (attention_decode(q, k_cache, v_cache, lengths),
                       torch.cuda.synchronize() if device.type == "cuda" else None))


if __name__ == "__main__":
    main()
