"""layer_norm: the C++ backend (and CUDA where present) and the torch fallback against the float64
reference under the 2x rule, y and every gradient, odd hidden sizes and several row blocks; NaN,
optional parameters, determinism, opcheck, compile and errors."""
import pytest
import torch
import torch.nn.functional as F

from genkernels import _ext, use_backend
from genkernels.ops import layer_norm
from genkernels.ops.layer_norm import layer_norm_backward_op, layer_norm_op, layer_norm_ref
from genkernels.testing import assert_close_2x
from tests.helpers import DTYPES

BACKENDS = [pytest.param("cpu", "cpu", marks=pytest.mark.skipif(_ext._C is None, reason="genkernels._C not built")),
            pytest.param("torch", "cpu")]
if torch.cuda.is_available() and _ext._cuda is not None:
    BACKENDS.append(pytest.param("cuda", "cuda"))

SHAPES = [(4, 7), (3, 5, 33), (70, 100), (2, 1)]  # 70 rows: three row blocks of the weight/bias sums


def _inputs(shape, dtype, device):
    d = shape[-1]
    x = (3 * torch.randn(shape) + 1).to(device, dtype).requires_grad_(True)
    w = (1 + 0.5 * torch.randn(d)).to(device, dtype).requires_grad_(True)
    b = torch.randn(d).to(device, dtype).requires_grad_(True)
    return x, w, b


def _call(fn, x, w, b, gy):
    y = fn(x, w, b, 1e-5)
    return (y, *torch.autograd.grad(y, [x, w, b], gy.to(y.dtype)))


def _leaf64(t):
    return t.detach().double().requires_grad_(True)


def check_row_norm(fast, truth, lowp, term_scales, label):
    for name, a, t, r in zip(["y", "grad_x", "grad_weight", "grad_bias"], fast, truth, lowp):
        assert a.shape == t.shape and a.dtype == r.dtype
        scale = None
        if name in term_scales:  # (D,) column sums: one sample, floors from the summed terms
            a, t, r, scale = a[None], t[None], r[None], term_scales[name][None]
        else:
            a, t, r = a.reshape(-1, a.shape[-1]), t.reshape(-1, t.shape[-1]), r.reshape(-1, r.shape[-1])
        assert_close_2x(a, t, r, name=f"{name} [{label}]", term_scale=scale)


@pytest.mark.parametrize("backend, device", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(backend, device, dtype, shape):
    torch.manual_seed(0)
    x, w, b = _inputs(shape, dtype, device)
    gy = torch.randn(shape, device=device)
    with use_backend(backend):
        fast = _call(layer_norm, x, w, b, gy)
    x64, w64, b64 = _leaf64(x), _leaf64(w), _leaf64(b)
    truth = _call(layer_norm_ref, x64, w64, b64, gy.double())
    lowp = _call(layer_norm_ref, x, w, b, gy)
    d = shape[-1]
    xhat = F.layer_norm(x64.detach(), (d,)).reshape(-1, d)
    g = gy.double().reshape(-1, d).abs()
    scales = {"grad_weight": (g * xhat.abs()).sum(0), "grad_bias": g.sum(0)}
    check_row_norm(fast, truth, lowp, scales, f"{backend}, {dtype}, {shape}")


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_optional_parameters_and_float64(backend, device):
    x = torch.randn(6, 33, device=device, dtype=torch.float64, requires_grad=True)
    y = layer_norm(x)  # float64 takes the torch path whatever the default backend
    (gx,) = torch.autograd.grad(y.sum(), [x])
    r = F.layer_norm(x, (33,))
    torch.testing.assert_close(y, r)
    torch.testing.assert_close(gx, torch.autograd.grad(r.sum(), [x])[0])
    x32 = x.detach().float().requires_grad_(True)
    w = torch.randn(33, device=device, requires_grad=True)
    with use_backend(backend):
        y = layer_norm(x32, w, None)
        gx, gw = torch.autograd.grad(y.square().sum(), [x32, w])
    r = F.layer_norm(x32, (33,), w)
    torch.testing.assert_close(y, r, rtol=1e-5, atol=1e-5)
    rgx, rgw = torch.autograd.grad(r.square().sum(), [x32, w])
    torch.testing.assert_close(gx, rgx, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gw, rgw, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_nan_propagates(backend, device):
    x, w, b = (t.detach() for t in _inputs((3, 9), torch.float32, device))
    x[1, 4] = float("nan")
    with use_backend(backend):
        y = layer_norm(x, w, b)
    assert torch.isnan(y[1]).all() and torch.isfinite(y[[0, 2]]).all()


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_deterministic_and_non_contiguous(backend, device):
    x = torch.randn(100, 40, device=device).t().contiguous().t().requires_grad_(True)
    assert not x.is_contiguous()
    w, b = torch.randn(40, device=device, requires_grad=True), torch.randn(40, device=device, requires_grad=True)
    gy = torch.randn(100, 40, device=device)
    with use_backend(backend):
        runs = [_call(layer_norm, x, w, b, gy) for _ in range(2)]
    for a, c in zip(*runs):
        assert torch.equal(a, c)
    ref = _call(layer_norm_ref, x, w, b, gy)
    for a, r in zip(runs[0], ref):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_opcheck(backend, device):
    x, w, b = _inputs((3, 4, 5), torch.float32, device)
    with use_backend(backend):
        torch.library.opcheck(layer_norm_op.registered, (x, w, b, 1e-5))
        torch.library.opcheck(layer_norm_op.registered, (x, None, None, 1e-5))
        _, mean, rstd = layer_norm_op(x.detach(), w.detach(), b.detach(), 1e-5)
        torch.library.opcheck(layer_norm_backward_op.registered,
                              (torch.randn(3, 4, 5, device=device), x.detach(), w.detach(), mean, rstd))


def test_torch_compile_fullgraph():
    x, w, b = _inputs((4, 9), torch.float32, "cpu")
    step = lambda x, w, b: layer_norm(x, w, b).square().sum()  # noqa: E731
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    eager = torch.autograd.grad(step(x, w, b), [x, w, b])
    got = torch.autograd.grad(compiled(x, w, b), [x, w, b])
    for g, e in zip(got, eager):
        torch.testing.assert_close(g, e)


def test_errors_name_the_argument():
    x = torch.zeros(2, 5)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        layer_norm([0.0])
    with pytest.raises(ValueError, match=r"weight must have shape \(D,\) = \(5,\)"):
        layer_norm(x, torch.zeros(4))
    with pytest.raises(TypeError, match="bias must have x's dtype"):
        layer_norm(x, None, torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="eps must be a non-negative float"):
        layer_norm(x, eps=-1.0)
    with pytest.raises(ValueError, match="non-empty last dimension"):
        layer_norm(torch.zeros(2, 0))
