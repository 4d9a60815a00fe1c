"""actnorm: every compiled backend against the float64 reference under the 2x rule, forward and
inverse, y / logdet and every gradient (the per-channel sums deterministic), odd sizes; round
trips, logdet = log|det J|, NaN, zero sizes, the routes, opcheck, compile and errors."""
import pytest
import torch

from genkernels import _ext, use_backend
from genkernels.ops import actnorm
from genkernels.ops.actnorm import actnorm_backward_op, actnorm_op, actnorm_ref
from genkernels.testing import assert_close_2x
from tests.helpers import DTYPES

BACKENDS = [pytest.param("cpu", "cpu", marks=pytest.mark.skipif(_ext._C is None, reason="genkernels._C not built"))]
if torch.cuda.is_available() and _ext._cuda is not None:
    BACKENDS.append(pytest.param("cuda", "cuda"))

# vectors, short rows (flat loop), long rows (row loop), batch 1, a channel over two chunks
SHAPES = [(5, 7), (3, 4, 5), (2, 3, 5, 7), (1, 6, 17), (3, 2, 1500)]


def _inputs(shape, dtype, device):
    x = (2 * torch.randn(shape)).to(device, dtype).requires_grad_(True)
    bias = torch.randn(shape[1]).to(device, dtype).requires_grad_(True)
    log_scale = (0.5 * torch.randn(shape[1])).to(device, dtype).requires_grad_(True)
    return x, bias, log_scale


def _call(fn, x, bias, log_scale, inverse, grad_y, grad_logdet):
    y, logdet = fn(x, bias, log_scale, inverse=inverse) if fn is actnorm else fn(x, bias, log_scale, inverse)
    grads = torch.autograd.grad((y, logdet), [x, bias, log_scale], (grad_y.to(y.dtype), grad_logdet.to(logdet.dtype)))
    return (y, logdet, *grads)


def _leaf64(t):
    return t.detach().double().requires_grad_(True)


def _sum_term_scales(x64, bias64, log_scale64, inverse, grad_y, grad_logdet):
    """|terms| of the per-channel sums (bias, log_scale): where a sum cancels, a correct float32 sum
    is off by ulps of its terms, not of the (small) result."""
    dims = [d for d in range(x64.dim()) if d != 1]
    view = (1, -1) + (1,) * (x64.dim() - 2)
    g = grad_y.double().abs()
    e = torch.exp((-1 if inverse else 1) * log_scale64.detach().view(view))
    bias_terms = (g if inverse else g * e).sum(dims)
    inner = x64[0, 0].numel()
    value = (x64.detach() * e) if inverse else (x64.detach() + bias64.detach().view(view)) * e
    ls_terms = (g * value.abs()).sum(dims) + inner * grad_logdet.double().abs().sum()
    return bias_terms, ls_terms


@pytest.mark.parametrize("backend, device", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_matches_reference(backend, device, dtype, shape, inverse):
    x, bias, log_scale = _inputs(shape, dtype, device)
    grad_y, grad_logdet = torch.randn(shape, device=device), torch.randn(shape[0], device=device)
    with use_backend(backend):
        fast = _call(actnorm, x, bias, log_scale, inverse, grad_y, grad_logdet)
    x64, b64, l64 = _leaf64(x), _leaf64(bias), _leaf64(log_scale)
    truth = _call(actnorm_ref, x64, b64, l64, inverse, grad_y.double(), grad_logdet.double())
    lowp = _call(actnorm_ref, x, bias, log_scale, inverse, grad_y, grad_logdet)
    assert fast[0].dtype == dtype and fast[1].dtype == (torch.float32 if dtype != torch.float64 else dtype)
    bias_scale, ls_scale = _sum_term_scales(x64, b64, l64, inverse, grad_y, grad_logdet)
    scales = {"grad_bias": bias_scale, "grad_log_scale": ls_scale}
    for name, a, t, r in zip(["y", "logdet", "grad_x", "grad_bias", "grad_log_scale"], fast, truth, lowp):
        assert a.shape == t.shape
        if name.startswith("grad_") and name != "grad_x":
            # (C,) per-channel sums: one "sample" per channel would let the 2x rule compare single
            # numbers; compare the whole vector as one sample
            a, t, r, scale = a.unsqueeze(0), t.unsqueeze(0), r.unsqueeze(0), scales[name].unsqueeze(0)
        else:
            scale = None
        assert_close_2x(a, t, r, name=f"{name} [{backend}, {dtype}, {shape}, inv={inverse}]", term_scale=scale)


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)], ids=str)
@pytest.mark.parametrize("shape", SHAPES[:3], ids=str)
def test_inverse_of_forward_is_identity(backend, device, dtype, tol, shape):
    if backend != "torch" and dtype == torch.float64:
        pytest.skip("float64 runs the reference")
    x, bias, log_scale = (t.detach() for t in _inputs(shape, dtype, device))
    with use_backend(backend):
        y, logdet = actnorm(x, bias, log_scale)
        x_back, logdet_back = actnorm(y, bias, log_scale, inverse=True)
    torch.testing.assert_close(x_back, x, rtol=tol, atol=tol)
    torch.testing.assert_close(logdet + logdet_back, torch.zeros_like(logdet), rtol=0, atol=tol * 10)


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
@pytest.mark.parametrize("shape", [(1, 3), (1, 2, 2, 3)], ids=str)
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_logdet_is_log_abs_det_jacobian(backend, device, shape, inverse):
    dtype = torch.float64 if backend == "torch" else torch.float32
    x, bias, log_scale = (t.detach() for t in _inputs(shape, dtype, device))
    with use_backend(backend):
        _, logdet = actnorm(x, bias, log_scale, inverse=inverse)
        jac = torch.autograd.functional.jacobian(lambda v: actnorm(v, bias, log_scale, inverse=inverse)[0], x)
    _, logabs = torch.linalg.slogdet(jac.reshape(x.numel(), x.numel()).double())
    torch.testing.assert_close(logdet.double(), logabs.reshape(1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
def test_nan_propagates(backend, device):
    x, bias, log_scale = (t.detach() for t in _inputs((2, 3, 4), torch.float32, device))
    x[0, 0, 1] = float("nan")
    bias[1] = float("nan")
    x, bias, log_scale = (t.requires_grad_(True) for t in (x, bias, log_scale))
    with use_backend(backend):
        y, logdet = actnorm(x, bias, log_scale)
        grad_x, grad_b, grad_ls = torch.autograd.grad((y.sum(), logdet.sum()), [x, bias, log_scale])
    expected = torch.zeros(2, 3, 4, dtype=torch.bool)
    expected[0, 0, 1] = True
    expected[:, 1] = True
    assert torch.equal(torch.isnan(y).cpu(), expected)
    assert not torch.isnan(logdet).any() and not torch.isnan(grad_x).any()
    assert torch.isnan(grad_ls).cpu().tolist() == [True, True, False]   # sum g y over a NaN y
    assert not torch.isnan(grad_b).any()


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 3, 0), (2, 0)], ids=str)
def test_zero_size(backend, device, shape):
    x, bias, log_scale = _inputs(shape, torch.float32, device)
    with use_backend(backend):
        y, logdet = actnorm(x, bias, log_scale)
        assert y.shape == x.shape and logdet.shape == (shape[0],)
        grads = torch.autograd.grad(y.sum() + logdet.sum(), [x, bias, log_scale])
    assert torch.equal(grads[1], torch.zeros_like(bias))


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_deterministic_and_non_contiguous(backend, device):
    x = torch.randn(4, 3, 3000, device=device).transpose(0, 1).contiguous().transpose(0, 1).requires_grad_(True)
    assert not x.is_contiguous()
    bias, log_scale = torch.randn(3, device=device, requires_grad=True), torch.randn(3, device=device, requires_grad=True)
    g = torch.randn(4, 3, 3000, device=device)
    with use_backend(backend):
        first = torch.autograd.grad(actnorm(x, bias, log_scale)[0], [x, bias, log_scale], g)
        second = torch.autograd.grad(actnorm(x.contiguous(), bias, log_scale)[0], [x, bias, log_scale], g)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
def test_routes_agree_bit_for_bit(backend, device):
    x, bias, log_scale = _inputs((2, 3, 9), torch.float32, device)
    gy, gld = torch.randn(2, 3, 9, device=device), torch.randn(2, device=device)
    with use_backend(backend):
        with torch.no_grad():
            y_nograd, _ = actnorm(x, bias, log_scale)
        y_eager, ld_eager = actnorm(x, bias, log_scale)
        grads_eager = torch.autograd.grad((y_eager, ld_eager), [x, bias, log_scale], (gy, gld))
        y_op, ld_op = torch.ops.genkernels.actnorm.default(x, bias, log_scale, False)
        grads_op = torch.autograd.grad((y_op, ld_op), [x, bias, log_scale], (gy, gld))
    assert torch.equal(y_nograd, y_eager) and torch.equal(y_eager, y_op) and torch.equal(ld_eager, ld_op)
    assert all(torch.equal(a, b) for a, b in zip(grads_eager, grads_op))


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
def test_opcheck(backend, device):
    x, bias, log_scale = _inputs((3, 4, 5), torch.float32, device)
    gy, gld = torch.randn(3, 4, 5, device=device), torch.randn(3, device=device)
    with use_backend(backend):
        torch.library.opcheck(actnorm_op.registered, (x, bias, log_scale, False))
        torch.library.opcheck(actnorm_op.registered, (x, bias, log_scale, True))
        torch.library.opcheck(actnorm_backward_op.registered,
                              (gy, gld, x.detach(), bias.detach(), log_scale.detach(), True))


def test_torch_compile_fullgraph():
    x, bias, log_scale = _inputs((2, 4, 5), torch.float32, "cpu")

    def step(a, b, s):
        y, logdet = actnorm(a, b, s)
        return (y * y).sum() - logdet.sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    eager_loss = step(x, bias, log_scale)
    eager_grads = torch.autograd.grad(eager_loss, [x, bias, log_scale])
    loss = compiled(x, bias, log_scale)
    grads = torch.autograd.grad(loss, [x, bias, log_scale])
    torch.testing.assert_close(loss, eager_loss)
    for g, e in zip(grads, eager_grads):
        torch.testing.assert_close(g, e)


def test_errors_name_the_argument():
    x, p = torch.zeros(2, 3, 4), torch.zeros(3)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        actnorm([0.0], p, p)
    with pytest.raises(ValueError, match=r"x must be \(N, C, \*rest\)"):
        actnorm(torch.zeros(3), p, p)
    with pytest.raises(ValueError, match=r"bias must have shape \(C,\) = \(3,\)"):
        actnorm(x, torch.zeros(4), p)
    with pytest.raises(ValueError, match=r"log_scale must have shape \(C,\) = \(3,\)"):
        actnorm(x, p, torch.zeros(1, 3))
    with pytest.raises(TypeError, match="log_scale must have x's dtype"):
        actnorm(x, p, p.double())
    with pytest.raises(TypeError, match="bias must be a torch.Tensor"):
        actnorm(x, None, p)
    with pytest.raises(TypeError, match="inverse must be a bool"):
        actnorm(x, p, p, inverse="yes")
