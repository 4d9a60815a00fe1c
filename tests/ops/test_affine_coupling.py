"""affine_coupling: every compiled backend against the float64 reference under the 2x rule, forward
and inverse, y / logdet and every gradient, both masks and parities, both log-scale forms and
additive coupling, odd sizes; round trips, logdet = log|det J| of the autograd Jacobian, NaN,
zero sizes, the routes, opcheck, compile and errors."""
import pytest
import torch

from genkernels import _ext, use_backend
from genkernels.ops import affine_coupling
from genkernels.ops.affine_coupling import (
    affine_coupling_backward_op,
    affine_coupling_op,
    affine_coupling_ref,
    checkerboard_mask,
)
from genkernels.testing import assert_close_2x
from tests.helpers import DTYPES

BACKENDS = [pytest.param("cpu", "cpu", marks=pytest.mark.skipif(_ext._C is None, reason="genkernels._C not built"))]
if torch.cuda.is_available() and _ext._cuda is not None:
    BACKENDS.append(pytest.param("cuda", "cuda"))

# (x shape, mask, parity): odd sizes, vectors, batch 1, a sample over one chunk (4096 elements)
CASES = [((3, 6, 5), "channel", 0), ((3, 6, 5), "channel", 1), ((2, 4), "channel", 0), ((1, 2, 3, 5), "channel", 1),
         ((2, 2, 4099), "channel", 0), ((3, 2, 5, 7), "checkerboard", 0), ((2, 3, 4, 4), "checkerboard", 1),
         ((1, 1, 67, 65), "checkerboard", 1)]
FORMS = ["tanh", "sigmoid", "additive"]


def _param_shape(shape, mask):
    return (shape[0], shape[1] // 2, *shape[2:]) if mask == "channel" else shape


def _inputs(shape, mask, form, dtype, device):
    pshape = _param_shape(shape, mask)
    x = (2 * torch.randn(shape)).to(device, dtype).requires_grad_(True)
    shift = torch.randn(pshape).to(device, dtype).requires_grad_(True)
    raw = None if form == "additive" else (2 * torch.randn(pshape)).to(device, dtype).requires_grad_(True)
    return x, shift, raw


def _call(fn, x, shift, raw, mask, parity, form, inverse, grad_y, grad_logdet):
    """(y, logdet, grad_x, grad_shift[, grad_log_scale]) of fn, one backward through y and logdet."""
    kwargs = dict(mask=mask, parity=parity, form="tanh" if form == "additive" else form, inverse=inverse)
    if fn is affine_coupling:
        y, logdet = fn(x, shift, raw, **kwargs)
    else:
        y, logdet = fn(x, shift, raw, kwargs["mask"], parity, 2.0, kwargs["form"], inverse)
    wrt = [x, shift] + ([] if raw is None else [raw])
    # the reference's additive logdet is a constant (no graph): pass only what has one
    pairs = [(o, g.to(o.dtype)) for o, g in ((y, grad_y), (logdet, grad_logdet)) if o.requires_grad]
    grads = torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs])
    return (y, logdet, *grads)


def _leaf64(t):
    return None if t is None else t.detach().double().requires_grad_(True)


def _logdet_term_scale(raw64, mask, parity, form, shape):
    """sum |s| per sample: where the log-determinant cancels, a correct float32 sum is off by ulps of
    its terms."""
    if raw64 is None:
        return None
    s = torch.tanh(raw64.detach() / 2) * 2 if form == "tanh" else torch.nn.functional.logsigmoid(raw64.detach() + 2)
    if mask == "checkerboard":
        s = torch.where(checkerboard_mask(s, parity), s, 0.0)
    return s.abs().reshape(shape[0], -1).sum(1)


@pytest.mark.parametrize("backend, device", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, mask, parity", CASES, ids=str)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_matches_reference(backend, device, dtype, shape, mask, parity, form, inverse):
    x, shift, raw = _inputs(shape, mask, form, dtype, device)
    grad_y = torch.randn(shape, device=device)
    grad_logdet = torch.randn(shape[0], device=device)
    args = (mask, parity, form, inverse, grad_y, grad_logdet)
    with use_backend(backend):
        fast = _call(affine_coupling, x, shift, raw, *args)
    truth = _call(affine_coupling_ref, _leaf64(x), _leaf64(shift), _leaf64(raw), mask, parity, form, inverse,
                  grad_y.double(), grad_logdet.double())
    lowp = _call(affine_coupling_ref, x, shift, raw, *args)
    names = ["y", "logdet", "grad_x", "grad_shift", "grad_log_scale"]
    logdet_dtype = torch.float32 if dtype != torch.float32 else dtype
    assert fast[0].shape == x.shape and fast[0].dtype == dtype
    assert fast[1].shape == (shape[0],) and fast[1].dtype == logdet_dtype
    scales = {"logdet": _logdet_term_scale(_leaf64(raw), mask, parity, "tanh" if form == "additive" else form,
                                           shape)}
    for name, a, t, r in zip(names, fast, truth, lowp):
        assert a.shape == t.shape
        assert_close_2x(a, t, r, name=f"{name} [{backend}, {dtype}, {shape}, {mask}/{parity}, {form}, inv={inverse}]",
                        term_scale=scales.get(name))


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)], ids=str)
@pytest.mark.parametrize("shape, mask, parity", CASES[:2] + CASES[5:7], ids=str)
@pytest.mark.parametrize("form", FORMS)
def test_inverse_of_forward_is_identity(backend, device, dtype, tol, shape, mask, parity, form):
    if backend != "torch" and dtype == torch.float64:
        pytest.skip("float64 runs the reference")
    x, shift, raw = (None if t is None else t.detach() for t in _inputs(shape, mask, form, dtype, device))
    kwargs = dict(mask=mask, parity=parity, form="tanh" if form == "additive" else form)
    with use_backend(backend):
        y, logdet = affine_coupling(x, shift, raw, **kwargs)
        x_back, logdet_back = affine_coupling(y, shift, raw, inverse=True, **kwargs)
    torch.testing.assert_close(x_back, x, rtol=tol, atol=tol)
    torch.testing.assert_close(logdet + logdet_back, torch.zeros_like(logdet), rtol=0, atol=tol * 10)


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
@pytest.mark.parametrize("shape, mask, parity", [((1, 4), "channel", 0), ((1, 2, 2, 3), "channel", 1),
                                                  ((1, 2, 3, 3), "checkerboard", 0),
                                                  ((1, 1, 4, 3), "checkerboard", 1)], ids=str)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_logdet_is_log_abs_det_jacobian(backend, device, shape, mask, parity, form, inverse):
    """log|det dy/dx| of the autograd Jacobian (through the op's own backward) equals logdet."""
    dtype = torch.float64 if backend == "torch" else torch.float32
    x, shift, raw = (None if t is None else t.detach() for t in _inputs(shape, mask, form, dtype, device))
    kwargs = dict(mask=mask, parity=parity, form="tanh" if form == "additive" else form, inverse=inverse)
    with use_backend(backend):
        _, logdet = affine_coupling(x, shift, raw, **kwargs)
        jac = torch.autograd.functional.jacobian(lambda v: affine_coupling(v, shift, raw, **kwargs)[0], x)
    sign, logabs = torch.linalg.slogdet(jac.reshape(x.numel(), x.numel()).double())
    assert sign != 0
    torch.testing.assert_close(logdet.double(), logabs.reshape(1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
@pytest.mark.parametrize("mask", ["channel", "checkerboard"])
def test_nan_propagates(backend, device, mask):
    """NaN in x, shift or log_scale reaches the outputs it feeds (never zeroed); in the checkerboard
    mask the parameters at identity positions are ignored and get exactly zero gradient."""
    shape = (3, 2, 2, 2)
    x, shift, raw = (t.detach() for t in _inputs(shape, mask, "tanh", torch.float32, device))
    if mask == "channel":
        x[0, 1, 0, 0] = float("nan")      # transformed element (parity 0: channels [1:])
        raw[1, 0, 1, 1] = float("nan")
        shift[2, 0, 0, 1] = float("nan")
        nan_y = [(0, 1, 0, 0), (1, 1, 1, 1), (2, 1, 0, 1)]
    else:
        x[0, 0, 0, 1] = float("nan")      # (h + w) odd: transformed for parity 0
        raw[1, 1, 1, 0] = float("nan")
        shift[2, 0, 1, 0] = float("nan")
        nan_y = [(0, 0, 0, 1), (1, 1, 1, 0), (2, 0, 1, 0)]
        raw[2, 0, 0, 0] = shift[2, 1, 1, 1] = float("inf")  # identity positions: ignored
    x, shift, raw = (t.requires_grad_(True) for t in (x, shift, raw))
    with use_backend(backend):
        y, logdet = affine_coupling(x, shift, raw, mask=mask)
        grads = torch.autograd.grad((y, logdet), [x, shift, raw], (torch.ones_like(y), torch.ones_like(logdet)))
    expected = torch.zeros(shape, dtype=torch.bool)
    for i in nan_y:
        expected[i] = True
    assert torch.equal(torch.isnan(y).cpu(), expected)
    assert torch.isnan(logdet).cpu().tolist() == [False, True, False]
    assert torch.isnan(grads[2][1]).any()  # the NaN log-scale's own gradient
    if mask == "checkerboard":
        identity = ~torch.tensor([[False, True], [True, False]])
        for g in grads[1:]:
            assert torch.equal(g[..., identity].cpu(), torch.zeros_like(g[..., identity].cpu()))


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
@pytest.mark.parametrize("shape, mask", [((0, 4, 3), "channel"), ((2, 4, 0), "channel"), ((2, 0), "channel"),
                                         ((0, 2, 3, 3), "checkerboard"), ((2, 1, 0, 3), "checkerboard")], ids=str)
def test_zero_size(backend, device, shape, mask):
    x, shift, raw = _inputs(shape, mask, "tanh", torch.float32, device)
    with use_backend(backend):
        y, logdet = affine_coupling(x, shift, raw, mask=mask)
        assert y.shape == x.shape and logdet.shape == (shape[0],)
        assert torch.equal(logdet, torch.zeros_like(logdet))
        grads = torch.autograd.grad((y.sum() + logdet.sum()), [x, shift, raw], allow_unused=True)
    assert all(g is None or g.shape == t.shape for g, t in zip(grads, (x, shift, raw)))


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_non_contiguous_and_deterministic(backend, device):
    base = torch.randn(3, 5, 8, device=device)
    x = base.transpose(1, 2)[::2]  # (2, 8, 5) strided
    shift, raw = torch.randn(2, 4, 5, device=device), torch.randn(2, 4, 5, device=device)
    with use_backend(backend):
        y, logdet = affine_coupling(x, shift, raw)
        y2, logdet2 = affine_coupling(x.contiguous(), shift, raw)
        assert torch.equal(y, y2) and torch.equal(logdet, logdet2)
        # logdet over several chunks of one sample: the same bits on every call
        big = torch.randn(2, 4, 4099, device=device)
        s, r = torch.randn(2, 2, 4099, device=device), torch.randn(2, 2, 4099, device=device)
        assert torch.equal(affine_coupling(big, s, r)[1], affine_coupling(big, s, r)[1])


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
def test_routes_agree_bit_for_bit(backend, device):
    """No-grad call, grad call (eager autograd.Function) and the registered op through the
    dispatcher give the same bits, values and gradients."""
    x, shift, raw = _inputs((2, 6, 9), "channel", "sigmoid", torch.float32, device)
    gy, gld = torch.randn(2, 6, 9, device=device), torch.randn(2, device=device)
    with use_backend(backend):
        with torch.no_grad():
            y_nograd, ld_nograd = affine_coupling(x, shift, raw, form="sigmoid")
        y_eager, ld_eager = affine_coupling(x, shift, raw, form="sigmoid")
        grads_eager = torch.autograd.grad((y_eager, ld_eager), [x, shift, raw], (gy, gld))
        y_op, ld_op = torch.ops.genkernels.affine_coupling.default(x, shift, raw, "channel", 0, 2.0, "sigmoid", False)
        grads_op = torch.autograd.grad((y_op, ld_op), [x, shift, raw], (gy, gld))
    assert torch.equal(y_nograd, y_eager) and torch.equal(y_eager, y_op)
    assert torch.equal(ld_nograd, ld_eager) and torch.equal(ld_eager, ld_op)
    assert all(torch.equal(a, b) for a, b in zip(grads_eager, grads_op))


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
def test_opcheck(backend, device):
    x, shift, raw = _inputs((3, 4, 5), "channel", "tanh", torch.float32, device)
    xc, shiftc, rawc = _inputs((2, 3, 4, 5), "checkerboard", "tanh", torch.float32, device)
    gy, gld = torch.randn(3, 4, 5, device=device), torch.randn(3, device=device)
    with use_backend(backend):
        torch.library.opcheck(affine_coupling_op.registered, (x, shift, raw, "channel", 1, 2.0, "tanh", False))
        torch.library.opcheck(affine_coupling_op.registered, (x, shift, None, "channel", 0, 2.0, "tanh", True))
        torch.library.opcheck(affine_coupling_op.registered,
                              (xc, shiftc, rawc, "checkerboard", 0, 1.5, "sigmoid", True))
        torch.library.opcheck(affine_coupling_backward_op.registered,
                              (gy, gld, x.detach(), shift.detach(), raw.detach(), "channel", 0, 2.0, "sigmoid", True))
        torch.library.opcheck(affine_coupling_backward_op.registered,
                              (gy, gld, x.detach(), shift.detach(), None, "channel", 1, 2.0, "tanh", False))


def test_torch_compile_fullgraph():
    x, shift, raw = _inputs((2, 6, 5), "channel", "tanh", torch.float32, "cpu")

    def step(a, t, r):
        y, logdet = affine_coupling(a, t, r)
        return (y * y).sum() - logdet.sum()

    # aot_eager: dynamo, the fake kernels and AOT autograd through the registered backward
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    eager_loss = step(x, shift, raw)
    eager_grads = torch.autograd.grad(eager_loss, [x, shift, raw])
    loss = compiled(x, shift, raw)
    grads = torch.autograd.grad(loss, [x, shift, raw])
    torch.testing.assert_close(loss, eager_loss)
    for g, e in zip(grads, eager_grads):
        torch.testing.assert_close(g, e)


def test_float64_uses_the_reference():
    x, shift, raw = _inputs((2, 4, 3), "channel", "tanh", torch.float64, "cpu")
    y, logdet = affine_coupling(x, shift, raw)
    assert y.dtype == logdet.dtype == torch.float64
    torch.testing.assert_close((y, logdet), affine_coupling_ref(x, shift, raw))
    with use_backend("cpu"), pytest.raises(ValueError, match="float64"):
        affine_coupling(x, shift, raw)


def test_errors_name_the_argument():
    x, t = torch.zeros(2, 6, 3), torch.zeros(2, 3, 3)
    with pytest.raises(ValueError, match=r"must be even; x has shape \(2, 5, 3\)"):
        affine_coupling(torch.zeros(2, 5, 3), t)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        affine_coupling([0.0], t)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        affine_coupling(torch.zeros(2, 6, dtype=torch.int64), t)
    with pytest.raises(ValueError, match=r"shift must have shape \(2, 3, 3\)"):
        affine_coupling(x, torch.zeros(2, 6, 3))
    with pytest.raises(ValueError, match=r"log_scale must have shape \(2, 3, 3\)"):
        affine_coupling(x, t, torch.zeros(2, 3))
    with pytest.raises(TypeError, match="log_scale must have x's dtype"):
        affine_coupling(x, t, t.half())
    with pytest.raises(TypeError, match="shift must be a torch.Tensor"):
        affine_coupling(x, None)
    with pytest.raises(ValueError, match="mask must be one of"):
        affine_coupling(x, t, mask="stripes")
    with pytest.raises(ValueError, match=r"mask 'checkerboard' needs x of shape \(N, C, H, W\)"):
        affine_coupling(x, x, mask="checkerboard")
    with pytest.raises(ValueError, match=r"shift must have shape \(2, 6, 3, 3\)"):
        affine_coupling(torch.zeros(2, 6, 3, 3), t, mask="checkerboard")
    with pytest.raises(ValueError, match="parity must be 0 or 1"):
        affine_coupling(x, t, parity=2)
    with pytest.raises(ValueError, match="scale must be a positive number"):
        affine_coupling(x, t, scale=0.0)
    with pytest.raises(ValueError, match="form must be one of"):
        affine_coupling(x, t, t, form="exp")
    with pytest.raises(TypeError, match="inverse must be a bool"):
        affine_coupling(x, t, inverse=1)


def test_bench_suite_runs_and_checks():
    """The `genkernels bench --suite flow` table on tiny cases: every provider checked against the
    reference, timed, and its speedup over eager recorded."""
    from genkernels.bench import flow

    cases = (("tiny coupling fwd_bwd", "affine_coupling", (2, 4, 8), "channel", True),
             ("tiny checkerboard", "affine_coupling", (2, 2, 4, 4), "checkerboard", False),
             ("tiny actnorm fwd_bwd", "actnorm", (2, 4, 8), None, True))
    rows = flow.run_suite("cpu", with_compile=False, cases=cases, threads=(1,))
    assert len(rows) == len(cases) * (len(flow.providers("cpu")) - 1)
    assert all(r["ms"] > 0 and r["speedup_vs_eager"] > 0 and r["threads"] == 1 for r in rows)
