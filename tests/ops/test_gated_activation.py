"""gated_activation: every compiled backend against the float64 reference under the 2x rule,
forward and both gradients (x and cond), plus odd/zero/non-contiguous shapes, NaN and infinities,
the routes, opcheck, compile and errors."""
import pytest
import torch

from genkernels import _ext, use_backend
from genkernels.ops import gated_activation
from genkernels.ops.gated_activation import (
    gated_activation_backward_op,
    gated_activation_backward_ref,
    gated_activation_op,
    gated_activation_ref,
)
from genkernels.testing import assert_close_2x
from tests.helpers import DTYPES

BACKENDS = [pytest.param("cpu", "cpu", marks=pytest.mark.skipif(_ext._C is None, reason="genkernels._C not built"))]
if torch.cuda.is_available() and _ext._cuda is not None:
    BACKENDS.append(pytest.param("cuda", "cuda"))

# (x shape, dim): odd sizes, batch 1, gated dim first / middle / last, a row over one chunk (4096)
SHAPES = [((3, 6, 5), 1), ((2, 5, 6), -1), ((1, 10, 7, 3), 1), ((2, 3, 8, 5), 2), ((2, 4), 1), ((2, 2, 4099), 1)]


def _inputs(shape, dim, dtype, device, cond=True):
    x = (2 * torch.randn(shape)).to(device, dtype).requires_grad_(True)
    c = None
    if cond:
        c = torch.randn(shape[0], shape[dim]).to(device, dtype).requires_grad_(True)
    return x, c


def _forward_backward(fn, x, c, grad):
    y = fn(x, c)
    wrt = [x] if c is None else [x, c]
    return (y, *torch.autograd.grad(y, wrt, grad.to(y.dtype)))


def _cond_term_scale(x64, c64, dim, grad):
    """|terms| of the cond gradient sums: where a sum over positions cancels, a correct float32
    sum is off by ulps of its terms, not of the (small) result."""
    x = x64.detach().requires_grad_(True)
    y = gated_activation_ref(x, c64.detach(), dim)
    (gx,) = torch.autograd.grad(y, [x], grad.double())
    others = [d for d in range(x.dim()) if d not in (0, dim % x.dim())]
    return gx.abs().sum(dim=others) if others else gx.abs()


@pytest.mark.parametrize("backend, device", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, dim", SHAPES, ids=str)
@pytest.mark.parametrize("cond", [True, False], ids=["cond", "nocond"])
def test_matches_reference(backend, device, dtype, shape, dim, cond):
    x, c = _inputs(shape, dim, dtype, device, cond)
    out_shape = list(shape)
    out_shape[dim] //= 2
    grad = torch.randn(out_shape, device=device)
    with use_backend(backend):
        fast = _forward_backward(lambda a, b: gated_activation(a, b, dim), x, c, grad)
    x64 = x.detach().double().requires_grad_(True)
    c64 = None if c is None else c.detach().double().requires_grad_(True)
    truth = _forward_backward(lambda a, b: gated_activation_ref(a, b, dim), x64, c64, grad.double())
    lowp = _forward_backward(lambda a, b: gated_activation_ref(a, b, dim), x, c, grad)
    assert fast[0].dtype == dtype and tuple(fast[0].shape) == tuple(out_shape)
    names = ["y", "grad_x", "grad_cond"]
    scales = [None, None, None if c is None else _cond_term_scale(x64, c64, dim, grad)]
    for name, scale, a, t, r in zip(names, scales, fast, truth, lowp):
        assert a.dtype == dtype and a.shape == t.shape
        assert_close_2x(a, t, r, name=f"{name} [{backend}, {dtype}, {shape}, dim={dim}]", term_scale=scale)


@pytest.mark.parametrize("backend, device", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_torch_backend_agrees(backend, device, dtype):
    """The torch backend (reference forward, closed-form float32 backward) and the kernels agree:
    both within the 2x rule of float64, and within a few ulps of each other."""
    x, c = _inputs((3, 8, 7), 1, dtype, device)
    grad = torch.randn(3, 4, 7, device=device)
    results = {}
    for name in (backend, "torch"):
        with use_backend(name):
            results[name] = _forward_backward(lambda a, b: gated_activation(a, b, 1), x, c, grad)
    x64, c64 = (t.detach().double().requires_grad_(True) for t in (x, c))
    truth = _forward_backward(lambda a, b: gated_activation_ref(a, b, 1), x64, c64, grad.double())
    lowp = _forward_backward(lambda a, b: gated_activation_ref(a, b, 1), x, c, grad)
    scales = [None, None, _cond_term_scale(x64, c64, 1, grad)]
    for i, name in enumerate(["y", "grad_x", "grad_cond"]):
        for provider, out in results.items():
            assert_close_2x(out[i], truth[i], lowp[i], name=f"{name} [{provider}, {dtype}]", term_scale=scales[i])
    tol = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}[dtype]
    for a, b in zip(results[backend], results["torch"]):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
@pytest.mark.parametrize("shape, dim", [((0, 4, 3), 1), ((2, 4, 0), 1), ((2, 0), 1), ((3, 0, 2), -1)], ids=str)
def test_zero_size(backend, device, shape, dim):
    x, c = _inputs(shape, dim, torch.float32, device)
    with use_backend(backend):
        y = gated_activation(x, c, dim)
        expected = list(shape)
        expected[dim] //= 2
        assert tuple(y.shape) == tuple(expected)
        grad_x, grad_c = torch.autograd.grad(y.sum(), [x, c])
    assert grad_x.shape == x.shape and torch.equal(grad_c, torch.zeros_like(c))


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nan_and_infinities(backend, device, dtype):
    """NaN in a, b or cond reaches y and both gradients; +-inf and huge values give the limits."""
    x = torch.zeros(2, 6, 3, dtype=dtype, device=device)
    x[0, 0, 0] = float("nan")          # a of channel 0, position 0
    x[0, 4, 1] = float("nan")          # b of channel 1, position 1
    x[1, 0] = torch.tensor([float("inf"), -float("inf"), 60.0])     # a of channel 0
    x[1, 3] = torch.tensor([float("inf"), -float("inf"), -60.0])    # b of channel 0
    x[1, 1] = torch.tensor([-60.0, 0.5, 1e-4])
    x[1, 4] = torch.tensor([60.0, -0.5, 30.0])
    cond = torch.zeros(2, 6, dtype=dtype, device=device)
    cond[0, 2] = float("nan")           # ca of channel 2: the whole row
    x.requires_grad_(True)
    cond.requires_grad_(True)
    with use_backend(backend):
        y = gated_activation(x, cond)
        grad_x, grad_c = torch.autograd.grad(y, [x, cond], torch.ones_like(y))
    nan_y = torch.zeros(2, 3, 3, dtype=torch.bool)
    nan_y[0, 0, 0] = nan_y[0, 1, 1] = True
    nan_y[0, 2, :] = True
    assert torch.equal(torch.isnan(y).cpu(), nan_y)
    for grad in (grad_x[:, :3], grad_x[:, 3:]):
        assert torch.equal(torch.isnan(grad).cpu(), nan_y)
    assert torch.isnan(grad_c[0]).all() and not torch.isnan(grad_c[1]).any()
    # limits: tanh(+-inf) = +-1, sigmoid(+inf) = 1, sigmoid(-inf) = 0; all gradients finite
    y1 = y[1].float().cpu()
    assert y1[0, 0] == 1.0 and y1[0, 1] == 0.0
    # float64 truth from the closed form (autograd's 1 - t^2 is 0 in float64 too at |a| = 60)
    x64, c64 = x.detach()[1:].double(), cond.detach()[1:].double()
    y64 = gated_activation_ref(x64, c64)
    g64, _ = gated_activation_backward_ref(torch.ones_like(y64), x64, c64, 1, False)
    finite = torch.isfinite(x64)
    g = grad_x[1:].cpu()
    assert torch.isfinite(g).all()
    # within two ulps of the float64 values rounded to the storage dtype
    tol = {torch.float32: 2.5e-7, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    torch.testing.assert_close(g[finite], g64[finite].to(dtype), rtol=tol, atol=0)
    torch.testing.assert_close(y[1].cpu(), y64[0].to(dtype), rtol=tol, atol=0)


def test_tails_are_relatively_accurate():
    """The float32 gradients keep relative accuracy where torch's 1 - t^2 and s (1 - s) round to 0."""
    x = torch.tensor([[9.0, 0.0, -12.0, 1e-5], [0.0, 20.0, 25.0, -1e-6]]).view(1, 8, 1)
    grad_x = torch.autograd.grad(gated_activation(x.requires_grad_()).sum(), x)[0]
    x64 = x.detach().double()
    truth, _ = gated_activation_backward_ref(torch.ones(1, 4, 1, dtype=torch.float64), x64, None, 1, False)
    nonzero = truth != 0
    rel = ((grad_x.double() - truth).abs()[nonzero] / truth.abs()[nonzero]).max()
    assert rel < 1e-5, rel


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_non_contiguous_and_deterministic(backend, device):
    base = torch.randn(3, 5, 8, device=device)
    x = base.transpose(1, 2)[::2]  # (2, 8, 5) strided
    cond = torch.randn(2, 8, device=device)
    assert not x.is_contiguous()
    with use_backend(backend):
        y = gated_activation(x, cond)
        assert torch.equal(y, gated_activation(x.contiguous(), cond))
        # cond gradient over two chunks of one row: the same bits on every call
        big = torch.randn(2, 4, 4099, device=device, requires_grad=True)
        c = torch.randn(2, 4, device=device, requires_grad=True)
        g = torch.randn(2, 2, 4099, device=device)
        first = torch.autograd.grad(gated_activation(big, c), [big, c], g)
        second = torch.autograd.grad(gated_activation(big, c), [big, c], g)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
def test_routes_agree_bit_for_bit(backend, device):
    """No-grad call (kernel directly), grad call (eager autograd.Function) and the registered op
    through the dispatcher give the same bits, values and gradients."""
    x, c = _inputs((2, 6, 9), 1, torch.float32, device)
    grad = torch.randn(2, 3, 9, device=device)
    with use_backend(backend):
        with torch.no_grad():
            y_nograd = gated_activation(x, c)
        y_eager = gated_activation(x, c)
        grads_eager = torch.autograd.grad(y_eager, [x, c], grad)
        y_op = torch.ops.genkernels.gated_activation.default(x, c, 1)
        grads_op = torch.autograd.grad(y_op, [x, c], grad)
    assert torch.equal(y_nograd, y_eager) and torch.equal(y_eager, y_op)
    assert all(torch.equal(a, b) for a, b in zip(grads_eager, grads_op))


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
def test_opcheck(backend, device):
    x, c = _inputs((3, 8, 5), 1, torch.float32, device)
    grad = torch.randn(3, 4, 5, device=device)
    with use_backend(backend):
        torch.library.opcheck(gated_activation_op.registered, (x, c, 1))
        torch.library.opcheck(gated_activation_op.registered, (x, None, 2 - 1))
        torch.library.opcheck(gated_activation_backward_op.registered, (grad, x.detach(), c.detach(), 1, True))
        torch.library.opcheck(gated_activation_backward_op.registered, (grad, x.detach(), None, 1, False))


def test_torch_compile_fullgraph():
    x, c = _inputs((2, 6, 5), 1, torch.float32, "cpu")

    def step(a, b):
        y = gated_activation(a, b)
        return (y * y).sum()

    # aot_eager: dynamo, the fake kernels and AOT autograd through the registered backward,
    # without inductor's C++ code generation
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    eager_loss = step(x, c)
    eager_grads = torch.autograd.grad(eager_loss, [x, c])
    loss = compiled(x, c)
    grads = torch.autograd.grad(loss, [x, c])
    torch.testing.assert_close(loss, eager_loss)
    for g, e in zip(grads, eager_grads):
        torch.testing.assert_close(g, e)


def test_float64_uses_the_reference():
    x, c = _inputs((2, 4, 3), 1, torch.float64, "cpu")
    y = gated_activation(x, c)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, gated_activation_ref(x, c))
    with use_backend("cpu"), pytest.raises(ValueError, match="float64"):
        gated_activation(x, c)


def test_errors_name_the_argument():
    x = torch.zeros(2, 6, 3)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        gated_activation(torch.zeros(2, 6, dtype=torch.int64))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        gated_activation([0.0, 1.0])
    with pytest.raises(ValueError, match=r"dim 3 is out of range for x with 3 dimensions"):
        gated_activation(x, dim=3)
    with pytest.raises(TypeError, match="dim must be an int"):
        gated_activation(x, dim=1.0)
    with pytest.raises(ValueError, match=r"x has shape \(2, 6, 3\) \(size 3 along dim 2\)"):
        gated_activation(x, dim=-1)
    with pytest.raises(ValueError, match=r"cond must have shape \(N, 2C\) = \(2, 6\)"):
        gated_activation(x, torch.zeros(2, 3))
    with pytest.raises(TypeError, match="cond must have x's dtype"):
        gated_activation(x, torch.zeros(2, 6, dtype=torch.float16))
    with pytest.raises(TypeError, match="cond must be a torch.Tensor"):
        gated_activation(x, [0.0] * 6)
    with pytest.raises(ValueError, match="must not be 0"):
        gated_activation(torch.zeros(4, 3), torch.zeros(4, 4), dim=0)


def test_bench_suite_runs_and_checks():
    """The `genkernels bench --suite conv` table on a tiny case: every provider checked against
    the reference, timed, and its speedup over eager recorded."""
    from genkernels.bench import conv

    rows = conv.run_suite("cpu", with_compile=False, cases=(("tiny fwd_bwd", (2, 4, 8), True, True),
                                                            ("tiny", (2, 4, 8), False, False)))
    assert {r["provider"] for r in rows} >= {"eager"} and len(rows) == 2 * len(conv.providers("cpu")) - 2
    assert all(r["ms"] > 0 and r["speedup_vs_eager"] > 0 for r in rows)


@pytest.mark.parametrize("backend, device", BACKENDS)
@pytest.mark.parametrize("shape", [(6,), (4, 3), (4, 20)], ids=str)
def test_gate_along_dim_0(backend, device, shape):
    """No batch dimension: the gate splits dim 0 (no cond allowed there)."""
    x, _ = _inputs(shape, 0, torch.float32, device, cond=False)
    grad = torch.randn(shape[0] // 2, *shape[1:], device=device)
    with use_backend(backend):
        fast = _forward_backward(lambda a, b: gated_activation(a, b, 0), x, None, grad)
    x64 = x.detach().double().requires_grad_(True)
    truth = _forward_backward(lambda a, b: gated_activation_ref(a, b, 0), x64, None, grad.double())
    lowp = _forward_backward(lambda a, b: gated_activation_ref(a, b, 0), x, None, grad)
    for name, a, t, r in zip(("y", "grad_x"), fast, truth, lowp):
        # one "sample" (the 2x rule is per leading index, which is the gated dim here)
        assert_close_2x(a.unsqueeze(0), t.unsqueeze(0), r.unsqueeze(0), name=f"{name} {shape}")
