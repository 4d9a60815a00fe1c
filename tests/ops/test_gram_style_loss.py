"""gram_style_loss: the fused Gram-matrix style loss against the autograd reference in float64 under
the 2x rule, loss and both gradients (features, target), fp32/fp16/bf16, (C, C) and (B, C, C)
targets, asymmetric targets, every normalisation; what the backward keeps; NaN; opcheck, compile
and errors."""
import pytest
import torch

from genkernels.ops import gram_matrix, gram_style_loss
from genkernels.ops.gram_style_loss import (
    gram_matrix_ref,
    gram_style_loss_backward_op,
    gram_style_loss_op,
    gram_style_loss_ref,
)
from genkernels.testing import assert_close_2x
from tests.helpers import DTYPES

CASES = [  # (B, C, H, W, target "cc" | "bcc", normalize)
    (2, 16, 9, 11, "cc", "chw"),
    (3, 8, 5, 7, "bcc", "hw"),
    (1, 33, 4, 4, "cc", "none"),
]


def _inputs(b, c, h, w, target, dtype, seed=0, symmetric=True):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(b, c, h, w, generator=g).relu()  # non-negative, like ReLU features
    other = gram_matrix_ref(torch.randn(1, c, h, w, generator=g).relu()).squeeze(0)  # (C, C)
    if not symmetric:
        other = other + 0.1 * other.abs().mean() * torch.randn(c, c, generator=g)
    t = other.expand(b, c, c).clone() if target == "bcc" else other
    return features.to(dtype).requires_grad_(True), t.to(dtype).requires_grad_(True)


def _run(fn, f, t, normalize, weight=3.0):
    loss = fn(f, t, weight, normalize)
    return (loss, *torch.autograd.grad(loss, [f, t]))


def _check(f, t, normalize, label):
    fast = _run(gram_style_loss, f, t, normalize)
    leaf = lambda x: x.detach().double().requires_grad_(True)  # noqa: E731
    truth = _run(gram_style_loss_ref, leaf(f), leaf(t), normalize)
    lowp = _run(gram_style_loss_ref, f, t, normalize)
    for name, a, tr, r in zip(["loss", "grad_features", "grad_target"], fast, truth, lowp):
        assert a.shape == tr.shape
        if a.dim() < 3:  # the loss and a (C, C) target gradient: one sample
            a, tr, r = a[None], tr[None], r[None]
        assert_close_2x(a, tr, r, name=f"{name} [{label}]")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_reference(dtype, case):
    *shape, target, normalize = case
    f, t = _inputs(*shape, target, dtype)
    _check(f, t, normalize, f"{dtype}, {case}")
    assert gram_style_loss(f, t, 1.0, normalize).dtype == torch.promote_types(dtype, torch.float32)
    assert gram_style_loss(f, t).grad_fn is not None


@pytest.mark.parametrize("target", ["cc", "bcc"])
def test_asymmetric_target(target):
    """A target that is no Gram matrix (asymmetric): dL/dF uses D + D^T, not 2 D."""
    f, t = _inputs(2, 6, 5, 5, target, torch.float32, symmetric=False)
    _check(f, t, "chw", f"asymmetric {target}")


def test_gram_matrix_matches_reference():
    f, _ = _inputs(2, 7, 6, 5, "cc", torch.float32)
    torch.testing.assert_close(gram_matrix(f), gram_matrix_ref(f))
    torch.testing.assert_close(gram_matrix(f, "hw"), gram_matrix_ref(f, "hw"))


def test_fp16_large_map_does_not_overflow():
    """F F^T of a 128x128 map sums 16384 products: over fp16's 65504 before a separate division."""
    f = torch.full((1, 4, 128, 128), 3.0, dtype=torch.float16)
    g = gram_matrix(f)
    assert torch.isfinite(g).all() and torch.allclose(g.float(), torch.full((1, 4, 4), 9.0 / 4))
    assert torch.isfinite(gram_style_loss(f.requires_grad_(True), g[0])).all()


def test_backward_keeps_features_and_difference_only():
    f, t = _inputs(2, 8, 6, 6, "cc", torch.float32)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x) or x, lambda x: x):
        loss = gram_style_loss(f, t)
    assert sorted(tuple(s.shape) for s in saved) == [(2, 8, 6, 6), (2, 8, 8)]
    loss.backward()


def test_nan_propagates():
    f, t = _inputs(1, 4, 3, 3, "cc", torch.float32)
    f = f.detach().clone()
    f[0, 1, 2, 2] = float("nan")
    f.requires_grad_(True)
    loss = gram_style_loss(f, t)
    (grad,) = torch.autograd.grad(loss, f)
    assert torch.isnan(loss) and torch.isnan(grad).any()


def test_opcheck():
    f, t = _inputs(2, 4, 3, 5, "cc", torch.float32)
    torch.library.opcheck(gram_style_loss_op.registered, (f, t, 1.5, 1 / 60))
    torch.library.opcheck(gram_style_loss_op.registered, (f, t.detach().expand(2, 4, 4).clone(), 1.5, 1 / 60))
    _, diff = gram_style_loss_op(f.detach(), t.detach(), 1.5, 1 / 60)
    for target_batched, need_features, need_target in ((False, True, True), (True, True, False), (False, False, True)):
        torch.library.opcheck(gram_style_loss_backward_op.registered,
                              (torch.tensor(2.0), f.detach(), diff, 1.5, 1 / 60, target_batched, need_features,
                               need_target))


def test_torch_compile_fullgraph():
    f, t = _inputs(2, 4, 3, 5, "cc", torch.float32)
    step = lambda f, t: gram_style_loss(f, t, 2.0)  # noqa: E731
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    eager = torch.autograd.grad(step(f, t), [f, t])
    for a, e in zip(torch.autograd.grad(compiled(f, t), [f, t]), eager):
        torch.testing.assert_close(a, e)


def test_errors_name_the_argument():
    f, t = torch.zeros(2, 3, 4, 4), torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"features must be \(B, C, H, W\)"):
        gram_style_loss(torch.zeros(3, 4, 4), t)
    with pytest.raises(TypeError, match="features must be a floating-point tensor"):
        gram_style_loss(f.long(), t)
    with pytest.raises(ValueError, match=r"target_gram must be \(C, C\) = \(3, 3\)"):
        gram_style_loss(f, torch.zeros(4, 4))
    with pytest.raises(TypeError, match="target_gram must be a torch.Tensor"):
        gram_style_loss(f, [[0.0]])
    with pytest.raises(ValueError, match="normalize must be one of"):
        gram_style_loss(f, t, normalize="c")
    with pytest.raises(TypeError, match="weight must be a float"):
        gram_style_loss(f, t, weight="1")
