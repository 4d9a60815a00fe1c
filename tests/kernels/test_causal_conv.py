"""causal_conv1d's Triton kernels (the interpreter on CPU, tiny shapes) against a float64 reference
with the 2x rule, forward and every gradient (x, weight, bias, cond): kernel sizes 1..4, dilations
1, 2, 5 (also past the sequence length), odd lengths and channel counts, batch 1, fp32 / fp16 /
bf16; plus an ahead-of-time compile of the kernels for sm_90 (no GPU needed)."""
import os

import pytest
import torch
import torch.nn.functional as F

from genkernels import use_backend
from genkernels.ops.causal_conv1d import causal_conv1d, causal_conv1d_ref
from genkernels.testing import assert_close_2x
from tests.helpers import rerun_without_interpreter, triton_test


def _inputs(batch, cin, cout, k, length, gated, cond, dtype):
    conv_out = 2 * cout if gated else cout
    x = torch.randn(batch, cin, length)
    weight = torch.randn(conv_out, cin, k) / (cin * k) ** 0.5
    bias = torch.randn(conv_out)
    cond_bias = torch.randn(batch, conv_out) if cond else None
    return [t.to(dtype).requires_grad_() if t is not None else None for t in (x, weight, bias, cond_bias)]


def _outputs_and_grads(fn, leaves, grad_out, dtype=None, **kwargs):
    if dtype is not None:
        leaves = [None if t is None else t.detach().to(dtype).requires_grad_() for t in leaves]
    x, weight, bias, cond = leaves
    out = fn(x, weight, bias, cond=cond, **kwargs)
    grads = torch.autograd.grad((out.double() * grad_out).sum(), [t for t in leaves if t is not None])
    return out, grads


def _term_scales(leaves, grad_out, dilation, gated):
    """dweight, dbias and dcond sum over every position, terms that largely cancel: a correct fp32
    kernel is off by ulps of sum |terms| (assert_close_2x's term_scale). Their magnitudes, float64."""
    x, weight, bias, cond = [None if t is None else t.detach().double() for t in leaves]
    history = (weight.shape[-1] - 1) * dilation
    pre = F.conv1d(F.pad(x, (history, 0)), weight, bias, dilation=dilation).requires_grad_()
    if gated:
        full = pre + cond[:, :, None] if cond is not None else pre
        a, b = full.chunk(2, dim=1)
        out = torch.tanh(a) * torch.sigmoid(b)
    else:
        out = pre
    (dpre,) = torch.autograd.grad((out * grad_out).sum(), (pre,))
    dpre = dpre.abs()
    dweight = torch.nn.grad.conv1d_weight(F.pad(x.abs(), (history, 0)), weight.shape, dpre, dilation=dilation)
    return {"dweight": dweight, "dbias": dpre.sum((0, 2)), "dcond": dpre.sum(2)}


def check_against_reference(batch, cin, cout, k, length, dilation, dtype=torch.float32, gated=False, cond=False):
    leaves = _inputs(batch, cin, cout, k, length, gated, cond, dtype)
    grad_out = torch.randn(batch, cout, length, dtype=torch.float64)
    with use_backend("triton"):
        out, grads = _outputs_and_grads(causal_conv1d, leaves, grad_out, dilation=dilation, gated=gated)
    truth = _outputs_and_grads(causal_conv1d_ref, leaves, grad_out, torch.float64, dilation=dilation, gated=gated)
    lowp = _outputs_and_grads(causal_conv1d_ref, leaves, grad_out, dtype, dilation=dilation, gated=gated)
    assert out.shape == truth[0].shape == (batch, cout, length) and out.dtype == dtype
    assert_close_2x(out, truth[0], lowp[0], name="out")
    scales = _term_scales(leaves, grad_out, dilation, gated)
    for name, grad, t, r in zip(("dx", "dweight", "dbias", "dcond"), grads, truth[1], lowp[1]):
        assert grad.shape == t.shape and grad.dtype == dtype
        assert_close_2x(grad, t, r, name=name, term_scale=scales.get(name))


# ----------------------------------------------------------------------------------------------
# Triton kernels in the interpreter
# ----------------------------------------------------------------------------------------------
@triton_test
@pytest.mark.parametrize("batch, cin, cout, k, length, dilation, gated, cond", [
    (2, 3, 5, 1, 7, 1, False, False),    # K = 1: a 1x1 conv, no history
    (2, 3, 3, 2, 11, 1, True, True),
    (1, 5, 4, 3, 13, 2, True, False),    # batch 1
    (2, 4, 7, 4, 17, 5, False, True),    # cond without the gate: a per-sample bias
    (1, 7, 3, 3, 9, 5, True, True),      # history (10) longer than the sequence
])
def test_triton_matches_reference(batch, cin, cout, k, length, dilation, gated, cond):
    check_against_reference(batch, cin, cout, k, length, dilation, gated=gated, cond=cond)


@triton_test
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_low_precision(dtype):
    check_against_reference(2, 5, 3, 2, 15, 2, dtype, gated=True, cond=True)


@triton_test
def test_triton_many_channels_and_strided_input():
    """More channels than one tile (K and N loops), a non-contiguous x, and a multi-slice dW sum."""
    x = torch.randn(1, 40, 2 * 37)[..., ::2].requires_grad_()
    weight = (torch.randn(70, 40, 2) / 10).requires_grad_()
    grad_out = torch.randn(1, 35, 37)
    with use_backend("triton"):
        out = causal_conv1d(x, weight, None, dilation=3, gated=True)
        dx, dw = torch.autograd.grad((out * grad_out).sum(), (x, weight))
    x64, weight64 = (t.detach().double().requires_grad_() for t in (x, weight))  # float64: no TF32 in cuDNN
    ref = causal_conv1d_ref(x64, weight64, None, 3, True)
    rdx, rdw = torch.autograd.grad((ref * grad_out.double()).sum(), (x64, weight64))
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dx.double(), rdx, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dw.double(), rdw, rtol=1e-4, atol=1e-5)


@triton_test
def test_triton_backward_is_deterministic_and_causal():
    """Two backward passes agree bit for bit; output t gets exactly zero gradient from inputs > t."""
    x = torch.randn(1, 3, 12, requires_grad=True)
    weight = torch.randn(4, 3, 3, requires_grad=True)
    with use_backend("triton"):
        first = torch.autograd.grad(causal_conv1d(x, weight, dilation=2, gated=True)[..., 5].sum(), (x, weight))
        second = torch.autograd.grad(causal_conv1d(x, weight, dilation=2, gated=True)[..., 5].sum(), (x, weight))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert (first[0][..., 6:] == 0).all() and (first[0][..., 5] != 0).any()


@triton_test
def test_triton_propagates_nan():
    x = torch.randn(1, 2, 6)
    x[0, 1, 2] = float("nan")
    with use_backend("triton"):
        out = causal_conv1d(x, torch.randn(4, 2, 2), dilation=1, gated=True)
    assert out[..., :2].isfinite().all() and out[..., 2:4].isnan().all() and out[..., 4:].isfinite().all()


@triton_test
def test_triton_strided_bias_and_cond():
    x, weight = torch.randn(2, 3, 9), torch.randn(4, 3, 2)
    bias, cond = torch.randn(8)[::2], torch.randn(4, 2).T  # non-contiguous
    with use_backend("triton"):
        out = causal_conv1d(x, weight, bias, 2, gated=True, cond=cond)
    ref = causal_conv1d_ref(*(t.double() for t in (x, weight, bias)), 2, True, cond.double())  # no TF32
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Ahead-of-time compile for sm_90 (what the interpreter cannot see: tile shapes, shared memory)
# ----------------------------------------------------------------------------------------------
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"


@pytest.mark.skipif(not INTERPRETING, reason="the compile tests run in this process")
def test_compile_checks_in_a_fresh_process():
    rerun_without_interpreter(__file__)


@pytest.mark.skipif(INTERPRETING, reason="compiled in a fresh process (test_compile_checks_in_a_fresh_process)")
@pytest.mark.parametrize("tensor", ["*bf16", "*fp32"])
def test_kernels_compile_for_sm90(monkeypatch, tensor):
    import triton

    from genkernels.kernels import causal_conv as kernels

    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError:  # pragma: no cover - very old triton
        pytest.skip("this triton cannot compile ahead of time")
    from genkernels.kernels import _conv as conv_tiles

    monkeypatch.setattr(conv_tiles, "capability", lambda: (9, 0))

    def compile_(fn, constexprs, num_warps):
        pointers = {"X": tensor, "WT": tensor, "BIAS": tensor, "COND": tensor, "OUT": tensor, "DPRE": tensor,
                    "DWT": "*fp32"}
        signature = {name: "constexpr" if name in constexprs else pointers.get(name, "i32") for name in fn.arg_names}
        source = ASTSource(fn, signature, constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
        try:
            return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps))
        except RuntimeError as exc:  # no ptxas in this triton build
            if "ptxas" in str(exc).lower() and "not found" in str(exc).lower():
                pytest.skip(str(exc))
            raise

    tiles = kernels._tiles(16 * 16384, 64, 64)
    num_warps = tiles.pop("num_warps")
    for gated in (False, True):
        compiled = compile_(kernels._causal_conv_fwd_kernel,
                            dict(HAS_BIAS=True, GATED=gated, HAS_COND=gated, DOT_MODE=0, **tiles), num_warps)
        assert compiled.metadata.shared <= 227 * 1024
        if tensor == "*bf16":
            assert "mma" in compiled.asm["ptx"], "no tensor-core instructions"
    tiles = kernels._weight_grad_tiles(64, 128, 16 * 16384)
    num_warps = tiles.pop("num_warps")
    compiled = compile_(kernels._causal_conv_dw_kernel, dict(DOT_MODE=0, **tiles), num_warps)
    assert compiled.metadata.shared <= 227 * 1024

