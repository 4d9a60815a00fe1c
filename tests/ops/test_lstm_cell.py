"""lstm_cell and layernorm_lstm_cell: every compiled backend against the float64 reference under the
2x rule in fp32/fp16/bf16, h / c and every gradient, one step and through the state across a few
steps; the recurrent-dropout mask (kernel == reference, bit for bit; applied by the cells); NaN,
gradcheck of the references, the routes, opcheck, compile and errors."""
import importlib

import pytest
import torch

from genkernels import _ext, use_backend
from genkernels.ops import layernorm_lstm_cell, lstm_cell, lstm_dropout_mask
from genkernels.ops.layernorm_lstm_cell import layernorm_lstm_cell_ref, ln_lstm_cell_backward_op, ln_lstm_cell_op
from genkernels.ops.lstm_cell import lstm_cell_backward_op, lstm_cell_op, lstm_cell_ref, lstm_dropout_mask_ref
from genkernels.testing import assert_close_2x
from tests.helpers import DTYPES

cell_mod = importlib.import_module("genkernels.ops.lstm_cell")
ln_mod = importlib.import_module("genkernels.ops.layernorm_lstm_cell")

BACKENDS = [pytest.param("cpu", "cpu", marks=pytest.mark.skipif(_ext._C is None, reason="genkernels._C not built"))]
if torch.cuda.is_available() and _ext._cuda is not None:
    BACKENDS.append(pytest.param("cuda", "cuda"))

SHAPES = [(1, 1), (3, 5), (4, 67), (2, 256)]  # (B, H): odd sizes, batch 1, a row longer than a block


def _leaf(t, dtype=None):
    return t.detach().to(dtype or t.dtype).requires_grad_(True)


def _ln_params(H, device):
    g = torch.Generator().manual_seed(3)
    return (1 + 0.3 * torch.randn(4 * H, generator=g)).to(device), (1 + 0.3 * torch.randn(H, generator=g)).to(device), \
        (0.2 * torch.randn(H, generator=g)).to(device)


def _unrolled(layer_norm, fn, xg, w, h0, c0, ln, steps):
    """A few steps through the cell: gates from xg[t] and h_{t-1} W^T; returns (hs, c_T)."""
    h, c, hs = h0, c0, []
    for t in range(steps):
        if layer_norm:
            h, c = fn(xg[t], h @ w.t(), c, *ln)
        else:
            h, c = fn(xg[t] + h @ w.t(), c)
        hs.append(h)
    return torch.stack(hs), c


def _check_sequence(layer_norm, backend, device, dtype, B, H, steps):
    torch.manual_seed(B * 100 + H + steps)
    xg = (1.5 * torch.randn(steps, B, 4 * H)).to(device)
    w = (torch.randn(4 * H, H) / H ** 0.5).to(device)
    h0, c0 = torch.randn(B, H).to(device), (2 * torch.randn(B, H)).to(device)
    ln = _ln_params(H, device) if layer_norm else ()
    gh = torch.randn(steps, B, H).to(device)
    gc = torch.randn(B, H).to(device)
    fast_fn = layernorm_lstm_cell if layer_norm else lstm_cell
    ref_fn = layernorm_lstm_cell_ref if layer_norm else lstm_cell_ref

    def run(fn, dt):
        leaves = [_leaf(t, dt) for t in (xg, w, h0, c0, *ln)]
        hs, c = _unrolled(layer_norm, fn, leaves[0], leaves[1], leaves[2], leaves[3], leaves[4:], steps)
        grads = torch.autograd.grad([hs, c], leaves, [gh.to(dt), gc.to(dt)])
        return (hs, c, *grads)

    with use_backend(backend):
        fast = run(fast_fn, dtype)
    truth = run(ref_fn, torch.float64)
    lowp = run(ref_fn, dtype)
    names = ["h", "c", "grad_gates_x", "grad_w_hh", "grad_h0", "grad_c0", "grad_weight_h", "grad_weight_c",
             "grad_bias_c"]
    for name, a, t, r in zip(names, fast, truth, lowp):
        assert a.dtype == dtype and a.shape == t.shape
        assert_close_2x(a, t, r, name=f"{name} [{backend}, {dtype}, B={B}, H={H}, steps={steps}, ln={layer_norm}]",
                        term_scale=_sum_scale(name, t))


def _sum_scale(name, truth):
    """Weight gradients are sums over rows (and steps) of products, grad_h0 a sum over the 4H gates
    (torch's matmul of the kernel's gate gradients): where they cancel, a correct kernel is off by
    ulps of the terms, whose scale the largest entry (of the tensor / of the row) bounds from below."""
    if name.startswith(("grad_w", "grad_bias")):
        return truth.abs().max()
    if name == "grad_h0":
        return truth.abs().amax(1, keepdim=True)
    return None


@pytest.mark.parametrize("backend, device", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("B, H", SHAPES, ids=str)
@pytest.mark.parametrize("layer_norm", [False, True], ids=["plain", "layernorm"])
def test_one_step_matches_reference(backend, device, dtype, B, H, layer_norm):
    if layer_norm and H == 1:
        H = 8  # LN over one cell is degenerate (its output is the bias): a batch-1 row of 8 units instead
    _check_sequence(layer_norm, backend, device, dtype, B, H, steps=1)


@pytest.mark.parametrize("backend, device", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layer_norm", [False, True], ids=["plain", "layernorm"])
def test_gradients_through_the_state(backend, device, dtype, layer_norm):
    _check_sequence(layer_norm, backend, device, dtype, 3, 37, steps=4)


def test_references_gradcheck():
    torch.manual_seed(0)
    B, H = 2, 3
    gates, c = torch.randn(B, 4 * H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    w = torch.randn(4 * H, H, dtype=torch.float64) / 2
    ln = [t.double() for t in _ln_params(H, "cpu")]
    leaves = [t.requires_grad_(True) for t in (gates, c, w, *ln)]

    def plain(g, c0, w):
        return _unrolled(False, lstm_cell_ref, g.view(1, B, 4 * H).expand(3, B, 4 * H), w, c0 * 0.5, c0, (), 3)

    def normed(g, c0, w, wh, wc, bc):
        return _unrolled(True, layernorm_lstm_cell_ref, g.view(1, B, 4 * H).expand(3, B, 4 * H), w, c0 * 0.5, c0,
                         (wh, wc, bc), 3)

    assert torch.autograd.gradcheck(plain, leaves[:3])
    assert torch.autograd.gradcheck(normed, leaves)
    # the closed-form / autograd backward references the torch route uses
    gh, gc = torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    h, c1 = lstm_cell_ref(leaves[0], leaves[1])
    expected = torch.autograd.grad([h, c1], leaves[:2], [gh, gc])
    got = cell_mod.lstm_cell_backward_ref(gh, gc, gates.detach(), c.detach())
    torch.testing.assert_close(got, expected)
    hg = torch.randn(B, 4 * H, dtype=torch.float64, requires_grad=True)
    ln_leaves = [leaves[0], hg, leaves[1], *leaves[3:]]
    h, c1 = layernorm_lstm_cell_ref(*ln_leaves)
    expected = torch.autograd.grad([h, c1], ln_leaves, [gh, gc])
    got = ln_mod.layernorm_lstm_cell_backward_ref(gh, gc, *[t.detach() for t in ln_leaves], 1e-5)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_dropout_mask_kernel_equals_reference(backend, device):
    for B, H, p, seed, offset in [(3, 37, 0.3, 5, 0), (2, 8, 0.5, 2**40 + 7, 3), (1, 5, 0.0, 1, 1)]:
        ref = lstm_dropout_mask_ref(B, H, p, seed, offset)
        with use_backend(backend):
            got = lstm_dropout_mask(torch.empty(B, H, device=device), p, seed, offset)
        assert torch.equal(got.cpu(), ref)
        assert set(torch.unique(ref).tolist()) <= {0.0, torch.tensor(1.0 / (1 - p)).item()}
    big = lstm_dropout_mask_ref(64, 256, 0.25, 9)
    assert abs((big == 0).float().mean().item() - 0.25) < 0.02
    # another offset (layer / direction) gives another mask
    assert not torch.equal(lstm_dropout_mask_ref(4, 64, 0.5, 9, 0), lstm_dropout_mask_ref(4, 64, 0.5, 9, 1))


@pytest.mark.parametrize("backend, device", BACKENDS)
@pytest.mark.parametrize("layer_norm", [False, True], ids=["plain", "layernorm"])
def test_in_kernel_dropout_matches_the_mask(backend, device, layer_norm):
    """The cells' h_rec output is h * mask and their backward adds grad_h_rec * mask to grad_h."""
    torch.manual_seed(1)
    B, H, p, seed, offset = 3, 21, 0.4, 123, 2
    gx, gh = torch.randn(B, 4 * H, device=device), torch.randn(B, 4 * H, device=device)
    cp = torch.randn(B, H, device=device)
    ln = _ln_params(H, device)
    mask = lstm_dropout_mask_ref(B, H, p, seed, offset).to(device)
    h, c, h_rec = torch.empty_like(cp), torch.empty_like(cp), torch.empty_like(cp)
    if layer_norm:
        ln_mod.launch_forward(backend, gx, gh, cp, *ln, h, c, 1e-5, h_rec, p, seed, offset)
        h_ref, c_ref = layernorm_lstm_cell_ref(gx, gh, cp, *ln)
    else:
        cell_mod.launch_forward(backend, gx, cp, h, c, h_rec, p, seed, offset)
        h_ref, c_ref = lstm_cell_ref(gx, cp)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(h_rec, h * mask)
    g_h, g_rec, g_c = (torch.randn(B, H, device=device) for _ in range(3))
    out = [torch.empty_like(gx), torch.empty_like(cp)]
    if layer_norm:
        f32 = dict(device=device)
        terms = [torch.empty(B, 4 * H, **f32), torch.empty(B, H, **f32), torch.empty(B, H, **f32)]
        gg_h = torch.empty_like(gx)
        ln_mod.launch_backward(backend, g_h, g_c, gx, gh, cp, *ln, out[0], gg_h, out[1], *terms, 1e-5, g_rec, p, seed,
                               offset)
        expected = ln_mod.layernorm_lstm_cell_backward_ref(g_h + g_rec * mask, g_c, gx, gh, cp, *ln, 1e-5)
        expected = (expected[0], expected[2])
    else:
        cell_mod.launch_backward(backend, g_h, g_c, gx, cp, out[0], out[1], g_rec, p, seed, offset)
        expected = cell_mod.lstm_cell_backward_ref(g_h + g_rec * mask, g_c, gx, cp)
    for a, e in zip(out, expected):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
@pytest.mark.parametrize("layer_norm", [False, True], ids=["plain", "layernorm"])
def test_nan_propagates(backend, device, layer_norm):
    B, H = 2, 5
    gx, cp = torch.randn(B, 4 * H, device=device), torch.randn(B, H, device=device)
    gx[0, 2] = float("nan")  # an input-gate pre-activation of row 0, unit 2
    with use_backend(backend):
        if layer_norm:
            h, c = layernorm_lstm_cell(gx, torch.randn(B, 4 * H, device=device), cp, *_ln_params(H, device))
        else:
            h, c = lstm_cell(gx, cp)
    assert torch.isnan(c[0, 2]) and torch.isnan(h[0, 2])
    assert not torch.isnan(h[1]).any()
    if not layer_norm:  # LN mixes a row's units: then the whole row is NaN
        assert torch.isnan(h[0]).sum() == 1


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_deterministic_and_routes_agree(backend, device):
    torch.manual_seed(2)
    B, H = 5, 33
    gx, gh, cp = (torch.randn(B, 4 * H, device=device, requires_grad=True) for _ in range(3))
    cp = torch.randn(B, H, device=device, requires_grad=True)
    ln = [t.requires_grad_(True) for t in _ln_params(H, device)]
    with use_backend(backend):
        a = layernorm_lstm_cell(gx, gh, cp, *ln)
        ga = torch.autograd.grad(sum(x.sum() for x in a), [gx, gh, cp, *ln])
        b = ln_lstm_cell_op.registered(gx, gh, cp, *ln, 1e-5)
        gb = torch.autograd.grad(sum(x.sum() for x in b), [gx, gh, cp, *ln])
        with torch.no_grad():
            c = layernorm_lstm_cell(gx, gh, cp, *ln)
    for x, y in zip((*a, *ga), (*b, *gb)):
        assert torch.equal(x, y)
    for x, y in zip(a, c):
        assert torch.equal(x, y)


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
def test_opcheck(backend, device):
    B, H = 3, 6
    gx, gh = torch.randn(B, 4 * H, device=device), torch.randn(B, 4 * H, device=device)
    cp = torch.randn(B, H, device=device)
    ln = _ln_params(H, device)
    g1, g2 = torch.randn(B, H, device=device), torch.randn(B, H, device=device)
    with use_backend(backend):
        torch.library.opcheck(lstm_cell_op.registered, (gx.requires_grad_(True), cp.requires_grad_(True)))
        torch.library.opcheck(lstm_cell_backward_op.registered, (g1, g2, gx.detach(), cp.detach()))
        torch.library.opcheck(ln_lstm_cell_op.registered,
                              (gx, gh.requires_grad_(True), cp, *[t.requires_grad_(True) for t in ln], 1e-5))
        torch.library.opcheck(ln_lstm_cell_backward_op.registered,
                              (g1, g2, gx.detach(), gh.detach(), cp.detach(), *[t.detach() for t in ln], 1e-5))


def test_torch_compile_fullgraph():
    torch.manual_seed(3)
    B, H = 2, 5
    gx, gh = torch.randn(B, 4 * H, requires_grad=True), torch.randn(B, 4 * H, requires_grad=True)
    cp = torch.randn(B, H, requires_grad=True)
    ln = [t.requires_grad_(True) for t in _ln_params(H, "cpu")]

    def step(gx, gh, cp, wh, wc, bc):
        h, c = lstm_cell(gx, cp)
        h2, c2 = layernorm_lstm_cell(gx, gh, c, wh, wc, bc)
        return (h * h).sum() + (h2 * c2).sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    leaves = [gx, gh, cp, *ln]
    eager = step(*leaves)
    eager_grads = torch.autograd.grad(eager, leaves)
    loss = compiled(*leaves)
    grads = torch.autograd.grad(loss, leaves)
    torch.testing.assert_close(loss, eager)
    for g, e in zip(grads, eager_grads):
        torch.testing.assert_close(g, e)


def test_float64_uses_the_reference():
    gx, cp = torch.randn(2, 12, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    torch.testing.assert_close(lstm_cell(gx, cp), lstm_cell_ref(gx, cp))
    with use_backend("cpu"), pytest.raises(ValueError, match="float64"):
        lstm_cell(gx, cp)


def test_errors_name_the_argument():
    gx, cp = torch.zeros(2, 12), torch.zeros(2, 3)
    with pytest.raises(TypeError, match="gates must be a torch.Tensor"):
        lstm_cell([0.0], cp)
    with pytest.raises(ValueError, match=r"gates must be \(B, 4H\).*got shape \(2, 10\)"):
        lstm_cell(torch.zeros(2, 10), cp)
    with pytest.raises(ValueError, match=r"c_prev must have shape \(B, H\) = \(2, 3\).*got \(2, 4\)"):
        lstm_cell(gx, torch.zeros(2, 4))
    with pytest.raises(TypeError, match="c_prev must have gates's dtype"):
        lstm_cell(gx, cp.double())
    with pytest.raises(TypeError, match="floating-point"):
        lstm_cell(gx.long(), cp)
    ln = _ln_params(3, "cpu")
    with pytest.raises(ValueError, match=r"gates_h must have the shape of gates_x"):
        layernorm_lstm_cell(gx, torch.zeros(2, 8), cp, *ln)
    with pytest.raises(ValueError, match=r"weight_c must have shape \(3,\)"):
        layernorm_lstm_cell(gx, gx, cp, ln[0], torch.ones(4), ln[2])
    with pytest.raises(ValueError, match="eps must be a positive number"):
        layernorm_lstm_cell(gx, gx, cp, *ln, eps=0)
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\)"):
        lstm_dropout_mask(cp, 1.0, 0)
    with pytest.raises(TypeError, match="seed must be an int"):
        lstm_dropout_mask(cp, 0.5, 1.5)
