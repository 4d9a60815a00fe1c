"""causal_conv1d: the reference against conv1d and a direct sum over taps, its closed-form backward,
causality (the Jacobian of output t w.r.t. inputs after t is exactly zero, on both backends),
registration (opcheck, torch.compile) and validation. The kernels' accuracy: tests/kernels."""
import pytest
import torch
import torch.nn.functional as F

from genkernels import use_backend
from genkernels.ops import causal_conv1d as exported
from genkernels.ops.causal_conv1d import causal_conv1d, causal_conv1d_backward_ref, causal_conv1d_ref
from tests.helpers import triton_device


def _direct(x, weight, bias, dilation):
    """y[:, :, t] = b + sum_k W[:, :, k] x[:, :, t - (K-1-k) d], zeros before t = 0, as a loop."""
    n, _, length = x.shape
    k = weight.shape[-1]
    y = torch.zeros(n, weight.shape[0], length, dtype=x.dtype)
    for t in range(length):
        for j in range(k):
            s = t - (k - 1 - j) * dilation
            if s >= 0:
                y[:, :, t] += x[:, :, s] @ weight[:, :, j].T
    return y + bias[:, None]


@pytest.mark.parametrize("k, dilation", [(1, 1), (2, 1), (3, 2), (4, 5)])
def test_reference_is_the_left_padded_conv1d(k, dilation):
    x = torch.randn(2, 3, 13, dtype=torch.float64)
    weight, bias = torch.randn(4, 3, k, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    out = causal_conv1d(x, weight, bias, dilation)
    torch.testing.assert_close(out, _direct(x, weight, bias, dilation))
    conv = torch.nn.Conv1d(3, 4, k, dilation=dilation, padding=(k - 1) * dilation).double()
    conv.load_state_dict({"weight": weight, "bias": bias})
    torch.testing.assert_close(out, conv(x)[:, :, :13])  # symmetric padding, cut at the end
    cond = torch.randn(2, 4, dtype=torch.float64)
    gated = causal_conv1d(x, weight, bias, dilation, gated=True, cond=cond)
    pre = out + cond[:, :, None]
    torch.testing.assert_close(gated, torch.tanh(pre[:, :2]) * torch.sigmoid(pre[:, 2:]))
    torch.testing.assert_close(causal_conv1d(x, weight, bias, dilation, cond=cond), pre)
    assert exported is causal_conv1d


@pytest.mark.parametrize("gated, cond", [(False, False), (True, True), (False, True)])
def test_backward_ref_matches_autograd(gated, cond):
    x = torch.randn(2, 3, 9, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    cond_bias = torch.randn(2, 4, dtype=torch.float64, requires_grad=True) if cond else None
    out = causal_conv1d_ref(x, weight, bias, 2, gated, cond_bias)
    grad = torch.randn_like(out)
    leaves = [t for t in (x, weight, bias, cond_bias) if t is not None]
    expected = torch.autograd.grad((out * grad).sum(), leaves)
    got = causal_conv1d_backward_ref(grad, x.detach(), weight.detach(), bias.detach(),
                                     None if cond_bias is None else cond_bias.detach(), 2, gated)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def _backends():
    return ["torch"] + (["triton"] if triton_device() == "cpu" else [])  # triton: the interpreter on CPU


@pytest.mark.parametrize("backend, k, dilation, gated", [
    ("torch", 2, 1, True), ("torch", 3, 2, False), ("torch", 4, 5, True),
    *[(b, 3, 5, True) for b in _backends()[1:]],
])
def test_causality_jacobian(backend, k, dilation, gated):
    """d out[:, :, t] / d x[:, :, s] is exactly zero for every s > t (and for s before the receptive
    field), and not zero at s = t."""
    length = 12
    x = torch.randn(1, 3, length)
    weight, bias = torch.randn(4, 3, k), torch.randn(4)
    with use_backend(backend):
        if backend == "torch":
            jacobian = torch.autograd.functional.jacobian(lambda v: causal_conv1d(v, weight, bias, dilation, gated), x)
            jacobian = jacobian[0, :, :, 0].abs().sum((0, 2))  # (Cout, T, Cin, T) -> (T_out, T_in)
        else:  # one backward per output position (the interpreter is slow): rows of |J| summed over channels
            x.requires_grad_()
            out = causal_conv1d(x, weight, bias, dilation, gated)
            jacobian = torch.stack([torch.autograd.grad(out[..., t].sum(), x, retain_graph=True)[0][0].abs().sum(0)
                                    for t in range(length)])
    for t in range(length):
        assert (jacobian[t, t + 1:] == 0).all(), f"output {t} depends on later inputs"
        assert (jacobian[t, :max(0, t - (k - 1) * dilation)] == 0).all()
        assert jacobian[t, t] > 0


def test_registered_op_matches_reference_and_opchecks():
    x, weight, bias, cond = torch.randn(2, 3, 7), torch.randn(4, 3, 2), torch.randn(4), torch.randn(2, 4)
    op = torch.ops.genkernels.causal_conv1d.default
    torch.testing.assert_close(op(x, weight, bias, cond, 2, True), causal_conv1d_ref(x, weight, bias, 2, True, cond))
    quick = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(op, (x, weight, bias, cond, 2, True), test_utils=quick)
    torch.library.opcheck(torch.ops.genkernels.causal_conv1d_backward.default,
                          (torch.randn(2, 2, 7), x, weight, bias, cond, 2, True), test_utils=quick)


def test_torch_compile_fullgraph_forward_backward():
    """The registered ops trace with no graph break (aot_eager: the graph, not inductor's codegen)."""
    torch._dynamo.reset()
    leaves = [t.requires_grad_() for t in (torch.randn(2, 3, 7), torch.randn(4, 3, 2), torch.randn(4),
                                           torch.randn(2, 4))]

    def f(x, weight, bias, cond):
        return causal_conv1d(x, weight, bias, 2, gated=True, cond=cond).square().sum()

    eager = torch.autograd.grad(f(*leaves), leaves)
    compiled = torch.autograd.grad(torch.compile(f, fullgraph=True, backend="aot_eager")(*leaves), leaves)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("call, error, match", [
    (lambda x, w: causal_conv1d(x[0], w), ValueError, "x must be a 3D"),
    (lambda x, w: causal_conv1d(x, w[..., 0]), ValueError, "weight must be a 3D"),
    (lambda x, w: causal_conv1d(x[:, :2], w), ValueError, "input channels"),
    (lambda x, w: causal_conv1d(x, w[..., :0]), ValueError, "kernel size"),
    (lambda x, w: causal_conv1d(x, w, dilation=0), ValueError, "dilation must be >= 1"),
    (lambda x, w: causal_conv1d(x, w, dilation=1.0), TypeError, "dilation must be an int"),
    (lambda x, w: causal_conv1d(x, w[:5], gated=True), ValueError, "even number"),
    (lambda x, w: causal_conv1d(x, w, bias=torch.zeros(5)), ValueError, "bias must have shape"),
    (lambda x, w: causal_conv1d(x, w, cond=torch.zeros(1, 6)), ValueError, r"cond must have shape \(2, 6\)"),
    (lambda x, w: causal_conv1d(x, w, cond=torch.zeros(2, 6, dtype=torch.float64)), TypeError,
     "cond must have x's dtype"),
    (lambda x, w: causal_conv1d(x, w, cond=torch.zeros(2, 6, device="meta")), ValueError, "cond must be on x's device"),
    (lambda x, w: causal_conv1d(x, w.double()), TypeError, "weight must have x's dtype"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.randn(2, 3, 8), torch.randn(6, 3, 2))


@pytest.mark.skipif(triton_device() != "cpu", reason="the triton backend on CPU tensors needs --triton-interpret")
def test_triton_rejects_float64():
    with use_backend("triton"), pytest.raises(TypeError, match="dtype"):
        causal_conv1d(torch.randn(1, 3, 5, dtype=torch.float64), torch.randn(2, 3, 2, dtype=torch.float64))
