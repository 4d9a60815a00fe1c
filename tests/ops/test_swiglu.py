"""swiglu and gelu_tanh: the C++ backend (and CUDA where present) and the torch fallback against the
float64 reference under the 2x rule, forward and every gradient, odd sizes and large |x|; NaN,
opcheck, compile and errors."""
import pytest
import torch

from genkernels import use_backend
from genkernels.ops import gelu_tanh, swiglu
from genkernels.ops.gelu_tanh import gelu_tanh_backward_op, gelu_tanh_op, gelu_tanh_ref
from genkernels.ops.swiglu import swiglu_backward_op, swiglu_op, swiglu_ref
from genkernels.testing import assert_close_2x
from tests.helpers import DTYPES
from tests.ops.test_layer_norm import BACKENDS

SHAPES = [(3, 7), (2, 5, 33), (4, 1000)]


def _x(shape, dtype, device, scale=3.0):
    x = scale * torch.randn(shape)
    x.view(-1)[:4] = torch.tensor([-60.0, 60.0, -9.0, 9.0])[: min(4, x.numel())]  # saturated tails
    return x.to(device, dtype).requires_grad_(True)


def _leaf64(t):
    return t.detach().double().requires_grad_(True)


def _check(fast, truth, lowp, names, label):
    for name, a, t, r in zip(names, fast, truth, lowp):
        assert a.shape == t.shape and a.dtype == r.dtype
        assert_close_2x(a, t, r, name=f"{name} [{label}]")


@pytest.mark.parametrize("backend, device", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_swiglu_matches_reference(backend, device, dtype, shape):
    torch.manual_seed(0)
    gate, up = _x(shape, dtype, device), _x(shape, dtype, device, 1.0)
    gy = torch.randn(shape, device=device)

    def call(fn, g, u, grad):
        y = fn(g, u)
        return (y, *torch.autograd.grad(y, [g, u], grad.to(y.dtype)))

    with use_backend(backend):
        fast = call(swiglu, gate, up, gy)
    truth = call(swiglu_ref, _leaf64(gate), _leaf64(up), gy.double())
    lowp = call(swiglu_ref, gate, up, gy)
    _check(fast, truth, lowp, ["y", "grad_gate", "grad_up"], f"{backend}, {dtype}, {shape}")


@pytest.mark.parametrize("backend, device", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gelu_tanh_matches_reference(backend, device, dtype, shape):
    torch.manual_seed(1)
    x = _x(shape, dtype, device)
    gy = torch.randn(shape, device=device)

    def call(fn, x, grad):
        y = fn(x)
        return (y, *torch.autograd.grad(y, [x], grad.to(y.dtype)))

    with use_backend(backend):
        fast = call(gelu_tanh, x, gy)
    truth = call(gelu_tanh_ref, _leaf64(x), gy.double())
    lowp = call(gelu_tanh_ref, x, gy)
    _check(fast, truth, lowp, ["y", "grad_x"], f"{backend}, {dtype}, {shape}")


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_nan_propagates_and_float64(backend, device):
    gate, up = torch.randn(2, 5, device=device), torch.randn(2, 5, device=device)
    gate[0, 1], up[1, 2] = float("nan"), float("nan")
    with use_backend(backend):
        y, z = swiglu(gate, up), gelu_tanh(gate)
    assert torch.isnan(y).sum() == 2 and torch.isnan(y[0, 1]) and torch.isnan(y[1, 2])
    assert torch.isnan(z).sum() == 1 and torch.isnan(z[0, 1])
    x64 = torch.randn(3, 4, dtype=torch.float64, device=device)
    torch.testing.assert_close(gelu_tanh(x64), gelu_tanh_ref(x64))
    torch.testing.assert_close(swiglu(x64, x64), swiglu_ref(x64, x64))


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_opcheck(backend, device):
    g = torch.randn(3, 5, device=device, requires_grad=True)
    u = torch.randn(3, 5, device=device, requires_grad=True)
    with use_backend(backend):
        torch.library.opcheck(swiglu_op.registered, (g, u))
        torch.library.opcheck(swiglu_backward_op.registered, (torch.randn(3, 5, device=device), g.detach(), u.detach()))
        torch.library.opcheck(gelu_tanh_op.registered, (g,))
        torch.library.opcheck(gelu_tanh_backward_op.registered, (torch.randn(3, 5, device=device), g.detach()))


def test_torch_compile_fullgraph():
    g, u = torch.randn(4, 9, requires_grad=True), torch.randn(4, 9, requires_grad=True)
    step = lambda g, u: (swiglu(g, u) + gelu_tanh(u)).square().sum()  # noqa: E731
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    eager = torch.autograd.grad(step(g, u), [g, u])
    for a, e in zip(torch.autograd.grad(compiled(g, u), [g, u]), eager):
        torch.testing.assert_close(a, e)


def test_errors_name_the_argument():
    g = torch.zeros(2, 5)
    with pytest.raises(TypeError, match="gate must be a torch.Tensor"):
        swiglu(None, g)
    with pytest.raises(ValueError, match="up must have the shape of gate"):
        swiglu(g, torch.zeros(2, 4))
    with pytest.raises(TypeError, match="up must have the dtype of gate"):
        swiglu(g, g.double())
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        gelu_tanh(torch.zeros(3, dtype=torch.int32))
