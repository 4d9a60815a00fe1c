"""Fused attention benchmarks: forward / backward / forward+backward TFLOP/s and decode latency.

Providers (each where it can run): genkernels with the triton backend, genkernels with the torch
backend (SDPA / the reference), torch SDPA called directly, and FlexAttention (compiled, GPU).
Every provider's output is checked against SDPA before it is timed, and the first (compiling,
autotuning) call is excluded.

    genkernels bench --suite attention         # tables (and --json FILE)
    python bench/bench_attention.py            # same; on GPU also bench/results/attention-<time>.json
    python -m pytest bench/bench_attention.py  # pytest-benchmark cases (tiny shapes on CPU)

On CPU it runs a few tiny shapes through the reference so the script stays exercised.
"""
from __future__ import annotations

import platform
import statistics
import time

import torch
import torch.nn.functional as F

import genkernels
from genkernels import use_backend
from genkernels._backend import backend_status
from genkernels.ops.attention import attention
from genkernels.ops.attention_decode import attention_decode



# ----------------------------------------------------------------------------------------------
# Setup: one function builds the inputs; one per provider builds the callable
# ----------------------------------------------------------------------------------------------
def setup(batch, heads, seqlen, head_dim, dtype, device, requires_grad=True):
    """q, k, v (B, S, H, D) and an output gradient."""
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(batch, seqlen, heads, head_dim, device=device, dtype=dtype, generator=gen)
               .requires_grad_(requires_grad) for _ in range(3))
    return q, k, v, torch.randn_like(q)


def _sdpa(q, k, v, causal):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          is_causal=causal).transpose(1, 2)


def _flex(causal, seqlen, device):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    compiled = torch.compile(flex_attention)
    block_mask = None
    if causal:
        block_mask = create_block_mask(lambda b, h, q_idx, kv_idx: q_idx >= kv_idx, None, None, seqlen, seqlen,
                                       device=device)
    return lambda q, k, v: compiled(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                    block_mask=block_mask).transpose(1, 2)


SDPA_BACKENDS = ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION")
FLEX_SEQLENS = (4096,)  # FlexAttention compiles per shape: time it on a few lengths only


def _sdpa_with(backend_name, causal):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, backend_name)

    def run(q, k, v):
        with sdpa_kernel([backend]):
            return _sdpa(q, k, v, causal)
    return run


def providers(device, causal, seqlen):
    """{name: fn(q, k, v) -> out} for every provider that can run on this device.

    On a GPU: genkernels' Triton kernels, each SDPA backend on its own (flash, cuDNN, memory-efficient;
    one that cannot run the case fails its check and is reported, not timed) and FlexAttention.
    On CPU: genkernels (the reference path) and SDPA."""
    def with_backend(name):
        def run(q, k, v):
            with use_backend(name):
                return attention(q, k, v, causal=causal)
        return run

    if device.type != "cuda":
        return {"genkernels-torch": with_backend("torch"), "torch-sdpa": lambda q, k, v: _sdpa(q, k, v, causal)}
    found = {}
    if backend_status("triton", device.type) is None:
        found["genkernels-triton"] = with_backend("triton")
    for name in SDPA_BACKENDS:
        found["sdpa-" + name.split("_")[0].lower()] = _sdpa_with(name, causal)
    if seqlen in FLEX_SEQLENS:
        try:
            found["flex-attention"] = _flex(causal, seqlen, device)
        except Exception as exc:  # older torch: no FlexAttention
            print(f"FlexAttention unavailable: {exc}")
    return found


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------
def median_ms(fn, device, reps=None):
    """Median wall time of fn() in ms, after one excluded warm-up call."""
    fn()
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, return_mode="median")
    times = []
    for _ in range(reps or 5):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def attention_flops(batch, heads, seqlen_q, seqlen_k, head_dim, causal, mode):
    """Two GEMMs forward (QK^T, PV); backward adds five (2.5x); causal does about half."""
    forward = 4.0 * batch * heads * seqlen_q * seqlen_k * head_dim * (0.5 if causal else 1.0)
    return {"fwd": forward, "bwd": 2.5 * forward, "fwd+bwd": 3.5 * forward}[mode]


def bench_case(fn, q, k, v, dout, mode, device):
    def forward():
        return fn(q, k, v)

    if mode == "fwd":
        with torch.no_grad():
            return median_ms(forward, device)
    if mode == "bwd":
        out = forward()
        return median_ms(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True), device)
    return median_ms(lambda: torch.autograd.grad(forward(), (q, k, v), dout), device)


def check(fn, q, k, v, causal):
    expected = _sdpa(q, k, v, causal)
    got = fn(q, k, v)
    tol = 1e-2 if q.dtype != torch.float32 else 1e-4
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------
def run_training(device, dtype, seqlens, head_dims, total_tokens):
    rows = []
    for head_dim in head_dims:
        heads = 2048 // head_dim if device.type == "cuda" else 2
        for causal in (False, True):
            for seqlen in seqlens:
                batch = max(1, total_tokens // seqlen)
                q, k, v, dout = setup(batch, heads, seqlen, head_dim, dtype, device)
                for name, fn in providers(device, causal, seqlen).items():
                    try:
                        check(fn, q, k, v, causal)
                        for mode in ("fwd", "bwd", "fwd+bwd"):
                            ms = bench_case(fn, q, k, v, dout, mode, device)
                            flops = attention_flops(batch, heads, seqlen, seqlen, head_dim, causal, mode)
                            rows.append(dict(provider=name, batch=batch, heads=heads, seqlen=seqlen, head_dim=head_dim,
                                             causal=causal, mode=mode, dtype=str(dtype), ms=ms,
                                             tflops=flops / ms / 1e9))
                    except Exception as exc:  # one failing provider should not hide the others
                        print(f"{name} seqlen={seqlen} d={head_dim} causal={causal}: {type(exc).__name__}: {exc}")
                del q, k, v, dout
    return rows


def run_decode(device, dtype, cache_lens, batch, heads, kv_heads, head_dim):
    rows = []
    for cache_len in cache_lens:
        q = torch.randn(batch, 1, heads, head_dim, device=device, dtype=dtype)
        k_cache = torch.randn(batch, cache_len, kv_heads, head_dim, device=device, dtype=dtype)
        v_cache = torch.randn_like(k_cache)
        lengths = torch.full((batch,), cache_len, device=device, dtype=torch.int32)
        group = heads // kv_heads
        expand = lambda t: t.repeat_interleave(group, dim=2)  # noqa: E731 SDPA without enable_gqa kernels
        cases = {"torch-sdpa": lambda: _sdpa(q, expand(k_cache), expand(v_cache), False),
                 "genkernels-torch": None, "genkernels-triton": None}
        for name in ("genkernels-torch", "genkernels-triton"):
            if backend_status(name.split("-")[1], device.type) is None:
                cases[name] = (lambda b: lambda: _decode(b, q, k_cache, v_cache, lengths))(name.split("-")[1])
        expected = cases["torch-sdpa"]()
        for name, fn in cases.items():
            if fn is None:
                continue
            torch.testing.assert_close(fn(), expected, rtol=1e-2, atol=1e-2)
            with torch.no_grad():
                ms = median_ms(fn, device)
            rows.append(dict(provider=name, batch=batch, heads=heads, kv_heads=kv_heads, cache_len=cache_len,
                             head_dim=head_dim, dtype=str(dtype), us=ms * 1e3))
    return rows


def _decode(backend, q, k_cache, v_cache, lengths):
    with use_backend(backend):
        return attention_decode(q, k_cache, v_cache, lengths)


def print_table(rows, keys, value, unit):
    if not rows:
        return
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths)) + f"  {unit}")
    for r in rows:
        print("  ".join(str(r[k]).ljust(w) for k, w in zip(keys, widths)) + f"  {r[value]:.4g}")


def environment(device):
    info = dict(device=str(device), torch=torch.__version__, genkernels=genkernels.__version__,
                python=platform.python_version())
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    return info


def quick_cases(device) -> dict:
    """{case: fn()} for bench/bench_attention.py's pytest-benchmark cases, each checked against SDPA
    first: a causal forward (no grad), forward+backward, and a GQA decode step; GPU sizes on a GPU,
    tiny ones on CPU. fn synchronises the device so the benchmark times the kernels."""
    device = torch.device(device)
    on_gpu = device.type == "cuda"
    seqlen, head_dim = (4096, 128) if on_gpu else (64, 32)
    batch, heads = (4, 16) if on_gpu else (1, 2)
    q, k, v, dout = setup(batch, heads, seqlen, head_dim, torch.bfloat16 if on_gpu else torch.float32, device)
    check(lambda *a: attention(*a, causal=True), q, k, v, True)

    cache_len = 16384 if on_gpu else 256
    qd = torch.randn(2, 1, 8, 64, device=device)
    k_cache, v_cache = torch.randn(2, cache_len, 2, 64, device=device), torch.randn(2, cache_len, 2, 64, device=device)
    lengths = torch.full((2,), cache_len, dtype=torch.int32, device=device)
    expected = _sdpa(qd, k_cache.repeat_interleave(4, dim=2), v_cache.repeat_interleave(4, dim=2), False)
    torch.testing.assert_close(attention_decode(qd, k_cache, v_cache, lengths), expected, rtol=1e-2, atol=1e-2)

    def synced(fn):
        def run():
            out = fn()
            if on_gpu:
                torch.cuda.synchronize(device)
            return out
        return run

    def forward():
        with torch.no_grad():
            return attention(q, k, v, causal=True)

    return {
        "forward": synced(forward),
        "forward_backward": synced(lambda: torch.autograd.grad(attention(q, k, v, causal=True), (q, k, v), dout)),
        "decode": synced(lambda: attention_decode(qd, k_cache, v_cache, lengths)),
    }


def run_suite(device) -> dict:
    """Time the training and decode cases for `device`, print the tables, return the results."""
    device = torch.device(device)
    if device.type == "cuda":
        dtype = torch.bfloat16
        training = run_training(device, dtype, [512, 1024, 2048, 4096, 8192, 16384], [64, 128], total_tokens=16384)
        decode = run_decode(device, dtype, [1024, 4096, 16384, 65536], batch=8, heads=32, kv_heads=8, head_dim=128)
    else:  # tiny shapes through the reference so the suite stays exercised without a GPU
        dtype = torch.float32
        training = run_training(device, dtype, [64, 128], [64], total_tokens=128)
        decode = run_decode(device, dtype, [128, 512], batch=2, heads=4, kv_heads=2, head_dim=64)
    info = environment(device)
    if device.type == "cuda":  # the roofline: fraction of this GPU's measured matmul rate
        from genkernels.bench.timing import matmul_peak

        peak = matmul_peak(device, dtype)
        info["matmul_TFLOP/s"] = peak / 1e12
        for row in training:
            row["fraction_of_matmul_peak"] = row["tflops"] * 1e12 / peak
    print(", ".join(f"{k}={v}" for k, v in info.items()))
    print_table(training, ["provider", "seqlen", "head_dim", "causal", "mode", "batch", "heads"], "tflops", "TFLOP/s")
    print()
    print_table(decode, ["provider", "cache_len", "batch", "heads", "kv_heads", "head_dim"], "us", "us")
    return dict(environment=info, dtype=str(dtype), training=training, decode=decode)
