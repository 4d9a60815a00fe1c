"""Benchmark setups for the fused normalisation ops of the diffusion denoisers (GroupNorm + SiLU
with and without the scale-shift modulation, adaLN modulation).

Per case and provider, in one run: "eager" (the op's `*_ref`, autograd for the backward: what a
user writes), "compile" (torch.compile of that reference) and each fast backend present for the
device ("cpu" C++ kernels, "cuda" kernels); correctness against the reference is checked first.
Each row reports ms, GB/s (bytes the fused op must move: x and y forward; grad_y, x and grad_x
more backward) and the speedups over eager and over torch.compile, per thread count on the CPU.
"""
from __future__ import annotations

import torch

import genkernels
from genkernels import _backend
from genkernels.bench.timing import measure_interleaved
from genkernels.ops.adaln import adaln_modulate, adaln_modulate_ref
from genkernels.ops.group_norm_act import group_norm_act, group_norm_act_ref

SHAPE = (16, 64, 64, 64)  # 2^22 elements, a UNet block at 64x64
GROUPS = 32
ADALN_SHAPE = (16, 256, 1024)  # 2^22 elements: 16 samples of 256 tokens of width 1024
# (name, op, shape, scale-shift modulation, forward + backward)
CASES = (
    ("group_norm_silu fwd", "group_norm_act", SHAPE, False, False),
    ("group_norm_silu fwd_bwd", "group_norm_act", SHAPE, False, True),
    ("group_norm_silu_scale_shift fwd", "group_norm_act", SHAPE, True, False),
    ("group_norm_silu_scale_shift fwd_bwd", "group_norm_act", SHAPE, True, True),
    ("adaln_modulate fwd", "adaln_modulate", ADALN_SHAPE, True, False),
    ("adaln_modulate fwd_bwd", "adaln_modulate", ADALN_SHAPE, True, True),
)
# the same cases at tiny shapes (tests/bench/test_bench.py)
TINY_CASES = tuple((name, op, (2, 8, 4, 4) if op == "group_norm_act" else (2, 5, 16), mod, bwd)
                   for name, op, _, mod, bwd in CASES)
COLUMNS = ["op", "provider", "threads", "dtype", "shape", "ms", "GB/s", "speedup_vs_eager", "speedup_vs_compile"]


def providers(device) -> list[str]:
    device = torch.device(device)
    fast = [name for name in ("cpu", "cuda") if _backend.backend_status(name, device.type) is None]
    return ["eager", "compile"] + fast


def _groups(c: int) -> int:
    return min(GROUPS, c)


def _gn_ref(x, w, b, s=None, t=None):
    return group_norm_act_ref(x, _groups(x.shape[1]), w, b, s, t, 1e-5, "silu")


def _gn_fused(x, w, b, s=None, t=None):
    return group_norm_act(x, _groups(x.shape[1]), w, b, scale=s, shift=t)


def case_function(provider, op, shape, modulated, backward, dtype, device):
    """(fn() -> Tensor, bytes moved per call) for one case and provider, on fresh inputs."""
    g = torch.Generator().manual_seed(0)
    reference = provider in ("eager", "compile")
    x = torch.randn(shape, generator=g).to(device, dtype)
    if op == "group_norm_act":
        c, n = shape[1], shape[0]
        inputs = [x, (1 + 0.1 * torch.randn(c, generator=g)).to(device, dtype),
                  (0.1 * torch.randn(c, generator=g)).to(device, dtype)]
        if modulated:
            inputs += [(0.1 * torch.randn(n, c, generator=g)).to(device, dtype) for _ in range(2)]
        fn = _gn_ref if reference else _gn_fused
    else:
        n, d = shape[0], shape[2]
        inputs = [x] + [(0.1 * torch.randn(n, d, generator=g)).to(device, dtype) for _ in range(2)]
        fn = adaln_modulate_ref if reference else adaln_modulate
    if provider == "compile":
        fn = torch.compile(fn)
    backend = "torch" if reference else provider
    numel, itemsize = x.numel(), x.element_size()
    forward_bytes = 2 * numel * itemsize  # read x, write y (the (C,) / (N, C) parameters are noise)
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
    # backward: read grad_y and x, write grad_x
    return run_fwd_bwd, forward_bytes + 3 * numel * itemsize


def run_suite(device, dtype=torch.float32, with_compile=True, cases=None, threads=(None,)) -> list[dict]:
    """Rows for every case (default CASES), provider and CPU thread count (None: torch's current
    setting); the providers of a case are timed in turns (measure_interleaved)."""
    device = torch.device(device)
    cases = CASES if cases is None else cases
    rows = []
    before = torch.get_num_threads()
    try:
        for count in threads:
            if count is not None and device.type == "cpu":
                torch.set_num_threads(count)  # also the C++ kernels' OpenMP threads (one libgomp)
            for name, op, shape, modulated, backward in cases:
                reference, fns, nbytes = None, {}, 0
                for provider in providers(device):
                    if provider == "compile" and not with_compile:
                        continue
                    fns[provider], nbytes = case_function(provider, op, shape, modulated, backward, dtype, device)
                    out = fns[provider]()
                    if reference is None:
                        reference = out.float()
                    else:  # the fast paths compute in fp32: within a few storage ulps of the reference
                        tol = 1e-4 if dtype == torch.float32 else 3e-2
                        torch.testing.assert_close(out.float(), reference, rtol=tol, atol=tol * reference.abs().max())
                times = measure_interleaved(fns, device)
                for provider, seconds in times.items():
                    rows.append({"op": name, "provider": provider, "threads": torch.get_num_threads(),
                                 "shape": "x".join(map(str, shape)), "dtype": str(dtype).replace("torch.", ""),
                                 "ms": seconds * 1e3, "GB/s": nbytes / seconds / 1e9,
                                 "speedup_vs_eager": times["eager"] / seconds,
                                 "speedup_vs_compile": times["compile"] / seconds if "compile" in times else None})
    finally:
        torch.set_num_threads(before)
    return rows
