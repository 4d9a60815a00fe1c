"""Benchmark setups for the fused ops of the transformer blocks (RMSNorm, LayerNorm, SwiGLU,
GELU-tanh, rotary embedding) and the chunked linear + cross-entropy.

Elementwise / row ops, per case and provider, in one run: "eager" (the op's `*_ref`: torch's own
F.rms_norm / F.layer_norm / F.silu * up / F.gelu / the rotary formula, autograd for the backward),
"compile" (torch.compile of that reference) and each fast backend present ("cpu" C++ kernels,
"cuda"), timed in turns (norm.measure_interleaved), per CPU thread count; correctness against the
reference is checked first. ms, GB/s (bytes the op must move) and the speedups over eager and
torch.compile.

linear_cross_entropy vs F.cross_entropy on the materialised float32 logits, forward + backward:
ms and the peak memory above the inputs, each provider measured in a fresh subprocess (the growth
of the process's peak resident set, VmHWM, during one forward + backward).
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import genkernels
from genkernels import _backend
from genkernels.bench.timing import measure_interleaved
from genkernels.ops.gelu_tanh import gelu_tanh, gelu_tanh_ref
from genkernels.ops.layer_norm import layer_norm, layer_norm_ref
from genkernels.ops.linear_cross_entropy import linear_cross_entropy, linear_cross_entropy_ref
from genkernels.ops.rms_norm import rms_norm, rms_norm_ref
from genkernels.ops.rotary import rotary, rotary_ref, rotary_tables
from genkernels.ops.swiglu import swiglu, swiglu_ref

ROWS = (4096, 1024)
ROPE = (4, 512, 16, 64)  # (N, T, H, D): 2^21 elements
CASES = tuple((f"{op} {mode}", op, ROPE if op == "rotary" else ROWS, mode == "fwd_bwd")
              for op in ("rms_norm", "layer_norm", "swiglu", "gelu_tanh", "rotary") for mode in ("fwd", "fwd_bwd"))
TINY_CASES = tuple((name, op, (2, 3, 2, 8) if op == "rotary" else (5, 33), bwd) for name, op, _, bwd in CASES)
LCE = (2048, 256, 32768)  # (N, D, V)
COLUMNS = ["op", "provider", "threads", "dtype", "shape", "ms", "GB/s", "speedup_vs_eager", "speedup_vs_compile"]
LCE_COLUMNS = ["op", "provider", "threads", "shape", "ms", "peak_MiB", "memory_ratio", "speedup_vs_materialised"]

_TABLES = {}


def _tables(d, device):
    key = (d, str(device))
    if key not in _TABLES:
        _TABLES[key] = rotary_tables(2048, d, device=device)
    return _TABLES[key]


def providers(device) -> list[str]:
    device = torch.device(device)
    fast = [name for name in ("cpu", "cuda") if _backend.backend_status(name, device.type) is None]
    return ["eager", "compile"] + fast


def _functions(op, reference, device, d):
    if op == "rms_norm":
        return (lambda x, w: rms_norm_ref(x, w, 1e-6)) if reference else (lambda x, w: rms_norm(x, w, 1e-6)), 2
    if op == "layer_norm":
        return (layer_norm_ref if reference else layer_norm), 3
    if op == "swiglu":
        return (swiglu_ref if reference else swiglu), 2
    if op == "gelu_tanh":
        return (gelu_tanh_ref if reference else gelu_tanh), 1
    cos, sin = _tables(d, device)
    return (lambda x: (rotary_ref if reference else rotary)(x, cos, sin, 3)), 1


def case_function(provider, op, shape, backward, dtype, device):
    """(fn() -> Tensor, bytes moved per call) for one case and provider, on fresh inputs."""
    g = torch.Generator().manual_seed(0)
    reference = provider in ("eager", "compile")
    fn, count = _functions(op, reference, device, shape[-1])
    inputs = [torch.randn(shape, generator=g).to(device, dtype)]
    if op in ("rms_norm", "layer_norm"):
        inputs.append((1 + 0.1 * torch.randn(shape[-1], generator=g)).to(device, dtype))
        if op == "layer_norm":
            inputs.append((0.1 * torch.randn(shape[-1], generator=g)).to(device, dtype))
    elif op == "swiglu":
        inputs.append(torch.randn(shape, generator=g).to(device, dtype))
    if provider == "compile":
        fn = torch.compile(fn)
    backend = "torch" if reference else provider
    numel, itemsize = inputs[0].numel(), inputs[0].element_size()
    big = 2 if op == "swiglu" else 1  # full-size inputs
    forward_bytes = (big + 1) * numel * itemsize
    if not backward:
        def run():
            with genkernels.use_backend(backend):
                return fn(*inputs)
        return run, forward_bytes
    for t in inputs:
        t.requires_grad_(True)
    grad_y = torch.randn(shape, generator=g).to(device, dtype)

    def run_fwd_bwd():
        with genkernels.use_backend(backend):
            y = fn(*inputs)
            return torch.autograd.grad(y, inputs, grad_y)[0]
    # backward: read grad_y and the inputs, write their gradients
    return run_fwd_bwd, forward_bytes + (2 * big + 1) * numel * itemsize


def run_suite(device, dtype=torch.float32, with_compile=True, cases=None, threads=(None,), lce=LCE) -> list[dict]:
    """Rows for every case (default CASES), provider and CPU thread count, then the
    linear_cross_entropy rows at `lce` = (N, D, V) (None: skipped)."""
    device = torch.device(device)
    cases = CASES if cases is None else cases
    rows = []
    before = torch.get_num_threads()
    try:
        for count in threads:
            if count is not None and device.type == "cpu":
                torch.set_num_threads(count)
            for name, op, shape, backward in cases:
                reference, fns, nbytes = None, {}, 0
                for provider in providers(device):
                    if provider == "compile" and not with_compile:
                        continue
                    fns[provider], nbytes = case_function(provider, op, shape, backward, dtype, device)
                    out = fns[provider]()
                    if reference is None:
                        reference = out.float()
                    else:
                        tol = 1e-4 if dtype == torch.float32 else 3e-2
                        torch.testing.assert_close(out.float(), reference, rtol=tol,
                                                   atol=tol * reference.abs().max())
                times = measure_interleaved(fns, device)
                for provider, seconds in times.items():
                    rows.append({"op": name, "provider": provider, "threads": torch.get_num_threads(),
                                 "shape": "x".join(map(str, shape)), "dtype": str(dtype).replace("torch.", ""),
                                 "ms": seconds * 1e3, "GB/s": nbytes / seconds / 1e9,
                                 "speedup_vs_eager": times["eager"] / seconds,
                                 "speedup_vs_compile": times["compile"] / seconds if "compile" in times else None})
            if lce is not None:
                rows += lce_rows(device, lce)
    finally:
        torch.set_num_threads(before)
    return rows


# ---- linear + cross-entropy: time and peak memory ----------------------------------------------
def _lce_inputs(n, d, v, device):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(n, d, generator=g).to(device).requires_grad_(True)
    w = (torch.randn(v, d, generator=g) / d ** 0.5).to(device).requires_grad_(True)
    t = torch.randint(0, v, (n,), generator=g).to(device)
    return h, w, t


def _lce_step(provider, h, w, t):
    if provider == "chunked":  # gradients formed in the forward pass (the default)
        loss = linear_cross_entropy(h, w, t)
    elif provider == "chunked_recompute":  # only the log-sum-exp kept, logits recomputed in backward
        loss = linear_cross_entropy(h, w, t, backward_in_forward=False)
    else:
        loss = linear_cross_entropy_ref(h, w, t)  # F.cross_entropy on materialised fp32 logits
    return torch.autograd.grad(loss, [h, w])


def _peak_rss() -> int:
    """Peak resident set of this process in bytes: VmHWM (per address space, so fresh after exec;
    getrusage's ru_maxrss can carry the forking parent's peak over into the child)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_child(provider, n, d, v, device, threads) -> dict:
    """One forward + backward in this (fresh) process: peak resident growth (CPU) or peak
    allocated memory above the inputs (CUDA), and the median of a few timed calls."""
    torch.set_num_threads(threads)
    h, w, t = _lce_inputs(n, d, v, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _lce_step(provider, h, w, t)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = _peak_rss()
        _lce_step(provider, h, w, t)
        peak = _peak_rss() - base
    samples = []
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        _lce_step(provider, h, w, t)
        if device.type == "cuda":
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return {"peak_bytes": peak, "seconds": sorted(samples)[1]}


def lce_rows(device, shape=LCE) -> list[dict]:
    n, d, v = shape
    threads = torch.get_num_threads()
    out = {}
    for provider in ("materialised", "chunked", "chunked_recompute"):
        cmd = [sys.executable, "-m", "genkernels.bench.transformer_ops", provider, str(n), str(d), str(v),
               str(device), str(threads)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[provider] = json.loads(res.stdout.strip().splitlines()[-1])
    rows = []
    for provider, r in out.items():
        rows.append({"op": "linear_cross_entropy fwd_bwd", "provider": provider, "threads": threads,
                     "shape": f"N{n} D{d} V{v}", "dtype": "float32", "ms": r["seconds"] * 1e3,
                     "peak_MiB": r["peak_bytes"] / 2 ** 20,
                     "memory_ratio": out["materialised"]["peak_bytes"] / max(r["peak_bytes"], 1),
                     "speedup_vs_materialised": out["materialised"]["seconds"] / r["seconds"]})
    return rows


if __name__ == "__main__":  # the peak-memory child: provider N D V device threads
    provider, n, d, v, dev, threads = sys.argv[1:7]
    print(json.dumps(_peak_child(provider, int(n), int(d), int(v), torch.device(dev), int(threads))))
