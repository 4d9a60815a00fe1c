"""rms_norm: the C++ backend (and CUDA where present) and the torch fallback against the float64
reference under the 2x rule, y and every gradient, odd hidden sizes and several row blocks; NaN,
no weight, determinism, opcheck, compile and errors."""
import pytest
import torch

from genkernels import use_backend
from genkernels.ops import rms_norm
from genkernels.ops.rms_norm import rms_norm_backward_op, rms_norm_op, rms_norm_ref
from genkernels.testing import assert_close_2x
from tests.helpers import DTYPES
from tests.ops.test_layer_norm import BACKENDS, SHAPES, _leaf64


def _call(fn, x, w, gy):
    y = fn(x, w, 1e-6)
    return (y, *torch.autograd.grad(y, [x, w], gy.to(y.dtype)))


@pytest.mark.parametrize("backend, device", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(backend, device, dtype, shape):
    torch.manual_seed(1)
    d = shape[-1]
    x = (3 * torch.randn(shape) + 1).to(device, dtype).requires_grad_(True)
    w = (1 + 0.5 * torch.randn(d)).to(device, dtype).requires_grad_(True)
    gy = torch.randn(shape, device=device)
    with use_backend(backend):
        fast = _call(rms_norm, x, w, gy)
    x64, w64 = _leaf64(x), _leaf64(w)
    truth = _call(rms_norm_ref, x64, w64, gy.double())
    lowp = _call(rms_norm_ref, x, w, gy)
    xhat = rms_norm_ref(x64.detach(), None).reshape(-1, d)
    scale_w = (gy.double().reshape(-1, d).abs() * xhat.abs()).sum(0)
    for name, a, t, r in zip(["y", "grad_x", "grad_weight"], fast, truth, lowp):
        assert a.shape == t.shape and a.dtype == r.dtype
        if name == "grad_weight":
            assert_close_2x(a[None], t[None], r[None], name=f"{name} [{backend}, {dtype}, {shape}]",
                            term_scale=scale_w[None])
        else:
            assert_close_2x(a.reshape(-1, d), t.reshape(-1, d), r.reshape(-1, d),
                            name=f"{name} [{backend}, {dtype}, {shape}]")


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_no_weight_nan_and_determinism(backend, device):
    x = torch.randn(70, 33, device=device, requires_grad=True)
    with use_backend(backend):
        y = rms_norm(x)
        gx = torch.autograd.grad(y.square().sum(), [x])[0]
    r = rms_norm_ref(x, None)
    torch.testing.assert_close(y, r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, torch.autograd.grad(r.square().sum(), [x])[0], rtol=1e-4, atol=1e-4)
    w = torch.randn(33, device=device, requires_grad=True)
    gy = torch.randn(70, 33, device=device)
    with use_backend(backend):
        runs = [_call(rms_norm, x, w, gy) for _ in range(2)]
    for a, c in zip(*runs):
        assert torch.equal(a, c)
    xn = x.detach().clone()
    xn[3, 5] = float("nan")
    with use_backend(backend):
        y = rms_norm(xn, w.detach())
    assert torch.isnan(y[3]).all() and torch.isfinite(y[torch.arange(70) != 3]).all()


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_opcheck(backend, device):
    x = torch.randn(3, 4, 5, device=device, requires_grad=True)
    w = torch.randn(5, device=device, requires_grad=True)
    with use_backend(backend):
        torch.library.opcheck(rms_norm_op.registered, (x, w, 1e-6))
        torch.library.opcheck(rms_norm_op.registered, (x, None, 1e-6))
        _, rstd = rms_norm_op(x.detach(), w.detach(), 1e-6)
        torch.library.opcheck(rms_norm_backward_op.registered,
                              (torch.randn(3, 4, 5, device=device), x.detach(), w.detach(), rstd))


def test_torch_compile_fullgraph():
    x, w = torch.randn(4, 9, requires_grad=True), torch.randn(9, requires_grad=True)
    step = lambda x, w: rms_norm(x, w).square().sum()  # noqa: E731
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    eager = torch.autograd.grad(step(x, w), [x, w])
    for g, e in zip(torch.autograd.grad(compiled(x, w), [x, w]), eager):
        torch.testing.assert_close(g, e)


def test_errors_name_the_argument():
    x = torch.zeros(2, 5)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        rms_norm(torch.zeros(2, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"weight must have shape \(D,\) = \(5,\)"):
        rms_norm(x, torch.zeros(6))
    with pytest.raises(TypeError, match="weight must be a torch.Tensor or None"):
        rms_norm(x, [1.0] * 5)
    with pytest.raises(ValueError, match="eps must be a non-negative float"):
        rms_norm(x, eps="1e-6")
