"""adaln_modulate: every compiled backend against the float64 reference under the 2x rule, y and
every gradient (x, shift, scale), odd widths, row counts across the row blocks; NaN, zero sizes,
determinism, the routes, opcheck, compile and errors."""
import pytest
import torch

from genkernels import _ext, use_backend
from genkernels.ops import adaln_modulate
from genkernels.ops.adaln import adaln_modulate_backward_op, adaln_modulate_op, adaln_modulate_ref
from genkernels.testing import assert_close_2x
from tests.helpers import DTYPES, stable_seed

BACKENDS = [pytest.param("cpu", "cpu", marks=pytest.mark.skipif(_ext._C is None, reason="genkernels._C not built"))]
if torch.cuda.is_available() and _ext._cuda is not None:
    BACKENDS.append(pytest.param("cuda", "cuda"))

# one token, odd widths, a row block and a bit (32 + 1), several row blocks
SHAPES = [(2, 1, 7), (3, 5, 8), (2, 33, 6), (1, 70, 40)]
NAMES = ["y", "grad_x", "grad_shift", "grad_scale"]


def _inputs(shape, dtype, device):
    n, _, d = shape
    x = (1.5 * torch.randn(shape) + 0.5).to(device, dtype).requires_grad_(True)
    shift = (0.5 * torch.randn(n, d)).to(device, dtype).requires_grad_(True)
    scale = (0.5 * torch.randn(n, d)).to(device, dtype).requires_grad_(True)
    return x, shift, scale


def _call(fn, grad_y, x, shift, scale):
    y = fn(x, shift, scale, eps=1e-6) if fn is adaln_modulate else fn(x, shift, scale, 1e-6)
    return [y, *torch.autograd.grad(y, [x, shift, scale], grad_y.to(y.dtype))]


def _leaf64(t):
    return t.detach().double().requires_grad_(True)


def _term_scales(grad_y, x, shift, scale):
    x, shift, scale, g = (t.detach().double().cpu() for t in (x, shift, scale, grad_y))
    mean = x.mean(-1, keepdim=True)
    rstd = torch.rsqrt(((x - mean) ** 2).mean(-1, keepdim=True) + 1e-6)
    # xhat = (x - mean) rstd is itself a difference: its terms are |x| rstd and |mean| rstd, so a
    # kernel (or torch) is off by ulps of those where x is near the row mean
    xhat = (x.abs() + mean.abs()) * rstd
    m = (1 + scale)[:, None]
    gx = (g * m).abs()
    big_a, big_b = gx.mean(-1, keepdim=True), (gx * xhat).mean(-1, keepdim=True)
    return {"y": (xhat * m).abs() + shift.abs()[:, None], "grad_x": rstd * (gx + big_a + xhat * big_b),
            "grad_shift": g.abs().sum(1), "grad_scale": (g * xhat).abs().sum(1)}


@pytest.mark.parametrize("backend, device", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(backend, device, dtype, shape):
    torch.manual_seed(stable_seed((shape, str(dtype))))
    inputs = _inputs(shape, dtype, device)
    grad_y = torch.randn(shape, device=device)
    with use_backend(backend):
        fast = _call(adaln_modulate, grad_y, *inputs)
    truth = _call(adaln_modulate_ref, grad_y.double(), *(_leaf64(t) for t in inputs))
    lowp = _call(adaln_modulate_ref, grad_y, *inputs)
    scales = _term_scales(grad_y, *inputs)
    for name, a, t, r in zip(NAMES, fast, truth, lowp):
        assert a.shape == t.shape and a.dtype == dtype
        assert_close_2x(a, t, r, name=f"{name} [{backend}, {dtype}, {shape}]", term_scale=scales[name].to(a.device))


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
def test_nan_propagates(backend, device):
    x, shift, scale = (t.detach() for t in _inputs((2, 3, 5), torch.float32, device))
    x[0, 1, 2] = float("nan")
    scale[1, 4] = float("nan")
    leaves = [t.requires_grad_(True) for t in (x, shift, scale)]
    with use_backend(backend):
        y = adaln_modulate(*leaves)
        gx, gshift, gscale = torch.autograd.grad(y.sum(), leaves)
    expected = torch.zeros(2, 3, 5, dtype=torch.bool)
    expected[0, 1] = True
    expected[1, :, 4] = True
    assert torch.equal(torch.isnan(y).cpu(), expected)
    assert torch.isnan(gx[0, 1]).all() and torch.isnan(gx[1]).all() and not torch.isnan(gx[0, [0, 2]]).any()
    assert not torch.isnan(gshift).any()  # sums of grad_y only
    assert torch.isnan(gscale[0]).all() and not torch.isnan(gscale[1]).any()


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 0, 4)], ids=str)
def test_zero_size(backend, device, shape):
    inputs = _inputs(shape, torch.float32, device)
    with use_backend(backend):
        y = adaln_modulate(*inputs)
        assert y.shape == shape
        grads = torch.autograd.grad(y.sum(), list(inputs))
    assert torch.equal(grads[1], torch.zeros_like(inputs[1])) and torch.equal(grads[2], torch.zeros_like(inputs[2]))


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_deterministic_across_threads_and_layouts(backend, device):
    x = torch.randn(300, 4, 64, device=device).transpose(0, 1).contiguous().transpose(0, 1).requires_grad_(True)
    assert not x.is_contiguous()
    _, shift, scale = _inputs((300, 4, 64), torch.float32, device)
    g = torch.randn(300, 4, 64, device=device)
    threads = torch.get_num_threads()

    def run(inp):
        y = adaln_modulate(inp, shift, scale)
        return (y, *torch.autograd.grad(y, [x, shift, scale], g))

    with use_backend(backend):
        try:
            torch.set_num_threads(2)
            first = run(x)
            torch.set_num_threads(1)
            second = run(x.contiguous())
        finally:
            torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
def test_routes_agree_bit_for_bit(backend, device):
    x, shift, scale = _inputs((2, 5, 9), torch.float32, device)
    gy = torch.randn(2, 5, 9, device=device)
    with use_backend(backend):
        with torch.no_grad():
            y_nograd = adaln_modulate(x, shift, scale)
        y_eager = adaln_modulate(x, shift, scale)
        grads_eager = torch.autograd.grad(y_eager, [x, shift, scale], gy)
        y_op = torch.ops.genkernels.adaln_modulate.default(x, shift, scale, 1e-6)
        grads_op = torch.autograd.grad(y_op, [x, shift, scale], gy)
    assert torch.equal(y_nograd, y_eager) and torch.equal(y_eager, y_op)
    assert all(torch.equal(a, b) for a, b in zip(grads_eager, grads_op))


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
def test_opcheck(backend, device):
    x, shift, scale = _inputs((3, 4, 5), torch.float32, device)
    gy = torch.randn(3, 4, 5, device=device)
    with use_backend(backend):
        torch.library.opcheck(adaln_modulate_op.registered, (x, shift, scale, 1e-6))
        torch.library.opcheck(adaln_modulate_backward_op.registered,
                              (gy, x.detach(), shift.detach(), scale.detach(), 1e-6))


def test_torch_compile_fullgraph():
    x, shift, scale = _inputs((2, 4, 6), torch.float32, "cpu")

    def step(a, t, s):
        return (adaln_modulate(a, t, s) ** 2).sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    eager_loss = step(x, shift, scale)
    eager_grads = torch.autograd.grad(eager_loss, [x, shift, scale])
    loss = compiled(x, shift, scale)
    grads = torch.autograd.grad(loss, [x, shift, scale])
    torch.testing.assert_close(loss, eager_loss)
    for g, e in zip(grads, eager_grads):
        torch.testing.assert_close(g, e)


def test_errors_name_the_argument():
    x, p = torch.zeros(2, 3, 4), torch.zeros(2, 4)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        adaln_modulate([0.0], p, p)
    with pytest.raises(ValueError, match=r"x must be \(N, L, D\)"):
        adaln_modulate(torch.zeros(2, 4), p, p)
    with pytest.raises(ValueError, match=r"shift must have shape \(N, D\) = \(2, 4\)"):
        adaln_modulate(x, torch.zeros(2, 1, 4), p)
    with pytest.raises(ValueError, match=r"scale must have shape \(N, D\) = \(2, 4\)"):
        adaln_modulate(x, p, torch.zeros(4))
    with pytest.raises(TypeError, match="scale must have x's dtype"):
        adaln_modulate(x, p, p.double())
    with pytest.raises(TypeError, match="shift must be a torch.Tensor"):
        adaln_modulate(x, None, p)
    with pytest.raises(ValueError, match="eps must be a positive number"):
        adaln_modulate(x, p, p, eps=-1.0)


def test_float64_backward_is_the_exact_gradient():
    """float64 runs the reference with its closed-form backward: gradcheck against finite differences."""
    torch.manual_seed(3)
    inputs = [t.detach().double().requires_grad_(True) for t in _inputs((2, 3, 5), torch.float32, "cpu")]
    assert torch.autograd.gradcheck(lambda x, t, s: adaln_modulate(x, t, s), inputs)
