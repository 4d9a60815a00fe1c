"""Masked 2D convolution (PixelCNN) against conv2d on the masked weight, the reference everyone uses.

Per case (mask, kernel size, channels, image size, gated or not) and mode ("fwd", "fwd_bwd"), in one
run: "conv2d" is `F.conv2d(x, weight * mask, bias, padding=k // 2)` with a prebuilt mask (then the
tanh * sigmoid gate in eager PyTorch when gated): cuDNN on a GPU, oneDNN / ATen on a CPU. "genkernels"
is `genkernels.ops.masked_conv2d`: on CUDA tensors its Triton kernel (only the kept taps, gate
fused); on a CPU it runs that same conv2d reference (plus argument checks and the mask built per
call), so the CPU table compares the reference with itself and measures the wrapper, not a kernel
(each row names the backend that ran). The results of both providers (and in fwd_bwd the gradients
of x, weight and bias) are compared before timing.

Default sizes: on CUDA `GPU_CASES` (7x7 mask A/B and 3x3 mask B, 32x32 and 64x64, 64 and 256
channels, gated and not, batch 16); elsewhere `CPU_CASES` (batch 4, 64 channels, 32x32), which
finish in well under a minute on 2 cores.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from genkernels.ops.masked_conv import _backend as _op_backend
from genkernels.ops.masked_conv import conv_mask, gate_ref, masked_conv2d

PROVIDERS = ("conv2d", "genkernels")
MODES = ("fwd", "fwd_bwd")


class Case(NamedTuple):
    kernel_size: int
    mask_type: str
    channels: int   # input channels, and output channels (after the gate when gated)
    size: int       # image height = width
    gated: bool
    batch: int

    @property
    def name(self) -> str:
        return (f"{self.kernel_size}x{self.kernel_size} {self.mask_type} c{self.channels} "
                f"{self.size}x{self.size}{' gated' if self.gated else ''}")


_MASKS = ((7, "A"), (7, "B"), (3, "B"))
GPU_CASES = tuple(Case(k, m, c, s, g, 16) for (k, m) in _MASKS for s in (32, 64) for c in (64, 256)
                  for g in (False, True))
CPU_CASES = tuple(Case(k, m, 64, 32, g, 4) for (k, m) in _MASKS for g in (False, True))
TINY_CASES = (Case(3, "B", 4, 6, False, 1), Case(5, "A", 4, 6, True, 1))


def default_cases(device) -> tuple[Case, ...]:
    return GPU_CASES if torch.device(device).type == "cuda" else CPU_CASES


def inputs(case: Case, dtype, device) -> dict:
    """Fresh inputs of one case (seeded): x, weight (every tap random: the op ignores masked ones),
    bias, and the output gradient for fwd_bwd."""
    g = torch.Generator().manual_seed(0)
    k, c = case.kernel_size, case.channels
    cout = 2 * c if case.gated else c
    scale = (c * k * k) ** -0.5
    return {"x": torch.randn(case.batch, c, case.size, case.size, generator=g).to(device, dtype),
            "weight": (torch.randn(cout, c, k, k, generator=g) * scale).to(device, dtype),
            "bias": (torch.randn(cout, generator=g) * 0.1).to(device, dtype),
            "grad": torch.randn(case.batch, c, case.size, case.size, generator=g).to(device, dtype)}


def case_function(provider: str, case: Case, mode: str, dtype=torch.float32, device="cpu"):
    """fn() -> output (fwd) or (dx, dweight, dbias) (fwd_bwd) for one provider, on fresh inputs."""
    if provider not in PROVIDERS or mode not in MODES:
        raise ValueError(f"provider must be in {PROVIDERS} and mode in {MODES}, got {provider!r}, {mode!r}")
    t = inputs(case, dtype, device)
    x, weight, bias, grad = t["x"], t["weight"], t["bias"], t["grad"]
    if provider == "conv2d":
        mask = conv_mask(weight.shape[0], weight.shape[1], case.kernel_size, case.mask_type,
                         gated=case.gated).to(device, dtype)

        def forward():
            out = F.conv2d(x, weight * mask, bias, padding=case.kernel_size // 2)
            return gate_ref(out) if case.gated else out
    else:
        def forward():
            return masked_conv2d(x, weight, bias, case.mask_type, gated=case.gated)
    if mode == "fwd":
        def run():
            with torch.no_grad():
                return forward()
        return run
    for tensor in (x, weight, bias):
        tensor.requires_grad_(True)
    return lambda: torch.autograd.grad(forward(), (x, weight, bias), grad)


def check_close(out, ref, dtype, device) -> None:
    """Max |error| within tol * max(1, max |ref|), per tensor: TF32 on GPUs (cuDNN's fp32 default
    and the kernel's dots) and bf16/fp16 round far above fp32 ulps."""
    outs, refs = (out, ref) if isinstance(out, tuple) else ((out,), (ref,))
    low = dtype in (torch.float16, torch.bfloat16)
    tol = 3e-2 if low else 1e-2 if torch.device(device).type == "cuda" else 1e-4
    for name, o, r in zip(("out/dx", "dweight", "dbias"), outs, refs):
        err = (o.float() - r.float()).abs().max().item()
        bound = tol * max(1.0, r.float().abs().max().item())
        if not err <= bound:
            raise AssertionError(f"masked_conv bench: {name} differs from conv2d by {err:.3g} (> {bound:.3g})")


def run_suite(device, dtype=torch.float32, cases=None, modes=MODES, repeat: int | None = None) -> list[dict]:
    """One row per case, mode and provider: ms, and conv2d's time over this provider's."""
    from genkernels.bench.timing import measure

    device = torch.device(device)
    cases = default_cases(device) if cases is None else cases
    repeat = repeat if repeat is not None else 10 if device.type == "cuda" else 5
    backend = _op_backend(device)
    rows = []
    for case in cases:
        for mode in modes:
            fns = {p: case_function(p, case, mode, dtype, device) for p in PROVIDERS}
            check_close(fns["genkernels"](), fns["conv2d"](), dtype, device)  # correctness before timing
            times = {p: measure(fn, device, repeat=repeat) for p, fn in fns.items()}
            for p in PROVIDERS:
                rows.append({"op": case.name, "mode": mode, "provider": p,
                             "backend": backend if p == "genkernels" else "conv2d",
                             "batch": case.batch, "dtype": str(dtype).replace("torch.", ""),
                             "ms": times[p] * 1e3, "speedup_vs_conv2d": times["conv2d"] / times[p]})
    return rows


NOTE = ("genkernels.masked_conv2d vs F.conv2d on the masked weight (+ eager gate); backend 'torch' means "
        "masked_conv2d ran that same conv2d reference (no Triton kernel off CUDA): the CPU table measures "
        "the wrapper, not a kernel")
