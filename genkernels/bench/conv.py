"""Benchmark setups for the convolution-family elementwise ops (the PixelCNN / WaveNet gate).

Per case and provider, in one run: "eager" (gated_activation_ref, autograd for the backward: what a
user writes), "compile" (torch.compile of that reference) and each fast backend present for the
device ("cpu" C++ kernels, "cuda" kernels); correctness against the reference is checked first.
Each row reports ms, GB/s (bytes the fused op must move) and the speedup over eager.
"""
from __future__ import annotations

import torch

import genkernels
from genkernels import _backend
from genkernels.ops.gated_activation import gated_activation, gated_activation_ref

# (name, x shape, with cond, forward + backward): x is (N, 2C, T), gated along dim 1
CASES = (
    ("gated_activation", (64, 256, 1024), False, False),
    ("gated_activation+cond", (64, 256, 1024), True, False),
    ("gated_activation+cond fwd_bwd", (64, 256, 1024), True, True),
)


def providers(device) -> list[str]:
    device = torch.device(device)
    fast = [name for name in ("cpu", "cuda") if _backend.backend_status(name, device.type) is None]
    return ["eager", "compile"] + fast


def case_function(provider, shape, with_cond, backward, dtype, device):
    """(fn() -> Tensor, bytes moved per call) for one case and provider, on fresh inputs."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(device, dtype)
    cond = torch.randn(shape[0], shape[1], generator=g).to(device, dtype) if with_cond else None
    numel = x.numel()
    itemsize = x.element_size()
    fn = gated_activation_ref if provider in ("eager", "compile") else gated_activation
    if provider == "compile":
        fn = torch.compile(fn)
    backend = "torch" if provider in ("eager", "compile") else provider
    if not backward:
        def run():
            with genkernels.use_backend(backend):
                return fn(x, cond)
        return run, numel * itemsize * 3 // 2  # read x, write y (half of x)
    x.requires_grad_(True)
    if cond is not None:
        cond.requires_grad_(True)
    grad = torch.randn(shape[0], shape[1] // 2, *shape[2:], generator=g).to(device, dtype)
    wrt = [x] if cond is None else [x, cond]

    def run_fwd_bwd():
        with genkernels.use_backend(backend):
            return torch.autograd.grad(fn(x, cond), wrt, grad)[0]
    # forward (read x, write y: 1.5 numel) + backward (read x and grad_y, write grad_x: 2.5 numel)
    return run_fwd_bwd, 4 * numel * itemsize


def run_suite(device, dtype=torch.float32, with_compile=True, cases=CASES) -> list[dict]:
    from genkernels.bench.timing import measure

    device = torch.device(device)
    rows = []
    for name, shape, with_cond, backward in cases:
        reference = None
        eager_time = None
        for provider in providers(device):
            if provider == "compile" and not with_compile:
                continue
            fn, nbytes = case_function(provider, shape, with_cond, backward, dtype, device)
            out = fn()
            if reference is None:
                reference = out.float()
            else:  # the fast paths compute in fp32: within a few storage ulps of the reference
                tol = 1e-5 if dtype == torch.float32 else 2e-2
                torch.testing.assert_close(out.float(), reference, rtol=tol, atol=tol)
            seconds = measure(fn, device)
            if provider == "eager":
                eager_time = seconds
            rows.append({"op": name, "provider": provider, "shape": "x".join(map(str, shape)),
                         "dtype": str(dtype).replace("torch.", ""), "ms": seconds * 1e3,
                         "GB/s": nbytes / seconds / 1e9, "speedup_vs_eager": eager_time / seconds})
    return rows
