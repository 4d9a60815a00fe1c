"""group_norm_act: every compiled backend against the float64 reference under the 2x rule, y and
every gradient (x, weight, bias, scale, shift), odd group sizes, 1D/2D/3D spatial, act None/silu,
modulation absent/present; NaN, zero sizes, determinism, the routes, opcheck, compile and errors."""
import pytest
import torch

from genkernels import _ext, use_backend
from genkernels.ops import group_norm_act
from genkernels.ops.group_norm_act import group_norm_act_backward_op, group_norm_act_op, group_norm_act_ref
from genkernels.testing import assert_close_2x
from tests.helpers import DTYPES, stable_seed

BACKENDS = [pytest.param("cpu", "cpu", marks=pytest.mark.skipif(_ext._C is None, reason="genkernels._C not built"))]
if torch.cuda.is_available() and _ext._cuda is not None:
    BACKENDS.append(pytest.param("cuda", "cuda"))

# (shape, groups): 1x1 and 3x5 spatial, 1D, 3D, no spatial dim, a group over several lane blocks
SHAPES = [((2, 6, 1, 1), 3), ((2, 6, 3, 5), 3), ((3, 10, 7), 5), ((2, 4, 2, 3, 4), 2), ((3, 5), 1), ((2, 8, 40), 4)]
MODS = ["none", "scale_shift", "scale"]
NAMES = ["y", "grad_x", "grad_weight", "grad_bias", "grad_scale", "grad_shift"]


def _inputs(shape, dtype, device, mod, affine=True):
    n, c = shape[0], shape[1]
    x = (1.5 * torch.randn(shape) + 0.5).to(device, dtype).requires_grad_(True)
    weight = (1 + 0.5 * torch.randn(c)).to(device, dtype).requires_grad_(True) if affine else None
    bias = (0.5 * torch.randn(c)).to(device, dtype).requires_grad_(True) if affine else None
    scale = (0.5 * torch.randn(n, c)).to(device, dtype).requires_grad_(True) if mod != "none" else None
    shift = (0.5 * torch.randn(n, c)).to(device, dtype).requires_grad_(True) if mod == "scale_shift" else None
    return x, weight, bias, scale, shift


def _call(fn, groups, act, grad_y, x, weight, bias, scale, shift):
    if fn is group_norm_act:
        y = fn(x, groups, weight, bias, scale=scale, shift=shift, act=act)
    else:
        y = fn(x, groups, weight, bias, scale, shift, 1e-5, act)
    wrt = [t for t in (x, weight, bias, scale, shift) if t is not None]
    grads = iter(torch.autograd.grad(y, wrt, grad_y.to(y.dtype)))
    return [y] + [next(grads) if t is not None else None for t in (x, weight, bias, scale, shift)]


def _leaf64(t):
    return None if t is None else t.detach().double().requires_grad_(True)


def _term_scales(groups, act, grad_y, x, weight, bias, scale, shift):
    """|terms| of each gradient in float64: where a sum cancels, a correct kernel is off by ulps of
    its terms, not of the (small) result."""
    n, c = x.shape[0], x.shape[1]
    x = x.detach().double()
    xg = x.reshape(n, groups, -1)
    mean = xg.mean(-1, keepdim=True)
    rstd = torch.rsqrt(((xg - mean) ** 2).mean(-1, keepdim=True) + 1e-5)
    xhat = ((xg - mean) * rstd).reshape(n, c, -1)
    # xhat is itself a difference: its terms are |x| rstd and |mean| rstd (a kernel, or torch, is off
    # by ulps of those where x is near the group mean)
    xhat_terms = ((xg.abs() + mean.abs()) * rstd).reshape(n, c, -1).cpu()
    w = torch.ones(c, dtype=torch.float64) if weight is None else weight.detach().double().cpu()
    b = torch.zeros(c, dtype=torch.float64) if bias is None else bias.detach().double().cpu()
    m = torch.ones(n, c, dtype=torch.float64) if scale is None else 1 + scale.detach().double().cpu()
    xhat = xhat.cpu()
    g = grad_y.double().cpu().reshape(n, c, -1)
    t = torch.zeros(n, c, dtype=torch.float64) if shift is None else shift.detach().double().cpu()
    y_terms = xhat_terms * (w[:, None] * m[..., None]).abs() + (b * m).abs()[..., None] + t.abs()[..., None]
    if act == "silu":
        h = (xhat * w[:, None] + b[:, None]) * m[..., None] + t[..., None]
        s = torch.sigmoid(h)
        g = g * s * (1 + h * (1 - s))
    a1, a2 = g.abs().sum(-1), (g.abs() * xhat_terms).sum(-1)
    k = (w * m).abs()
    big_a = (k * a1).reshape(n, groups, -1).sum(-1, keepdim=True) / xg.shape[-1]
    big_b = (k * a2).reshape(n, groups, -1).sum(-1, keepdim=True) / xg.shape[-1]
    gx = rstd.cpu() * ((g * k[..., None]).reshape(n, groups, -1).abs() + big_a
                       + xhat_terms.reshape(n, groups, -1) * big_b)
    return {"y": y_terms.reshape(x.shape), "grad_x": gx.reshape(x.shape),
            "grad_weight": (m.abs() * a2).sum(0), "grad_bias": (m.abs() * a1).sum(0),
            "grad_scale": w.abs() * a2 + b.abs() * a1, "grad_shift": a1}


@pytest.mark.parametrize("backend, device", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, groups", SHAPES, ids=str)
@pytest.mark.parametrize("act", ["silu", None], ids=["silu", "none"])
@pytest.mark.parametrize("mod", MODS)
def test_matches_reference(backend, device, dtype, shape, groups, act, mod):
    torch.manual_seed(stable_seed((shape, groups, str(dtype), act, mod)))
    inputs = _inputs(shape, dtype, device, mod)
    grad_y = torch.randn(shape, device=device)
    with use_backend(backend):
        fast = _call(group_norm_act, groups, act, grad_y, *inputs)
    truth = _call(group_norm_act_ref, groups, act, grad_y.double(), *(_leaf64(t) for t in inputs))
    lowp = _call(group_norm_act_ref, groups, act, grad_y, *inputs)
    scales = _term_scales(groups, act, grad_y, *inputs)
    for name, a, t, r in zip(NAMES, fast, truth, lowp):
        if t is None:
            assert a is None
            continue
        assert a.shape == t.shape and a.dtype == dtype
        scale = scales.get(name)
        scale = None if scale is None else scale.to(a.device)
        if name in ("grad_weight", "grad_bias"):  # (C,) sums over samples: one sample
            a, t, r, scale = a.unsqueeze(0), t.unsqueeze(0), r.unsqueeze(0), scale.unsqueeze(0)
        assert_close_2x(a, t, r, name=f"{name} [{backend}, {dtype}, {shape}/{groups}, {act}, {mod}]",
                        term_scale=scale)


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
def test_no_affine_matches_functional(backend, device):
    x, _, _, scale, shift = _inputs((2, 6, 3, 5), torch.float32, device, "scale_shift", affine=False)
    with use_backend(backend), torch.no_grad():
        y = group_norm_act(x, 3, scale=scale, shift=shift)
        expected = torch.nn.functional.silu(torch.nn.functional.group_norm(x, 3) * (1 + scale[..., None, None])
                                            + shift[..., None, None])
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
def test_nan_propagates(backend, device):
    x, weight, bias, scale, shift = (t.detach() for t in _inputs((2, 6, 4), torch.float32, device, "scale_shift"))
    x[0, 0, 1] = float("nan")  # sample 0, group 0 (channels 0, 1)
    shift[1, 5] = float("nan")  # sample 1, channel 5
    leaves = [t.requires_grad_(True) for t in (x, weight, bias, scale, shift)]
    with use_backend(backend):
        y = group_norm_act(leaves[0], 3, leaves[1], leaves[2], scale=leaves[3], shift=leaves[4])
        grads = torch.autograd.grad(y.sum(), leaves)
    expected = torch.zeros(2, 6, 4, dtype=torch.bool)
    expected[0, :2] = True
    expected[1, 5] = True
    assert torch.equal(torch.isnan(y).cpu(), expected)
    assert torch.isnan(grads[0][0, :2]).all() and torch.isnan(grads[0][1, 4:]).all()
    assert not torch.isnan(grads[0][0, 2:]).any() and not torch.isnan(grads[0][1, :4]).any()
    assert torch.isnan(grads[1][[0, 1, 5]]).all() and not torch.isnan(grads[1][2:5]).any()


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
@pytest.mark.parametrize("shape", [(0, 6, 4), (2, 6, 0)], ids=str)
def test_zero_size(backend, device, shape):
    inputs = _inputs(shape, torch.float32, device, "scale_shift")
    with use_backend(backend):
        y = group_norm_act(inputs[0], 3, *inputs[1:3], scale=inputs[3], shift=inputs[4])
        assert y.shape == shape
        grads = torch.autograd.grad(y.sum(), list(inputs))
    assert torch.equal(grads[1], torch.zeros_like(inputs[1]))
    assert torch.equal(grads[2], torch.zeros_like(inputs[2]))


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_deterministic_across_threads_and_layouts(backend, device):
    shape = (8, 6, 5, 400)
    x = torch.randn(shape, device=device).transpose(2, 3).contiguous().transpose(2, 3).requires_grad_(True)
    assert not x.is_contiguous()
    _, weight, bias, scale, shift = _inputs(shape, torch.float32, device, "scale_shift")
    g = torch.randn(shape, device=device)
    threads = torch.get_num_threads()

    def run(inp):
        y = group_norm_act(inp, 3, weight, bias, scale=scale, shift=shift)
        return (y, *torch.autograd.grad(y, [x, weight, bias, scale, shift], g))

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
    x, weight, bias, scale, shift = _inputs((2, 6, 9), torch.float32, device, "scale_shift")
    gy = torch.randn(2, 6, 9, device=device)
    leaves = [x, weight, bias, scale, shift]
    with use_backend(backend):
        with torch.no_grad():
            y_nograd = group_norm_act(x, 3, weight, bias, scale=scale, shift=shift)
        y_eager = group_norm_act(x, 3, weight, bias, scale=scale, shift=shift)
        grads_eager = torch.autograd.grad(y_eager, leaves, gy)
        y_op = torch.ops.genkernels.group_norm_act.default(x, 3, weight, bias, scale, shift, 1e-5, "silu")
        grads_op = torch.autograd.grad(y_op, leaves, gy)
    assert torch.equal(y_nograd, y_eager) and torch.equal(y_eager, y_op)
    assert all(torch.equal(a, b) for a, b in zip(grads_eager, grads_op))


@pytest.mark.parametrize("backend, device", BACKENDS + [pytest.param("torch", "cpu")])
def test_opcheck(backend, device):
    x, weight, bias, scale, shift = _inputs((3, 4, 5), torch.float32, device, "scale_shift")
    gy = torch.randn(3, 4, 5, device=device)
    with use_backend(backend):
        torch.library.opcheck(group_norm_act_op.registered, (x, 2, weight, bias, scale, shift, 1e-5, "silu"))
        torch.library.opcheck(group_norm_act_op.registered, (x, 4, None, None, None, None, 1e-5, "none"))
        torch.library.opcheck(group_norm_act_backward_op.registered,
                              (gy, x.detach(), 2, weight.detach(), bias.detach(), scale.detach(), None, 1e-5, "silu"))


def test_torch_compile_fullgraph():
    x, weight, bias, scale, shift = _inputs((2, 4, 5), torch.float32, "cpu", "scale_shift")

    def step(a, w, b, s, t):
        return (group_norm_act(a, 2, w, b, scale=s, shift=t) ** 2).sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    leaves = [x, weight, bias, scale, shift]
    eager_loss = step(*leaves)
    eager_grads = torch.autograd.grad(eager_loss, leaves)
    loss = compiled(*leaves)
    grads = torch.autograd.grad(loss, leaves)
    torch.testing.assert_close(loss, eager_loss)
    for g, e in zip(grads, eager_grads):
        torch.testing.assert_close(g, e)


def test_errors_name_the_argument():
    x, p, nc = torch.zeros(2, 6, 4), torch.zeros(6), torch.zeros(2, 6)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        group_norm_act([0.0], 3)
    with pytest.raises(ValueError, match=r"x must be \(N, C, \*spatial\)"):
        group_norm_act(torch.zeros(6), 3)
    with pytest.raises(ValueError, match="num_groups must be >= 1 and divide the channel count"):
        group_norm_act(x, 4)
    with pytest.raises(ValueError, match="num_groups must be >= 1"):
        group_norm_act(x, 0)
    with pytest.raises(TypeError, match="num_groups must be an int"):
        group_norm_act(x, 3.0)
    with pytest.raises(ValueError, match=r"weight must have shape \(C,\) = \(6,\)"):
        group_norm_act(x, 3, torch.zeros(5))
    with pytest.raises(ValueError, match=r"scale must have shape \(N, C\) = \(2, 6\)"):
        group_norm_act(x, 3, p, p, scale=torch.zeros(2, 6, 1, 1))
    with pytest.raises(TypeError, match="shift must have x's dtype"):
        group_norm_act(x, 3, p, p, shift=nc.double())
    with pytest.raises(TypeError, match="bias must be a torch.Tensor or None"):
        group_norm_act(x, 3, p, [0.0] * 6)
    with pytest.raises(ValueError, match="eps must be a positive number"):
        group_norm_act(x, 3, eps=0.0)
    with pytest.raises(ValueError, match="act must be 'silu' or None"):
        group_norm_act(x, 3, act="relu")


@pytest.mark.parametrize("act", ["silu", None], ids=["silu", "none"])
def test_float64_backward_is_the_exact_gradient(act):
    """float64 runs the reference with its closed-form backward: gradcheck against finite differences."""
    torch.manual_seed(3)
    inputs = [t.detach().double().requires_grad_(True) for t in _inputs((2, 6, 3), torch.float32, "cpu", "scale_shift")]
    fn = lambda x, w, b, s, t: group_norm_act(x, 3, w, b, scale=s, shift=t, act=act)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)
