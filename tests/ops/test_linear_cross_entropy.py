"""linear_cross_entropy: the chunked fused linear + cross-entropy against F.cross_entropy on the
materialised logits in float64, under the 2x rule, loss and every gradient (hidden, weight, bias),
fp32/fp16/bf16, chunks that do not divide N, odd vocabularies; ignore_index, label smoothing, NaN,
the largest tensor it allocates vs the materialised logits, opcheck, compile and errors."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from genkernels.ops import linear_cross_entropy
from genkernels.ops.linear_cross_entropy import (
    _backward_chunks,
    _forward,
    linear_cross_entropy_backward_op,
    linear_cross_entropy_op,
    linear_cross_entropy_ref,
)
from genkernels.testing import assert_close_2x
from tests.helpers import DTYPES

CASES = [  # (N, D, V, chunk_size, label_smoothing, bias)
    (37, 16, 101, 10, 0.0, False),
    (20, 33, 257, 7, 0.1, True),
    (64, 7, 1000, None, 0.0, True),
]


def _inputs(n, d, v, dtype, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g).to(dtype).requires_grad_(True)
    w = (torch.randn(v, d, generator=g) / d ** 0.5).to(dtype).requires_grad_(True)
    b = torch.randn(v, generator=g).to(dtype).requires_grad_(True) if bias else None
    t = torch.randint(0, v, (n,), generator=g)
    t[::5] = -100  # ignored rows
    return h, w, b, t


def _call(fn, h, w, b, t, ls, chunk=None, in_forward=True):
    if fn is linear_cross_entropy:
        loss = fn(h, w, t, bias=b, label_smoothing=ls, chunk_size=chunk, backward_in_forward=in_forward)
    else:
        loss = fn(h, w, t, b, label_smoothing=ls)
    params = [h, w] + ([b] if b is not None else [])
    return (loss, *torch.autograd.grad(loss, params))


@pytest.mark.parametrize("in_forward", [True, False], ids=["grads_in_forward", "recompute"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_reference(dtype, case, in_forward):
    n, d, v, chunk, ls, bias = case
    h, w, b, t = _inputs(n, d, v, dtype, bias)
    fast = _call(linear_cross_entropy, h, w, b, t, ls, chunk, in_forward)
    leaf = lambda x: x.detach().double().requires_grad_(True) if x is not None else None  # noqa: E731
    truth = _call(linear_cross_entropy_ref, leaf(h), leaf(w), leaf(b), t, ls)
    lowp = _call(linear_cross_entropy_ref, h, w, b, t, ls)
    scales = _term_scales(h, w, b, t, ls)
    names = ["loss", "grad_hidden", "grad_weight", "grad_bias"]
    for name, a, tr, r in zip(names, fast, truth, lowp):
        assert a.shape == tr.shape and a.dtype == r.dtype
        if a.dim() < 2:  # the loss, and the (V,) bias gradient as one sample
            a, tr, r = a[None], tr[None], r[None]
        assert_close_2x(a, tr, r, name=f"{name} [{dtype}, {case}]", term_scale=scales.get(name))


def _term_scales(h, w, b, t, ls):
    """|terms| of the gradients' sums (float64): d logits = (softmax - (1 - ls) onehot - ls / V) / count
    cancels in the sums over rows (weight, bias) and over the vocabulary (hidden), so a correct
    float32 sum is off by ulps of its terms, not of the result."""
    h64, w64 = h.detach().double(), w.detach().double()
    logits = F.linear(h64, w64, b.detach().double() if b is not None else None)
    valid = t != -100
    v = w.shape[0]
    dl = torch.softmax(logits, -1) - ls / v
    dl[valid, t[valid]] -= 1 - ls
    dl = (dl * valid[:, None] / valid.sum()).abs()
    return {"grad_hidden": dl @ w64.abs(), "grad_weight": dl.T @ h64.abs(), "grad_bias": dl.sum(0)[None]}


def test_ignored_rows_contribute_nothing():
    h, w, b, t = _inputs(30, 8, 50, torch.float32, True, seed=3)
    keep = t != -100
    h2 = h.detach().clone()
    h2[~keep] = 1e4 * torch.randn(int((~keep).sum()), 8)  # garbage in ignored rows changes nothing
    h2.requires_grad_(True)
    full = _call(linear_cross_entropy, h2, w, b, t, 0.1, 4)
    sub_h = h.detach()[keep].requires_grad_(True)
    sub = _call(linear_cross_entropy, sub_h, w, b, t[keep], 0.1, 4)
    torch.testing.assert_close(full[0], sub[0])
    assert torch.equal(full[1][~keep], torch.zeros_like(full[1][~keep]))
    torch.testing.assert_close(full[1][keep], sub[1])
    torch.testing.assert_close(full[2], sub[2])
    torch.testing.assert_close(full[3], sub[3])


def test_all_ignored_is_nan_and_nan_propagates():
    h, w, _, t = _inputs(6, 4, 9, torch.float32, False)
    assert torch.isnan(linear_cross_entropy(h, w, torch.full((6,), -100)))
    assert torch.isnan(linear_cross_entropy_ref(h, w, torch.full((6,), -100)))
    t = t.clone()
    t[1] = 3
    hn = h.detach().clone()
    hn[1, 0] = float("nan")
    assert torch.isnan(linear_cross_entropy(hn, w, t))


def test_float64_and_chunk_independence():
    h, w, b, t = _inputs(23, 5, 31, torch.float64, True)
    ref = _call(linear_cross_entropy_ref, h, w, b, t, 0.2)
    for chunk, in_forward in ((1, True), (4, False), (23, True), (100, False)):
        got = _call(linear_cross_entropy, h, w, b, t, 0.2, chunk, in_forward)
        for a, r in zip(got, ref):
            torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any aten op returns (bytes)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(o, torch.Tensor):
                self.largest = max(self.largest, o.numel() * o.element_size())
        return out


def test_never_materialises_the_logits():
    n, d, v = 1024, 16, 3001
    h, w, _, t = _inputs(n, d, v, torch.float32, False)
    h, w = h.detach(), w.detach()
    with _LargestTensor() as fused:
        loss, lse, *_ = _forward(h, w, None, t, -100, 0.0, 64, False)
        _backward_chunks(torch.ones(()), h, w, None, t, lse, -100, 0.0, 64)
    with _LargestTensor() as fused_grads:
        loss2, *_ = _forward(h, w, None, t, -100, 0.0, 64, True)
    hr, wr = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
    with _LargestTensor() as materialised:
        ref = linear_cross_entropy_ref(hr, wr, t)
        torch.autograd.grad(ref, [hr, wr])
    assert materialised.largest >= n * v * 4
    assert fused.largest * 4 <= materialised.largest, (fused.largest, materialised.largest)
    assert fused_grads.largest * 4 <= materialised.largest, (fused_grads.largest, materialised.largest)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(loss2, ref)


def test_opcheck():
    h, w, b, t = _inputs(9, 4, 13, torch.float32, True)
    torch.library.opcheck(linear_cross_entropy_op.registered, (h, w, b, t, -100, 0.1, 4, False))
    torch.library.opcheck(linear_cross_entropy_op.registered, (h, w, None, t, -100, 0.0, 3, False))
    torch.library.opcheck(linear_cross_entropy_op.registered, (h, w, b, t, -100, 0.1, 4, True))
    _, lse, *_ = linear_cross_entropy_op(h.detach(), w.detach(), b.detach(), t, -100, 0.1, 4, False)
    torch.library.opcheck(linear_cross_entropy_backward_op.registered,
                          (torch.tensor(1.5), h.detach(), w.detach(), b.detach(), t, lse, -100, 0.1, 4))


def test_torch_compile_fullgraph():
    h, w, b, t = _inputs(9, 4, 13, torch.float32, True)
    step = lambda h, w, b: linear_cross_entropy(h, w, t, bias=b, chunk_size=4)  # noqa: E731
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    eager = torch.autograd.grad(step(h, w, b), [h, w, b])
    for a, e in zip(torch.autograd.grad(compiled(h, w, b), [h, w, b]), eager):
        torch.testing.assert_close(a, e)


def test_errors_name_the_argument():
    h, w, t = torch.zeros(4, 3), torch.zeros(5, 3), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"hidden must be \(N, D\)"):
        linear_cross_entropy(torch.zeros(2, 4, 3), w, t)
    with pytest.raises(ValueError, match=r"weight must be \(V, D\) with D = 3"):
        linear_cross_entropy(h, torch.zeros(5, 4), t)
    with pytest.raises(TypeError, match="weight must have hidden's dtype"):
        linear_cross_entropy(h, w.double(), t)
    with pytest.raises(TypeError, match="targets must be an int64 tensor"):
        linear_cross_entropy(h, w, t.int())
    with pytest.raises(ValueError, match=r"targets must be \(N,\)"):
        linear_cross_entropy(h, w, t[:3])
    with pytest.raises(ValueError, match=r"targets must lie in \[0, V = 5\)"):
        linear_cross_entropy(h, w, torch.tensor([0, 1, 5, 2]))
    with pytest.raises(ValueError, match=r"bias must be \(V,\)"):
        linear_cross_entropy(h, w, t, bias=torch.zeros(4))
    with pytest.raises(ValueError, match="label_smoothing must be a float in"):
        linear_cross_entropy(h, w, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        linear_cross_entropy(h, w, t, chunk_size=0)
    with pytest.raises(TypeError, match="backward_in_forward must be a bool"):
        linear_cross_entropy(h, w, t, backward_in_forward=1)
