"""masked_conv2d: the Triton kernels (interpreter, tiny shapes) against a float64 reference with the
2x rule, forward and every gradient (x, weight, bias, cond_bias), for masks A/B, colour groups and
the Gated PixelCNN stack masks; the reference op's backward; opcheck; validation."""

import pytest
import torch

from genkernels import use_backend
from genkernels.ops.masked_conv import (
    conv_mask,
    gate_ref,
    masked_conv2d,
    masked_conv2d_backward_ref,
    masked_conv2d_ref,
)
from genkernels.testing import assert_close_2x
from tests.helpers import triton_test

H, W = 5, 7


def _inputs(batch, cin, cout, k, gated, cond, dtype):
    conv_out = 2 * cout if gated else cout
    x = torch.randn(batch, cin, H, W)
    weight = torch.randn(conv_out, cin, k, k) / k
    bias = torch.randn(conv_out)
    cond_bias = torch.randn(batch, conv_out) if cond else None
    return [t.to(dtype).requires_grad_() if t is not None else None for t in (x, weight, bias, cond_bias)]


def _run(leaves, grad_out, **kwargs):
    x, weight, bias, cond_bias = leaves
    out = masked_conv2d(x, weight, bias, cond_bias=cond_bias, **kwargs)
    present = [t for t in leaves if t is not None]
    grads = torch.autograd.grad((out.double() * grad_out).sum(), present)
    return out, grads


def _reference(leaves, grad_out, dtype, **kwargs):
    cast = [None if t is None else t.detach().to(dtype).requires_grad_() for t in leaves]
    x, weight, bias, cond_bias = cast
    out = masked_conv2d_ref(x, weight, bias, cond_bias=cond_bias, **kwargs)
    grads = torch.autograd.grad((out.double() * grad_out).sum(), [t for t in cast if t is not None])
    return out, grads


def check_against_reference(batch, cin, cout, k, dtype=torch.float32, cond=False, **kwargs):
    leaves = _inputs(batch, cin, cout, k, kwargs.get("gated", False), cond, dtype)
    grad_out = torch.randn(batch, cout, H, W, dtype=torch.float64)
    with use_backend("triton"):
        out, grads = _run(leaves, grad_out, **kwargs)
    truth = _reference(leaves, grad_out, torch.float64, **kwargs)
    lowp = _reference(leaves, grad_out, dtype, **kwargs)
    assert out.shape == truth[0].shape and out.dtype == dtype
    assert_close_2x(out, truth[0], lowp[0], name="out")
    scales = _term_scales(leaves, grad_out, **kwargs)
    for name, grad, t, r in zip(("dx", "dweight", "dbias", "dcond"), grads, truth[1], lowp[1]):
        assert grad.shape == t.shape and grad.dtype == dtype
        assert_close_2x(grad, t, r, name=name, term_scale=scales.get(name))


def _term_scales(leaves, grad_out, mask_type="A", color_groups=1, gated=False):
    """dweight, dbias and dcond are sums over every pixel whose terms largely cancel: a correct
    fp32 kernel is then off by ulps of sum |terms|, not of the result (assert_close_2x's
    term_scale). The terms' magnitudes, in float64."""
    x, weight, bias, cond_bias = [None if t is None else t.detach().double() for t in leaves]
    k = weight.shape[-1]
    mask = conv_mask(weight.shape[0], weight.shape[1], k, mask_type, color_groups, gated).double()
    pre = torch.nn.functional.conv2d(x, weight * mask, bias, padding=k // 2).requires_grad_()
    out = gate_ref(pre, cond_bias) if gated else pre
    (dpre,) = torch.autograd.grad((out * grad_out).sum(), (pre,))
    dpre = dpre.abs()
    dweight = torch.nn.grad.conv2d_weight(x.abs(), weight.shape, dpre, padding=k // 2) * mask
    return {"dweight": dweight, "dbias": dpre.sum((0, 2, 3)), "dcond": dpre.sum((2, 3))}


# ----------------------------------------------------------------------------------------------
# Triton kernels in the interpreter
# ----------------------------------------------------------------------------------------------
@triton_test
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_triton_masks(k, mask_type):
    # k = 1 with mask "A" keeps no tap: the output is the bias and dx, dweight are zero
    check_against_reference(2, 3, 5, k, mask_type=mask_type)


@triton_test
@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("gated, cond", [(False, False), (True, False), (True, True)])
def test_triton_color_groups(mask_type, gated, cond):
    check_against_reference(2, 6, 3, 3, mask_type=mask_type, color_groups=3, gated=gated, cond=cond)


@triton_test
@pytest.mark.parametrize("mask_type", ["vA", "vB", "hA", "hB"])
def test_triton_stack_masks(mask_type):
    check_against_reference(1, 4, 4, 5, mask_type=mask_type, gated=True)


@triton_test
@pytest.mark.parametrize("mask_type", ["hA", "hB"])
@pytest.mark.parametrize("gated", [False, True])
def test_triton_horizontal_stack_color_groups(mask_type, gated):
    """The colour-group horizontal stack of GatedMaskedConv2d(color_groups=3)."""
    check_against_reference(1, 6, 6, 3, mask_type=mask_type, color_groups=3, gated=gated)


def test_horizontal_color_group_mask():
    """"hA"/"hB" with colour groups: the row left of the centre sees every channel; the centre tap
    sees earlier groups ("hA") or groups up to its own ("hB"); nothing else."""
    for mask_type, centre in (("hA", torch.tensor([[0., 0, 0], [1, 0, 0], [1, 1, 0]])),
                              ("hB", torch.tensor([[1., 0, 0], [1, 1, 0], [1, 1, 1]]))):
        mask = conv_mask(3, 3, 5, mask_type, color_groups=3)
        assert torch.equal(mask[:, :, 2, 2], centre)
        assert (mask[:, :, 2, :2] == 1).all()
        spatial = mask.clone()
        spatial[:, :, 2, :3] = 0
        assert not spatial.any()
        gated = conv_mask(6, 3, 5, mask_type, color_groups=3, gated=True)
        assert torch.equal(gated[:3, :, 2, 2], centre) and torch.equal(gated[3:, :, 2, 2], centre)


@triton_test
def test_triton_kernel_size_7_batch_1_odd_channels():
    check_against_reference(1, 7, 3, 7, mask_type="B", gated=True, cond=True)


@triton_test
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_low_precision(dtype):
    check_against_reference(2, 5, 3, 3, dtype, mask_type="B", gated=True, cond=True)


@triton_test
def test_triton_many_channels_and_strided_input():
    """More channels than one tile (K and N loops), and a non-contiguous x."""
    x = torch.randn(1, 40, H, W * 2)[..., ::2].requires_grad_()
    weight = (torch.randn(70, 40, 3, 3) / 10).requires_grad_()
    grad_out = torch.randn(1, 35, H, W)
    with use_backend("triton"):
        out = masked_conv2d(x, weight, None, "B", gated=True)
        dx, dw = torch.autograd.grad((out * grad_out).sum(), (x, weight))
    ref = masked_conv2d_ref(x, weight, None, "B", gated=True)
    rdx, rdw = torch.autograd.grad((ref * grad_out).sum(), (x, weight))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dx, rdx, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dw, rdw, rtol=1e-4, atol=1e-5)


@triton_test
def test_triton_masked_taps_hold_anything():
    """Weights at taps the mask drops never matter: NaN there changes nothing, and their gradient
    is exactly zero."""
    x = torch.randn(1, 3, H, W)
    weight = torch.randn(4, 3, 5, 5)
    dropped = conv_mask(4, 3, 5, "A") == 0
    poisoned = weight.masked_fill(dropped, float("nan")).requires_grad_()
    with use_backend("triton"):
        out = masked_conv2d(x, poisoned, None, "A")
        (dw,) = torch.autograd.grad(out.sum(), (poisoned,))
    torch.testing.assert_close(out, masked_conv2d_ref(x, weight, None, "A"))
    assert (dw[dropped] == 0).all()


# ----------------------------------------------------------------------------------------------
# Reference op (CPU path), registration, validation
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gated, cond, color_groups", [(False, False, 1), (True, True, 3)])
def test_backward_ref_matches_autograd(gated, cond, color_groups):
    x, weight, bias, cond_bias = _inputs(2, 3, 3, 3, gated, cond, torch.float64)
    out = masked_conv2d_ref(x, weight, bias, "A", color_groups, gated, cond_bias)
    grad = torch.randn_like(out)
    leaves = [t for t in (x, weight, bias, cond_bias) if t is not None]
    expected = torch.autograd.grad((out * grad).sum(), leaves)
    got = masked_conv2d_backward_ref(grad, x.detach(), weight.detach(), bias.detach(),
                                     None if cond_bias is None else cond_bias.detach(), "A", color_groups, gated)
    got = [g for g, t in zip(got, (x, weight, bias, cond_bias)) if t is not None]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_op_routes_match_reference_on_cpu():
    x, weight, bias, cond_bias = _inputs(2, 3, 2, 3, True, True, torch.float32)
    with use_backend("torch"):
        out = masked_conv2d(x, weight, bias, "B", gated=True, cond_bias=cond_bias)
    op = torch.ops.genkernels.masked_conv2d.default
    torch.testing.assert_close(op(x, weight, bias, cond_bias, "B", 1, True),
                               masked_conv2d_ref(x, weight, bias, "B", 1, True, cond_bias))
    assert out.shape == (2, 2, H, W)


def test_opcheck_reference_ops():
    x, weight, bias, cond_bias = (t.detach() for t in _inputs(1, 3, 2, 3, True, True, torch.float32))
    quick = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(torch.ops.genkernels.masked_conv2d.default, (x, weight, bias, cond_bias, "B", 1, True),
                          test_utils=quick)
    grad = torch.randn(1, 2, H, W)
    torch.library.opcheck(torch.ops.genkernels.masked_conv2d_backward.default,
                          (grad, x, weight, bias, cond_bias, "B", 1, True), test_utils=quick)


def test_mask_a_skips_the_centre_tap():
    from genkernels.ops.masked_conv import _plan

    for k in (3, 5, 7):
        plan = _plan(torch.zeros(2, 2, k, k), "A", 1, False)
        assert plan.rows.numel() == (k * k - 1) // 2
        dy, dx = plan.offsets[:, 0], plan.offsets[:, 1]
        assert ((dy < 0) | ((dy == 0) & (dx < 0))).all()  # strictly before the centre in raster order
        assert _plan(torch.zeros(2, 2, k, k), "B", 1, False).rows.numel() == (k * k + 1) // 2
        assert _plan(torch.zeros(3, 3, k, k), "A", 3, False).rows.numel() == (k * k + 1) // 2  # centre: R -> G -> B
        assert _plan(torch.zeros(3, 3, k, k), "hA", 1, False).rows.numel() == k // 2
        assert _plan(torch.zeros(3, 3, k, k), "hA", 3, False).rows.numel() == k // 2 + 1


@pytest.mark.parametrize("call, match", [
    (lambda x, w: masked_conv2d(x[0], w), "x must be a 4D"),
    (lambda x, w: masked_conv2d(x, w[..., :2, :2]), "kernel_size"),
    (lambda x, w: masked_conv2d(x, w, mask_type="C"), "mask_type"),
    (lambda x, w: masked_conv2d(x, w, color_groups=2), "color_groups"),
    (lambda x, w: masked_conv2d(x, w, mask_type="vA", color_groups=3), "color_groups"),
    (lambda x, w: masked_conv2d(x, w[:5], gated=True), "even number"),
    (lambda x, w: masked_conv2d(x, w, cond_bias=torch.zeros(2, 6)), "gated=True"),
    (lambda x, w: masked_conv2d(x, w, gated=True, cond_bias=torch.zeros(1, 6)), "cond_bias"),
    (lambda x, w: masked_conv2d(x, w, bias=torch.zeros(5)), "bias"),
    (lambda x, w: masked_conv2d(x[:, :2], w), "input channels"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.randn(2, 3, H, W), torch.randn(6, 3, 3, 3))


def test_torch_compile_fullgraph_forward_backward():
    """The registered ops trace with no graph break (aot_eager: the graph, not inductor's codegen)."""
    torch._dynamo.reset()
    x, weight, bias, cond_bias = _inputs(2, 3, 2, 3, True, True, torch.float32)

    def f(x, weight, bias, cond_bias):
        return masked_conv2d(x, weight, bias, "B", gated=True, cond_bias=cond_bias).square().sum()

    eager = torch.autograd.grad(f(x, weight, bias, cond_bias), (x, weight, bias, cond_bias))
    compiled_f = torch.compile(f, fullgraph=True, backend="aot_eager")
    compiled = torch.autograd.grad(compiled_f(x, weight, bias, cond_bias), (x, weight, bias, cond_bias))
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b)


@triton_test
def test_triton_rejects_unsupported_dtype():
    x, weight = torch.randn(1, 3, H, W, dtype=torch.float64), torch.randn(2, 3, 3, 3, dtype=torch.float64)
    with use_backend("triton"), pytest.raises(ValueError, match="dtype"):
        masked_conv2d(x, weight)
    with use_backend("triton"), pytest.raises(ValueError, match="dtype"):
        masked_conv2d(x.float(), weight.half())
