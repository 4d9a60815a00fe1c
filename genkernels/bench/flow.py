"""Benchmark setups for the normalizing-flow ops (affine coupling, ActNorm, rational-quadratic spline).

Per case and provider, in one run: "eager" (the op's `*_ref`, autograd for the backward: what a
user writes), "compile" (torch.compile of that reference) and each fast backend present for the
device ("cpu" C++ kernels, "cuda" kernels); correctness against the reference is checked first.
Each row reports ms, GB/s (bytes the fused op must move) and the speedup over eager, per thread
count on the CPU.
"""
from __future__ import annotations

import torch

import genkernels
from genkernels import _backend
from genkernels.ops.actnorm import actnorm, actnorm_ref
from genkernels.ops.affine_coupling import affine_coupling, affine_coupling_ref
from genkernels.ops.rq_spline import rq_spline, rq_spline_ref

SHAPE = (16, 16, 128, 128)  # 2^22 elements
# (name, op, x shape, mask, forward + backward)
CASES = (
    ("affine_coupling fwd", "affine_coupling", SHAPE, "channel", False),
    ("affine_coupling fwd_bwd", "affine_coupling", SHAPE, "channel", True),
    ("affine_coupling checkerboard fwd_bwd", "affine_coupling", SHAPE, "checkerboard", True),
    ("actnorm fwd_bwd", "actnorm", SHAPE, None, True),
    # K = RQ_BINS bins per element: the (N, D, K) parameters dominate the traffic; 2^20 elements
    # (the eager reference takes seconds per call on one CPU thread)
    ("rq_spline fwd_bwd", "rq_spline", (64, 16384), None, True),
    # one Glow step: ActNorm -> invertible 1x1 conv -> affine coupling whose conditioner is a 1x1
    # conv (the cheapest network, so the flow ops' share of the step is visible; a 3x3 conv
    # conditioner's matmuls would dominate every provider alike)
    ("glow_step fwd_bwd", "glow_step", SHAPE, "channel", True),
)
RQ_BINS = 8


def providers(device) -> list[str]:
    device = torch.device(device)
    fast = [name for name in ("cpu", "cuda") if _backend.backend_status(name, device.type) is None]
    return ["eager", "compile"] + fast


def _coupling_inputs(shape, mask, dtype, device, g):
    pshape = (shape[0], shape[1] // 2, *shape[2:]) if mask == "channel" else shape
    x = torch.randn(shape, generator=g).to(device, dtype)
    return x, torch.randn(pshape, generator=g).to(device, dtype), torch.randn(pshape, generator=g).to(device, dtype)


def _glow_step(x, bias, log_scale, weight, cond_weight, cond_bias, *, fused):
    """(y, logdet) of ActNorm -> 1x1 conv (weight (C, C)) -> channel-mask affine coupling."""
    c = x.shape[1]
    h, logdet = (actnorm if fused else actnorm_ref)(x, bias, log_scale)
    h = torch.nn.functional.conv2d(h, weight.view(c, c, 1, 1))
    logdet = logdet + h.shape[2] * h.shape[3] * torch.linalg.slogdet(weight)[1]
    raw = torch.nn.functional.conv2d(h.narrow(1, 0, c // 2), cond_weight, cond_bias)
    shift, raw_log_scale = raw.chunk(2, dim=1)
    if fused:
        y, ld = affine_coupling(h, shift, raw_log_scale)
    else:
        y, ld = affine_coupling_ref(h, shift, raw_log_scale)
    return y, logdet + ld


def case_function(provider, op, shape, mask, backward, dtype, device):
    """(fn() -> Tensor, bytes moved per call) for one case and provider, on fresh inputs."""
    g = torch.Generator().manual_seed(0)
    reference = provider in ("eager", "compile")
    if op == "affine_coupling":
        inputs = list(_coupling_inputs(shape, mask, dtype, device, g))
        if reference:
            fn = lambda x, t, r: affine_coupling_ref(x, t, r, mask)  # noqa: E731
        else:
            fn = lambda x, t, r: affine_coupling(x, t, r, mask=mask)  # noqa: E731
        param_numel = inputs[1].numel()
    elif op == "rq_spline":
        x = 3.6 * (2 * torch.rand(shape, generator=g) - 1)  # a sixth outside [-3, 3]: the identity tails
        inputs = [x.to(device, dtype)] + [(1.5 * torch.randn(*shape, k, generator=g)).to(device, dtype)
                                          for k in (RQ_BINS, RQ_BINS, RQ_BINS - 1)]
        fn = rq_spline_ref if reference else rq_spline
        param_numel = (3 * RQ_BINS - 1) * x.numel() // 2  # counted twice below, as the coupling's two
    elif op == "glow_step":
        c = shape[1]
        x = torch.randn(shape, generator=g)
        weight = torch.linalg.qr(torch.randn(c, c, generator=g))[0]
        inputs = [t.to(device, dtype) for t in (
            x, 0.1 * torch.randn(c, generator=g), 0.1 * torch.randn(c, generator=g), weight,
            0.1 * torch.randn(c, c // 2, 1, 1, generator=g), torch.zeros(c))]
        fn = (lambda *a: _glow_step(*a, fused=False)) if reference else (lambda *a: _glow_step(*a, fused=True))  # noqa: E731
        param_numel = x.numel() // 2  # the coupling's shift and log-scale (read and written once each)
    else:
        x = torch.randn(shape, generator=g).to(device, dtype)
        bias, log_scale = (0.1 * torch.randn(shape[1], generator=g)).to(device, dtype), torch.zeros(shape[1]).to(
            device, dtype)
        inputs = [x, bias, log_scale]
        fn = actnorm_ref if reference else actnorm
        param_numel = 0
    if provider == "compile":
        fn = torch.compile(fn)
    backend = "torch" if reference else provider
    numel, itemsize = inputs[0].numel(), inputs[0].element_size()
    # forward: read x and the parameters, write y
    forward_bytes = (2 * numel + 2 * param_numel) * itemsize
    if not backward:
        def run():
            with genkernels.use_backend(backend):
                return fn(*inputs)[0]
        return run, forward_bytes
    for t in inputs:
        t.requires_grad_(True)
    grad_y = torch.randn(shape, generator=g).to(device, dtype)
    grad_logdet = torch.randn(shape[0], generator=g).to(device)

    def run_fwd_bwd():
        with genkernels.use_backend(backend):
            y, logdet = fn(*inputs)
            return torch.autograd.grad((y, logdet), inputs, (grad_y, grad_logdet.to(logdet.dtype)))[-1]
    # backward: read grad_y, x and the parameters, write grad_x and the parameter gradients
    return run_fwd_bwd, forward_bytes + (3 * numel + 4 * param_numel) * itemsize


def run_suite(device, dtype=torch.float32, with_compile=True, cases=CASES, threads=(None,)) -> list[dict]:
    """Rows for every case, provider and CPU thread count (None: torch's current setting)."""
    from genkernels.bench.timing import measure

    device = torch.device(device)
    rows = []
    before = torch.get_num_threads()
    try:
        for count in threads:
            if count is not None and device.type == "cpu":
                torch.set_num_threads(count)  # also the C++ kernels' OpenMP threads (one libgomp)
            for name, op, shape, mask, backward in cases:
                reference, eager_time = None, None
                for provider in providers(device):
                    if provider == "compile" and not with_compile:
                        continue
                    fn, nbytes = case_function(provider, op, shape, mask, backward, dtype, device)
                    out = fn()
                    if reference is None:
                        reference = out.float()
                    else:  # the fast paths compute in fp32: within a few storage ulps of the reference
                        tol = 1e-4 if dtype == torch.float32 else 3e-2
                        if op == "rq_spline":  # fp32 knots put the reference ~1e-3 off on steep bins
                            tol *= 10
                        torch.testing.assert_close(out.float(), reference, rtol=tol, atol=tol * reference.abs().max())
                    seconds = measure(fn, device)
                    if provider == "eager":
                        eager_time = seconds
                    rows.append({"op": name, "provider": provider, "threads": torch.get_num_threads(),
                                 "shape": "x".join(map(str, shape)), "dtype": str(dtype).replace("torch.", ""),
                                 "ms": seconds * 1e3, "GB/s": nbytes / seconds / 1e9,
                                 "speedup_vs_eager": eager_time / seconds})
    finally:
        torch.set_num_threads(before)
    return rows
