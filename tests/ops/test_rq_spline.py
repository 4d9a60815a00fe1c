"""rq_spline: the compiled kernels against the float64 reference under the 2x rule (forward, inverse,
both outputs and every gradient), identity tails, bin edges, round trips, monotonicity, the
log-determinant against autograd, the reference against an independent transcription of nflows,
NaN, zero sizes, routes, opcheck, compile and errors."""
import math

import pytest
import torch
import torch.nn.functional as F

from genkernels import _ext, use_backend
from genkernels.ops import rq_spline
from genkernels.ops.rq_spline import rq_spline_backward_op, rq_spline_backward_ref, rq_spline_op, rq_spline_ref
from genkernels.testing import assert_close_2x
from tests.helpers import DTYPES

BACKENDS = [pytest.param("cpu", "cpu", marks=pytest.mark.skipif(_ext._C is None, reason="genkernels._C not built"))]
if torch.cuda.is_available() and _ext._cuda is not None:
    BACKENDS.append(pytest.param("cuda", "cuda"))

# (x shape, K): odd sizes, K = 1 (one bin: a rational-quadratic between fixed corners), batch 1,
# a sample over one chunk (4096 elements: two logdet partial sums)
CASES = [((3, 7), 1), ((2, 3, 5), 2), ((2, 13), 5), ((4, 3, 3), 8), ((1, 4099), 8)]
BOUND = 3.0


def _params(shape, k, dtype, device, scale=1.5):
    make = lambda *s: (scale * torch.randn(*s)).to(device, dtype).requires_grad_(True)  # noqa: E731
    return make(*shape, k), make(*shape, k), make(*shape, k - 1)


def _inputs(shape, k, dtype, device):
    # about a sixth of the inputs outside [-B, B] (the identity tails)
    x = (1.2 * BOUND * (2 * torch.rand(shape) - 1)).to(device, dtype).requires_grad_(True)
    return (x, *_params(shape, k, dtype, device))


def _run(fn, tensors, grad_y, grad_logdet, **kw):
    y, logdet = fn(*tensors, **kw)
    grads = torch.autograd.grad([y, logdet], tensors, [grad_y.to(y.dtype), grad_logdet.to(logdet.dtype)])
    return (y, logdet, *grads)


def _double(tensors):
    return [t.detach().double().requires_grad_(True) for t in tensors]


NAMES = ["y", "logdet", "grad_x", "grad_widths", "grad_heights", "grad_derivatives"]


@pytest.mark.parametrize("backend, device", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, k", CASES, ids=str)
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_matches_reference(backend, device, dtype, shape, k, inverse):
    tensors = _inputs(shape, k, dtype, device)
    grad_y, grad_logdet = torch.randn(shape, device=device), torch.randn(shape[0], device=device)
    with use_backend(backend):
        fast = _run(rq_spline, tensors, grad_y, grad_logdet, tail_bound=BOUND, inverse=inverse)
    truth = _run(rq_spline_ref, _double(tensors), grad_y.double(), grad_logdet.double(), tail_bound=BOUND,
                 inverse=inverse)
    lowp = _run(rq_spline_ref, tensors, grad_y, grad_logdet, tail_bound=BOUND, inverse=inverse)
    assert fast[0].dtype == dtype and fast[0].shape == tensors[0].shape
    assert fast[1].dtype == torch.float32 and fast[1].shape == (shape[0],)
    for name, a, t, r in zip(NAMES, fast, truth, lowp):
        assert a.shape == t.shape
        assert_close_2x(a, t, r, name=f"{name} [{backend}, {dtype}, {shape}, K={k}, inverse={inverse}]")


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_identity_tails(backend, device, inverse):
    """Outside [-B, B] (infinities included): y = x exactly, zero log-det, gradient 1 to x and
    exactly zero to every parameter of that element."""
    x = torch.tensor([[-3.5, 4.0, -1e30, float("inf")], [-float("inf"), 3.0001, -7.0, 1e4]], device=device)
    tensors = [x.requires_grad_(True), *_params(x.shape, 4, torch.float32, device)]
    grad_y = torch.randn(x.shape, device=device)
    with use_backend(backend):
        y, logdet, gx, gw, gh, gd = _run(rq_spline, tensors, grad_y, torch.randn(2, device=device),
                                         tail_bound=BOUND, inverse=inverse)
    assert torch.equal(y, x.detach()) and torch.equal(logdet, torch.zeros(2, device=device))
    assert torch.equal(gx, grad_y)
    for g in (gw, gh, gd):
        assert torch.equal(g, torch.zeros_like(g))


def _edge_params(n, k, dtype, device, min_derivative=1e-3):
    """Zero unnormalised widths and heights with no minimum size: every bin 2B / K wide and high,
    so with B = K / 2 the knots are the integers -B..B, exact in every dtype."""
    zeros = lambda *s: torch.zeros(*s, device=device, dtype=dtype).requires_grad_(True)  # noqa: E731
    derivatives = (1.5 * torch.randn(n, k + 1, k - 1)).to(device, dtype).requires_grad_(True)
    return zeros(n, k + 1, k), zeros(n, k + 1, k), derivatives


@pytest.mark.parametrize("backend, device", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_bin_edges(backend, device, dtype, inverse):
    """Inputs exactly on every knot, -B and B included: each knot belongs to the bin on its right
    (+B to the last bin), as in the reference; the log-derivative's gradient in x, which jumps at a
    knot, tells the two sides apart."""
    k, n = 4, 3
    bound = k / 2
    x = torch.arange(-bound, bound + 1).expand(n, k + 1).to(device, dtype).requires_grad_(True)
    tensors = [x, *_edge_params(n, k, dtype, device)]
    kw = dict(tail_bound=bound, inverse=inverse, min_bin_width=0.0, min_bin_height=0.0)
    grad_y, grad_logdet = torch.randn(x.shape, device=device), torch.randn(n, device=device)
    with use_backend(backend):
        fast = _run(rq_spline, tensors, grad_y, grad_logdet, **kw)
    truth = _run(rq_spline_ref, _double(tensors), grad_y.double(), grad_logdet.double(), **kw)
    lowp = _run(rq_spline_ref, tensors, grad_y, grad_logdet, **kw)
    if not inverse:  # equal bins: every knot maps to itself (y_k + 0, and y_{K-1} + h at theta = 1)
        assert torch.equal(fast[0], x.detach())
    for name, a, t, r in zip(NAMES, fast, truth, lowp):
        assert_close_2x(a, t, r, name=f"{name} at the knots [{backend}, {dtype}, inverse={inverse}]")
    # the side: d(log-derivative)/dx at knot j of bin j, from theta = 0 (not theta = 1 of bin j - 1)
    xs = _double(tensors)
    gx_logdet = torch.autograd.grad(rq_spline_ref(*xs, **kw)[1].sum(), xs[0])[0]
    with use_backend(backend):
        gx_fast = torch.autograd.grad(rq_spline(*tensors, **kw)[1].sum(), tensors[0])[0]
    left = _double(tensors)
    left[0] = (left[0] - 1e-9).detach().requires_grad_(True)  # just left of each knot
    gx_left = torch.autograd.grad(rq_spline_ref(*left, **kw)[1].sum(), left[0])[0]
    interior = slice(1, k)
    assert not torch.allclose(gx_logdet[:, interior], gx_left[:, interior], rtol=1e-3)
    tol = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}[dtype]
    torch.testing.assert_close(gx_fast.double().cpu(), gx_logdet.cpu(), rtol=tol, atol=tol)


@pytest.mark.parametrize("backend, device, dtype, tol", [
    *[pytest.param(*p.values, torch.float32, 1e-6, marks=p.marks, id=f"{p.values[0]}-float32") for p in BACKENDS],
    pytest.param("torch", "cpu", torch.float64, 1e-14, id="torch-float64"),
])
@pytest.mark.parametrize("k", [1, 2, 5, 8])
def test_round_trip(backend, device, dtype, tol, k):
    """inverse(forward(x)) = x and the log-dets cancel; x = +-B included. The inverse's error
    is that of y divided by dy/dx (flat bins amplify it), so it is measured back in y:
    |x_back - x| dy/dx <= tol B."""
    x, w, h, d = (t.detach() for t in _inputs((4, 257), k, dtype, device))
    x[:, 0], x[:, 1] = BOUND, -BOUND
    with use_backend(backend):
        y, logdet = rq_spline(x, w, h, d, tail_bound=BOUND)
        x_back, logdet_back = rq_spline(y, w, h, d, tail_bound=BOUND, inverse=True)
    # elementwise dy/dx: each element as a sample of its own
    _, lad = rq_spline_ref(x.double().reshape(-1, 1), w.double().reshape(-1, 1, k), h.double().reshape(-1, 1, k),
                           d.double().reshape(x.numel(), 1, k - 1), tail_bound=BOUND)
    err = (x_back.double() - x.double()).abs() * lad.exp().view(x.shape)
    assert err.max() <= tol * BOUND, err.max()
    # the log-dets cancel up to their terms' rounding; with y stored in fp32 the inverse runs from
    # y's rounding, which a flat bin turns into a large step in x, so fp32 compares the inverse's
    # log-det with the forward one at the point it returns
    terms = (1.0 + lad.abs()).view(x.shape).sum(1)  # 1 + |lad|: an identity bin (K = 1) has lad = 0
    with use_backend(backend):
        logdet_there = rq_spline(x_back, w, h, d, tail_bound=BOUND)[1] if dtype == torch.float32 else logdet
    assert ((logdet_back + logdet_there).abs() <= 50 * tol * terms).all(), (logdet_back + logdet_there, terms)


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_monotone_and_onto(backend, device, inverse):
    """One spline per row evaluated on a fine grid: non-decreasing, [-B, B] onto itself."""
    x = torch.linspace(-1.1 * BOUND, 1.1 * BOUND, 20001, device=device).expand(3, -1).contiguous()
    w, h, d = (p.detach()[:, :1].expand(p.shape).contiguous() for p in _params(x.shape, 8, torch.float32, device))
    with use_backend(backend):
        y, _ = rq_spline(x, w, h, d, tail_bound=BOUND, inverse=inverse)
    assert (y[:, 1:] >= y[:, :-1]).all()
    inside = x.abs() <= BOUND
    assert y[inside].abs().max() <= BOUND and torch.equal(y[~inside], x[~inside])


@pytest.mark.parametrize("backend, device, dtype, tol", [
    *[pytest.param(*p.values, torch.float32, 1e-4, marks=p.marks, id=f"{p.values[0]}-float32") for p in BACKENDS],
    pytest.param("torch", "cpu", torch.float64, 1e-10, id="torch-float64"),
])
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_logdet_is_log_abs_jacobian(backend, device, dtype, tol, inverse):
    """logdet = log|det J| of the autograd Jacobian (diagonal: the map is elementwise)."""
    x, w, h, d = _inputs((2, 6), 5, dtype, device)
    with use_backend(backend):
        y, logdet = rq_spline(x, w, h, d, tail_bound=BOUND, inverse=inverse)
        for n in range(2):
            jac = torch.autograd.functional.jacobian(
                lambda v: rq_spline(v.unsqueeze(0), w[n:n + 1], h[n:n + 1], d[n:n + 1], tail_bound=BOUND,
                                    inverse=inverse)[0].squeeze(0), x[n].detach())
            assert torch.count_nonzero(jac - torch.diag(torch.diagonal(jac))) == 0
            torch.testing.assert_close(logdet[n], torch.linalg.slogdet(jac.double())[1].to(logdet.dtype),
                                       rtol=tol, atol=tol)


def _nflows_rqs(inputs, uw, uh, ud, tail_bound, inverse, min_bin_width, min_bin_height, min_derivative):
    """nflows' unconstrained_rational_quadratic_spline (linear tails) transcribed as written there:
    boolean masks, padded boundary derivatives from the softplus-inverse constant and its
    searchsorted with the last knot nudged by eps."""
    inside = (inputs >= -tail_bound) & (inputs <= tail_bound)
    outputs, logabsdet = inputs.clone(), torch.zeros_like(inputs)
    ud = F.pad(ud, pad=(1, 1))
    constant = math.log(math.exp(1 - min_derivative) - 1)
    ud[..., 0], ud[..., -1] = constant, constant
    x, uw, uh, ud = inputs[inside], uw[inside], uh[inside], ud[inside]
    left, right, bottom, top = -tail_bound, tail_bound, -tail_bound, tail_bound
    num_bins = uw.shape[-1]
    widths = torch.softmax(uw, dim=-1)
    widths = min_bin_width + (1 - min_bin_width * num_bins) * widths
    cumwidths = F.pad(torch.cumsum(widths, dim=-1), pad=(1, 0), mode="constant", value=0.0)
    cumwidths = (right - left) * cumwidths + left
    cumwidths[..., 0], cumwidths[..., -1] = left, right
    widths = cumwidths[..., 1:] - cumwidths[..., :-1]
    derivatives = min_derivative + F.softplus(ud)
    heights = torch.softmax(uh, dim=-1)
    heights = min_bin_height + (1 - min_bin_height * num_bins) * heights
    cumheights = F.pad(torch.cumsum(heights, dim=-1), pad=(1, 0), mode="constant", value=0.0)
    cumheights = (top - bottom) * cumheights + bottom
    cumheights[..., 0], cumheights[..., -1] = bottom, top
    heights = cumheights[..., 1:] - cumheights[..., :-1]
    locations = (cumheights if inverse else cumwidths).clone()
    locations[..., -1] += 1e-6
    bin_idx = (torch.sum(x[..., None] >= locations, dim=-1) - 1)[..., None]
    g = lambda t: t.gather(-1, bin_idx)[..., 0]  # noqa: E731
    input_cumwidths, input_bin_widths, input_cumheights = g(cumwidths), g(widths), g(cumheights)
    delta = heights / widths
    input_delta, input_derivatives, input_heights = g(delta), g(derivatives), g(heights)
    input_derivatives_plus_one = derivatives[..., 1:].gather(-1, bin_idx)[..., 0]
    if inverse:
        a = (x - input_cumheights) * (input_derivatives + input_derivatives_plus_one - 2 * input_delta) \
            + input_heights * (input_delta - input_derivatives)
        b = input_heights * input_derivatives \
            - (x - input_cumheights) * (input_derivatives + input_derivatives_plus_one - 2 * input_delta)
        c = -input_delta * (x - input_cumheights)
        discriminant = b.pow(2) - 4 * a * c
        assert (discriminant >= 0).all()
        root = (2 * c) / (-b - torch.sqrt(discriminant))
        out = root * input_bin_widths + input_cumwidths
        theta_one_minus_theta = root * (1 - root)
        denominator = input_delta + ((input_derivatives + input_derivatives_plus_one - 2 * input_delta)
                                     * theta_one_minus_theta)
        derivative_numerator = input_delta.pow(2) * (input_derivatives_plus_one * root.pow(2)
                                                     + 2 * input_delta * theta_one_minus_theta
                                                     + input_derivatives * (1 - root).pow(2))
        lad = -(torch.log(derivative_numerator) - 2 * torch.log(denominator))
    else:
        theta = (x - input_cumwidths) / input_bin_widths
        theta_one_minus_theta = theta * (1 - theta)
        numerator = input_heights * (input_delta * theta.pow(2) + input_derivatives * theta_one_minus_theta)
        denominator = input_delta + ((input_derivatives + input_derivatives_plus_one - 2 * input_delta)
                                     * theta_one_minus_theta)
        out = input_cumheights + numerator / denominator
        derivative_numerator = input_delta.pow(2) * (input_derivatives_plus_one * theta.pow(2)
                                                     + 2 * input_delta * theta_one_minus_theta
                                                     + input_derivatives * (1 - theta).pow(2))
        lad = torch.log(derivative_numerator) - 2 * torch.log(denominator)
    outputs[inside], logabsdet[inside] = out, lad
    return outputs, logabsdet.sum(-1)


@pytest.mark.parametrize("k", [1, 2, 5, 8])
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_reference_matches_nflows(k, inverse):
    x, w, h, d = (t.detach().double() for t in _inputs((3, 41), k, torch.float64, "cpu"))
    kw = dict(tail_bound=BOUND, min_bin_width=1e-3, min_bin_height=2e-3, min_derivative=1e-2)
    y, logdet = rq_spline_ref(x, w, h, d, inverse=inverse, **kw)
    y_nflows, logdet_nflows = _nflows_rqs(x, w, h, d, BOUND, inverse, 1e-3, 2e-3, 1e-2)
    torch.testing.assert_close(y, y_nflows, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logdet, logdet_nflows, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("k", [1, 2, 5, 8])
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_closed_form_backward_is_autograd(k, inverse):
    """The torch backend's closed-form backward (the kernels' formulas) = autograd of the reference."""
    tensors = _double(_inputs((3, 37), k, torch.float64, "cpu"))
    grad_y, grad_logdet = torch.randn(3, 37, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    expected = _run(rq_spline_ref, tensors, grad_y, grad_logdet, tail_bound=BOUND, inverse=inverse)[2:]
    got = rq_spline_backward_ref(grad_y, grad_logdet, *tensors, BOUND, inverse, 1e-3, 1e-3, 1e-3)
    for name, a, b in zip(NAMES[2:], got, expected):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=name)


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_nan_propagates(backend, device, inverse):
    """NaN in x: NaN y there and in its sample's logdet only; NaN in a parameter: NaN y where that
    element is inside the bound."""
    x, w, h, d = (t.detach() for t in _inputs((3, 5), 4, torch.float32, device))
    x[0, 1] = float("nan")
    x[2, 0], x[2, 1] = 0.5, 10.0
    w[2, 0, 2] = float("nan")
    w[2, 1, 0] = float("nan")  # outside the bound: unused
    with use_backend(backend):
        y, logdet = rq_spline(x, w, h, d, tail_bound=BOUND, inverse=inverse)
    nan = torch.zeros(3, 5, dtype=torch.bool)
    nan[0, 1] = nan[2, 0] = True
    assert torch.equal(torch.isnan(y).cpu(), nan)
    assert torch.isnan(logdet[0]) and torch.isfinite(logdet[1]) and torch.isnan(logdet[2])


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
@pytest.mark.parametrize("shape", [(0, 3), (2, 0), (3, 0, 2)], ids=str)
def test_zero_size(backend, device, shape):
    x, w, h, d = _inputs(shape, 3, torch.float32, device)
    with use_backend(backend):
        y, logdet = rq_spline(x, w, h, d)
        assert y.shape == x.shape and torch.equal(logdet, torch.zeros(shape[0], device=device))
        grads = torch.autograd.grad([y.sum() + logdet.sum()], [x, w, h, d])
    assert all(g.shape == t.shape for g, t in zip(grads, (x, w, h, d)))


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_non_contiguous_and_deterministic(backend, device):
    """Strided inputs give the contiguous result; the logdet over two chunks repeats bit for bit."""
    x, w, h, d = (t.detach() for t in _inputs((2, 4099), 5, torch.float32, device))
    xt = torch.randn(5, 2, device=device).t()
    wt = torch.randn(5, 2, 6, device=device).transpose(0, 1)
    with use_backend(backend):
        small = rq_spline(xt, wt, wt, wt[..., :5].contiguous(), tail_bound=BOUND)
        assert all(torch.equal(a, b) for a, b in zip(
            small, rq_spline(xt.contiguous(), wt.contiguous(), wt.contiguous(), wt[..., :5].contiguous())))
        first, second = rq_spline(x, w, h, d), rq_spline(x, w, h, d)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
def test_routes_agree_bit_for_bit(backend, device):
    tensors = _inputs((2, 9), 4, torch.float32, device)
    grad_y, grad_logdet = torch.randn(2, 9, device=device), torch.randn(2, device=device)
    with use_backend(backend):
        with torch.no_grad():
            nograd = rq_spline(*tensors)
        eager = _run(rq_spline, tensors, grad_y, grad_logdet)
        registered = _run(lambda *t: torch.ops.genkernels.rq_spline.default(*t, 3.0, False, 1e-3, 1e-3, 1e-3),
                          tensors, grad_y, grad_logdet)
    assert all(torch.equal(a, b) for a, b in zip(nograd, eager[:2]))
    assert all(torch.equal(a, b) for a, b in zip(eager, registered))


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
def test_opcheck(backend, device):
    x, w, h, d = _inputs((3, 5), 4, torch.float32, device)
    grad_y, grad_logdet = torch.randn(3, 5, device=device), torch.randn(3, device=device)
    with use_backend(backend):
        for inverse in (False, True):
            params = (2.5, inverse, 1e-3, 1e-3, 1e-3)
            torch.library.opcheck(rq_spline_op.registered, (x, w, h, d, *params))
            detached = [t.detach() for t in (x, w, h, d)]
            torch.library.opcheck(rq_spline_backward_op.registered, (grad_y, grad_logdet, *detached, *params))
            torch.library.opcheck(rq_spline_backward_op.registered, (grad_y, None, *detached, *params))


def test_torch_compile_fullgraph():
    x, w, h, d = _inputs((2, 7), 3, torch.float32, "cpu")

    def step(*t):
        y, logdet = rq_spline(*t, tail_bound=BOUND)
        return (y * y).sum() - logdet.sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    eager_loss = step(x, w, h, d)
    eager_grads = torch.autograd.grad(eager_loss, [x, w, h, d])
    loss = compiled(x, w, h, d)
    grads = torch.autograd.grad(loss, [x, w, h, d])
    torch.testing.assert_close(loss, eager_loss)
    for g, e in zip(grads, eager_grads):
        torch.testing.assert_close(g, e)


def test_float64_uses_the_reference():
    x, w, h, d = _inputs((2, 5), 3, torch.float64, "cpu")
    y, logdet = rq_spline(x, w, h, d)
    assert y.dtype == logdet.dtype == torch.float64
    expected = rq_spline_ref(x, w, h, d)
    torch.testing.assert_close(y, expected[0])
    torch.testing.assert_close(logdet, expected[1])
    with use_backend("cpu"), pytest.raises(ValueError, match="float64"):
        rq_spline(x, w, h, d)


def test_errors_name_the_argument():
    x, w, h, d = (t.detach() for t in _inputs((2, 3), 4, torch.float32, "cpu"))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        rq_spline(torch.zeros(2, 3, dtype=torch.int64), w, h, d)
    with pytest.raises(ValueError, match=r"widths must have shape x.shape \+ \(K,\)"):
        rq_spline(x, w[:, :2], h, d)
    with pytest.raises(ValueError, match="heights must have the shape of widths"):
        rq_spline(x, w, h[..., :3], d)
    with pytest.raises(ValueError, match=r"derivatives must have shape x.shape \+ \(K - 1,\) = \(2, 3, 3\)"):
        rq_spline(x, w, h, torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="K >= 1"):
        rq_spline(x, w[..., :0], h[..., :0], torch.zeros(2, 3, 0))
    with pytest.raises(TypeError, match="heights must have x's dtype"):
        rq_spline(x, w, h.double(), d)
    with pytest.raises(TypeError, match="derivatives must be a torch.Tensor"):
        rq_spline(x, w, h, None)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="tail_bound must be a finite positive float"):
            rq_spline(x, w, h, d, tail_bound=bad)
    with pytest.raises(TypeError, match="tail_bound must be a float"):
        rq_spline(x, w, h, d, tail_bound="3")
    with pytest.raises(TypeError, match="inverse must be a bool"):
        rq_spline(x, w, h, d, inverse=1)
    with pytest.raises(ValueError, match=r"min_bin_width \* K must be < 1"):
        rq_spline(x, w, h, d, min_bin_width=0.25)
    with pytest.raises(ValueError, match=r"min_bin_height \* K must be < 1"):
        rq_spline(x, w, h, d, min_bin_height=0.3)
    with pytest.raises(ValueError, match="min_derivative must be a finite non-negative float"):
        rq_spline(x, w, h, d, min_derivative=-1e-3)


def test_bench_suite_case_runs_and_checks():
    """The rq_spline case of `genkernels bench --suite flow` on a tiny shape: every provider checked
    against the reference, timed, and its speedup over eager recorded."""
    from genkernels.bench import flow

    cases = (("tiny rq_spline fwd_bwd", "rq_spline", (2, 33), None, True),)
    rows = flow.run_suite("cpu", with_compile=False, cases=cases, threads=(1,))
    assert len(rows) == len(flow.providers("cpu")) - 1
    assert all(r["ms"] > 0 and r["speedup_vs_eager"] > 0 for r in rows)
