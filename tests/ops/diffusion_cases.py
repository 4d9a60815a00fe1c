"""Shared setup for the diffusion op tests: inputs, backends present, and the 2x-rule runner."""
import torch

import genkernels
from genkernels import _backend
from genkernels.diffusion import make_schedule
from genkernels.testing import assert_close_2x
from tests.helpers import DTYPES  # noqa: F401  (re-exported for the diffusion op tests)

SIZES = [1, 7, 1023, 4097]  # elements per sample


def fast_backends():
    """(backend, device) pairs of the fast kernels present on this machine."""
    pairs = []
    if _backend.backend_status("cpu", "cpu") is None:
        pairs.append(("cpu", "cpu"))
    if torch.cuda.is_available() and _backend.backend_status("cuda", "cuda") is None:
        pairs.append(("cuda", "cuda"))
    return pairs


def schedule(kind="cosine", steps=100):
    return make_schedule(kind, steps)


def timesteps_for(batch, steps, device):
    t = torch.randint(0, steps, (batch,), device=device)
    t[0] = 0  # the edges of the schedule are where coefficients are most extreme
    if batch > 1:
        t[-1] = steps - 1
    return t


def run(backend, fn, inputs, upstream=None):
    """fn(*inputs) under `backend`; returns (outputs, grads of inputs) with grads w.r.t. `upstream`."""
    leaves = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    with genkernels.use_backend(backend):
        out = fn(*leaves)
        outs = out if isinstance(out, tuple) else (out,)
        if upstream is not None:
            total = sum((o.double() * u).sum() for o, u in zip(outs, upstream))
            total.backward()
    grads = [x.grad for x in leaves if x.requires_grad]
    return [o.detach() for o in outs], grads


def check_2x(backend, device, dtype, fn, make_inputs, names, grad_scale=1.0):
    """Compare the fast backend with a float64 truth and torch in `dtype`, forward and backward.

    grad_scale multiplies the upstream gradients: a mean-reduced loss over N * D elements needs
    N * D so the gradients it is checked on are O(1), not values so small that low-precision
    rounding (or an all-zero gradient) hides in them."""
    base = [x.to(device) for x in make_inputs()]
    # the truth sees the same (rounded) inputs as the low-precision runs, upcast to float64
    lowp_in = [x.to(dtype) if x.is_floating_point() else x for x in base]
    truth_in = [x.double() if x.is_floating_point() else x for x in lowp_in]
    truth_out, _ = run("torch", fn, truth_in)
    # upstream gradients representable in `dtype`, so every run sees the same ones
    upstream = [(grad_scale * torch.randn_like(o, dtype=torch.float64)).to(dtype).double() for o in truth_out]
    truth_out, truth_grads = run("torch", fn, truth_in, upstream)
    lowp_out, lowp_grads = run("torch", fn, lowp_in, upstream)
    fast_out, fast_grads = run(backend, fn, lowp_in, upstream)
    for i, (f, t, r) in enumerate(zip(fast_out, truth_out, lowp_out)):
        assert f.dtype == r.dtype, f"output {i} dtype {f.dtype} != reference {r.dtype}"
        assert_close_2x(f, t, r, name=f"output {i}")
    assert len(fast_grads) == len(truth_grads) == len(names)
    for name, f, t, r in zip(names, fast_grads, truth_grads, lowp_grads):
        assert f is not None and f.dtype == r.dtype, name
        assert_close_2x(f, t, r, name=f"grad {name}")
