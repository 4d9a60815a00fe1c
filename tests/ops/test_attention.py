"""Fused attention: Triton kernels (interpreter, small shapes) against a float64 reference with the
2x rule, and the reference / SDPA path, validation, opcheck and torch.compile (always)."""

import math

import pytest
import torch
import torch.nn.functional as F

from genkernels import use_backend
from genkernels.ops.attention import attention, attention_decode, attention_ref, attention_varlen
from genkernels.testing import assert_close_2x
from tests.helpers import triton_device, triton_test



@pytest.fixture(params=["torch", "triton"])
def backend(request):
    """Both attention backends: the reference/SDPA path, and the Triton kernels (interpreter on CPU,
    else a GPU; skipped when neither is available), with tensors made on the backend's device."""
    if request.param == "triton":
        if triton_device() is None:
            pytest.skip("Triton kernels need a GPU, or the interpreter on CPU: run pytest with --triton-interpret")
        with torch.device(triton_device()), use_backend("triton"):
            yield "triton"
    else:
        yield "torch"


def _qkv(batch, seqlen_q, seqlen_k, heads, kv_heads, head_dim, dtype=torch.float32, layout="bshd"):
    def make(seqlen, h):
        shape = (batch, seqlen, h, head_dim) if layout == "bshd" else (batch, h, seqlen, head_dim)
        return torch.randn(shape, dtype=dtype).requires_grad_()

    return make(seqlen_q, heads), make(seqlen_k, kv_heads), make(seqlen_k, kv_heads)


def _loss(out, lse, dout, dlse):
    # Uses both outputs, so the lse gradient path is exercised; -inf rows (no key) are left out.
    finite = torch.isfinite(lse)
    return (out.double() * dout).sum() + (torch.where(finite, lse, 0).double() * dlse).sum()


def _run(q, k, v, dout, dlse, **kwargs):
    out, lse = attention(q, k, v, return_lse=True, **kwargs)
    grads = torch.autograd.grad(_loss(out, lse, dout, dlse), (q, k, v))
    return out, lse, grads


def _to_bshd(t, layout):
    return t if layout == "bshd" else t.transpose(1, 2)


def _reference(q, k, v, dout, dlse, layout="bshd", causal=False, key_padding_mask=None, dtype=None):
    """attention_ref and its autograd gradients with inputs cast to dtype, in the given layout."""
    leaves = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
    qb, kb, vb = (_to_bshd(t, layout) for t in leaves)
    out, lse = attention_ref(qb, kb, vb, causal=causal, key_padding_mask=key_padding_mask)
    out = _to_bshd(out, layout)  # back to the caller's layout
    grads = torch.autograd.grad(_loss(out, lse, dout, dlse), leaves)
    return out, lse, grads


def assert_lse_close(lse, truth, lowp):
    """The 2x rule on rows that see keys; rows that see none must be -inf exactly as in the truth."""
    empty = truth == float("-inf")
    assert torch.equal(lse == float("-inf"), empty), "lse: rows without keys must be -inf"
    assert_close_2x(lse[~empty], truth[~empty], lowp[~empty], name="lse", floor=1e-5)


def check_against_reference(q, k, v, layout="bshd", **kwargs):
    out_shape = q.shape
    dout = torch.randn(out_shape, dtype=torch.float64)
    lse_shape = (q.shape[0], q.shape[2 if layout == "bshd" else 1], q.shape[1 if layout == "bshd" else 2])
    dlse = torch.randn(lse_shape, dtype=torch.float64)
    with use_backend("triton"):
        out, lse, grads = _run(q, k, v, dout, dlse, layout=layout, **kwargs)
    ref_kwargs = {key: kwargs[key] for key in ("causal", "key_padding_mask") if key in kwargs}
    truth = _reference(q, k, v, dout, dlse, layout, dtype=torch.float64, **ref_kwargs)
    lowp = _reference(q, k, v, dout, dlse, layout, dtype=q.dtype, **ref_kwargs)
    assert out.shape == out_shape and out.dtype == q.dtype
    assert_close_2x(out, truth[0], lowp[0], name="out")
    assert_lse_close(lse, truth[1], lowp[1])
    for name, grad, t, r in zip(("dq", "dk", "dv"), grads, truth[2], lowp[2]):
        assert grad.shape == t.shape
        assert_close_2x(grad, t, r, name=name)
    return out, grads


# ----------------------------------------------------------------------------------------------
# Triton kernels in the interpreter
# ----------------------------------------------------------------------------------------------
@triton_test
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
def test_triton_forward_backward(dtype, causal):
    check_against_reference(*_qkv(2, 17, 17, 2, 2, 32, dtype), causal=causal)


@triton_test
def test_triton_bfloat16():
    check_against_reference(*_qkv(1, 19, 19, 2, 2, 32, torch.bfloat16), causal=True)


@triton_test
@pytest.mark.parametrize(
    "seqlen, heads, head_dim, causal",
    [(1, 2, 16, False), (129, 1, 16, True)],
    ids=["seq1", "seq129-causal"],
)
def test_triton_odd_lengths(seqlen, heads, head_dim, causal):
    check_against_reference(*_qkv(1, seqlen, seqlen, heads, heads, head_dim), causal=causal)


@triton_test
@pytest.mark.parametrize("head_dim, dtype, causal", [(40, torch.float16, False), (80, torch.float32, True)])
def test_triton_non_power_of_two_head_dim(head_dim, dtype, causal):
    check_against_reference(*_qkv(1, 21, 21, 2, 2, head_dim, dtype), causal=causal)


@triton_test
@pytest.mark.parametrize(
    "seqlen_q, seqlen_k, causal",
    [(7, 33, False), (5, 37, True), (33, 9, True)],
    ids=["short-q", "decode-like-causal", "rows-without-keys"],
)
def test_triton_cross_attention(seqlen_q, seqlen_k, causal):
    # (33, 9, causal): bottom-right alignment leaves the first 24 query rows without keys.
    out, _ = check_against_reference(*_qkv(2, seqlen_q, seqlen_k, 2, 2, 32), causal=causal)
    if seqlen_q > seqlen_k and causal:
        assert torch.all(out[:, : seqlen_q - seqlen_k] == 0)


@triton_test
@pytest.mark.parametrize("kv_heads", [2, 1], ids=["gqa", "mqa"])
def test_triton_grouped_query(kv_heads):
    check_against_reference(*_qkv(2, 19, 23, 4, kv_heads, 32), causal=True)


@triton_test
@pytest.mark.parametrize("causal", [False, True])
def test_triton_key_padding_mask(causal):
    q, k, v = _qkv(3, 18, 18, 2, 2, 32)
    mask = torch.rand(3, 18) < 0.3
    mask[0] = True  # a fully padded sequence: zeros out, zero gradients
    out, grads = check_against_reference(q, k, v, causal=causal, key_padding_mask=mask)
    assert torch.all(out[0] == 0) and torch.all(grads[1][0] == 0) and torch.all(grads[2][0] == 0)


@triton_test
def test_triton_bhsd_layout_in_place():
    q, k, v = _qkv(2, 19, 21, 4, 2, 32, torch.float16, layout="bhsd")
    out, _ = check_against_reference(q, k, v, layout="bhsd", causal=True)
    assert out.is_contiguous()  # written straight into (B, H, S, D), no transposed copy


@triton_test
def test_triton_backward_is_bitwise_repeatable():
    q, k, v = _qkv(1, 33, 33, 2, 1, 16)
    dout = torch.randn(q.shape)

    def grads():
        with use_backend("triton"):
            out = attention(q, k, v, causal=True)
            return torch.autograd.grad((out * dout).sum(), (q, k, v))

    for a, b in zip(grads(), grads()):
        assert torch.equal(a, b)


def _load_path_case(use_tma):
    """Inputs for the load-path tests: a ragged length, a non-power-of-two head dim and GQA; and
    whether the tiles must stay interpreter-small."""
    if use_tma and q_device().type == "cuda" and torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("tensor descriptors need sm_90 or newer")
    q, k, v = (t.detach() for t in _qkv(2, 37, 45, 4, 2, 40, torch.float16))
    return q, k, v, q.device.type == "cpu"


@triton_test
@pytest.mark.parametrize("use_tma", [False, True], ids=["pointers", "tensor-descriptors"])
def test_triton_forward_load_paths(use_tma):
    # Both ways of loading K/V: pointer arithmetic, and TMA tensor descriptors (an autotune
    # candidate on Hopper for dense inputs).
    from genkernels.kernels import attention as kernels

    q, k, v, small = _load_path_case(use_tma)
    out = torch.empty_like(q)
    lse = torch.empty(2, 4, 37)
    config = dict(BLOCK_M=16 if small else 64, BLOCK_N=16 if small else 32, num_warps=1 if small else 4,
                  num_stages=1 if small else 2, USE_TMA=use_tma)
    kernels.attention_forward(lambda f: f, q, k, v, out, lse, None, None, None, 2, 37, 45, 40 ** -0.5, True,
                              False, False, config=config)
    truth, truth_lse = attention_ref(q.double(), k.double(), v.double(), causal=True)
    lowp, _ = attention_ref(q, k, v, causal=True)
    assert_close_2x(out, truth, lowp, name="out")
    torch.testing.assert_close(lse.double(), truth_lse, rtol=1e-3, atol=1e-3)


@triton_test
@pytest.mark.parametrize("use_tma", [False, True], ids=["pointers", "tensor-descriptors"])
def test_triton_backward_load_paths(use_tma):
    from genkernels.kernels import attention as kernels

    q, k, v, small = _load_path_case(use_tma)
    dout = torch.randn(q.shape, dtype=torch.float16)
    out, lse = attention(q, k, v, causal=True, return_lse=True)
    config = dict(DKDV_M=16, DKDV_N=16 if small else 64, DQ_M=16 if small else 64, DQ_N=16,
                  num_warps=1 if small else 4, num_stages=1 if small else 2, USE_TMA=use_tma)
    grads = [torch.empty_like(t) for t in (q, k, v)]
    kernels.attention_backward(lambda f: f, dout, q, k, v, out, lse, None, torch.empty_like(lse), *grads,
                               None, None, None, 2, 37, 45, 40 ** -0.5, True, False, False, config=config)
    leaves = [t.double().requires_grad_() for t in (q, k, v)]
    truth = torch.autograd.grad(attention_ref(*leaves, causal=True)[0], leaves, dout.double())
    lowp_leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    lowp = torch.autograd.grad(attention_ref(*lowp_leaves, causal=True)[0], lowp_leaves, dout)
    for name, got, t, r in zip(("dq", "dk", "dv"), grads, truth, lowp):
        assert_close_2x(got, t, r, name=name)


def q_device():
    return torch.empty(0).device


@triton_test
def test_eager_route_matches_the_registered_op():
    # Public calls that need gradients run an autograd.Function over the same kernels when nothing
    # traces; the registered op (what torch.compile sees) must give the same bits.
    q, k, v = _qkv(2, 21, 21, 4, 2, 32, torch.float16)
    mask = torch.rand(2, 21) < 0.2
    dout = torch.randn(q.shape, dtype=torch.float16)
    with use_backend("triton"):
        eager = attention(q, k, v, causal=True, key_padding_mask=mask)
        op_out, _ = torch.ops.genkernels.attention_forward(q, k, v, mask, None, None, 21, 21, 32 ** -0.5, True, False)
        eager_grads = torch.autograd.grad(eager, (q, k, v), dout)
        op_grads = torch.autograd.grad(op_out, (q, k, v), dout)
    assert torch.equal(eager, op_out)
    for a, b in zip(eager_grads, op_grads):
        assert torch.equal(a, b)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_tensors_on_a_device_other_than_the_current_one():
    q, k, v = (torch.randn(2, 65, 4, 64, device="cuda:1", dtype=torch.float16, requires_grad=True) for _ in range(3))
    with torch.cuda.device(0), use_backend("triton"):
        out = attention(q, k, v, causal=True)
        grads = torch.autograd.grad(out.float().sum(), (q, k, v))
        decoded = attention_decode(q.detach()[:, -1:], k.detach(), v.detach(),
                                   torch.full((2,), 65, dtype=torch.int32, device="cuda:1"))
    expected = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)), is_causal=True).transpose(1, 2)
    torch.testing.assert_close(out, expected, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(decoded, expected[:, -1:], rtol=2e-3, atol=2e-3)
    assert all(g.device == q.device and torch.isfinite(g).all() for g in grads)


def _packed(lengths_q, lengths_k, heads, kv_heads, head_dim, dtype=torch.float32):
    cu = lambda lengths: torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)  # noqa: E731
    q = torch.randn(sum(lengths_q), heads, head_dim, dtype=dtype, requires_grad=True)
    k = torch.randn(sum(lengths_k), kv_heads, head_dim, dtype=dtype, requires_grad=True)
    v = torch.randn(sum(lengths_k), kv_heads, head_dim, dtype=dtype, requires_grad=True)
    return q, k, v, cu(lengths_q), cu(lengths_k)


def _varlen_truth(q, k, v, cu_q, cu_k, causal, dout, dlse, dtype):
    """Each packed sequence run through the dense reference on its own."""
    leaves = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
    outs, lses = [], []
    for b in range(cu_q.numel() - 1):
        sq, sk = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        out, lse = attention_ref(leaves[0][sq][None], leaves[1][sk][None], leaves[2][sk][None], causal=causal)
        outs.append(out[0])
        lses.append(lse[0])
    out, lse = torch.cat(outs), torch.cat(lses, dim=1)
    grads = torch.autograd.grad(_loss(out, lse, dout, dlse), leaves)
    return out, lse, grads


@triton_test
@pytest.mark.parametrize("causal", [False, True])
def test_triton_varlen(causal):
    # Lengths include 1 and 0 (an empty sequence), keys longer and shorter than queries.
    q, k, v, cu_q, cu_k = _packed([3, 17, 1, 0, 9], [5, 17, 9, 4, 2], 4, 2, 24)
    dout = torch.randn(q.shape, dtype=torch.float64)
    dlse = torch.randn(4, q.shape[0], dtype=torch.float64)
    with use_backend("triton"):
        out, lse = attention_varlen(q, k, v, cu_q, cu_k, 17, 17, causal=causal, return_lse=True)
        grads = torch.autograd.grad(_loss(out, lse, dout, dlse), (q, k, v))
    truth = _varlen_truth(q, k, v, cu_q, cu_k, causal, dout, dlse, torch.float64)
    lowp = _varlen_truth(q, k, v, cu_q, cu_k, causal, dout, dlse, torch.float32)
    assert_close_2x(out, truth[0], lowp[0], name="out")
    assert_lse_close(lse, truth[1], lowp[1])
    for name, grad, t, r in zip(("dq", "dk", "dv"), grads, truth[2], lowp[2]):
        assert_close_2x(grad, t, r, name=name)


@triton_test
def test_triton_empty_batch_launches_nothing():
    q, k, v = _qkv(0, 5, 5, 2, 2, 16)
    with use_backend("triton"):
        out, lse = attention(q, k, v, causal=True, return_lse=True)
        out.sum().backward()
        decoded = attention_decode(q.detach(), k.detach(), v.detach(), torch.zeros(0, dtype=torch.int32))
    assert out.shape == (0, 5, 2, 16) and lse.shape == (0, 2, 5) and decoded.shape == (0, 5, 2, 16)
    assert q.grad.shape == q.shape


# ----------------------------------------------------------------------------------------------
# Reference path (always runs)
# ----------------------------------------------------------------------------------------------
def test_reference_matches_naive_softmax():
    q, k, v = (t.detach().double() for t in _qkv(2, 6, 9, 2, 2, 16))
    out, lse = attention_ref(q, k, v, scale=0.3)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * 0.3
    expected = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(lse, scores.logsumexp(-1))


@pytest.mark.parametrize(
    "seqlen_q, seqlen_k, kv_heads, causal, masked",
    [(9, 9, 2, True, False), (9, 9, 1, False, True), (9, 9, 2, True, True), (4, 11, 2, True, False)],
)
def test_cpu_paths_match_reference(seqlen_q, seqlen_k, kv_heads, causal, masked):
    q, k, v = _qkv(2, seqlen_q, seqlen_k, 2, kv_heads, 16)
    mask = (torch.rand(2, seqlen_k) < 0.3) if masked else None
    expected, expected_lse = attention_ref(q, k, v, causal=causal, key_padding_mask=mask)
    sdpa_or_op = attention(q, k, v, causal=causal, key_padding_mask=mask)
    op_out, op_lse = attention(q, k, v, causal=causal, key_padding_mask=mask, return_lse=True)
    torch.testing.assert_close(sdpa_or_op, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(op_out, expected)
    # lse against an independent float64 truth: explicit scores, masked, then torch.logsumexp.
    truth_lse = _explicit_lse(q, k, causal, mask)
    torch.testing.assert_close(op_lse.double(), truth_lse, rtol=1e-6, atol=1e-6)
    # The explicit backward (op path) agrees with autograd through the reference.
    dout = torch.randn_like(op_out)
    got = torch.autograd.grad((op_out * dout).sum() + op_lse.sum(), (q, k, v))
    want = torch.autograd.grad((expected * dout).sum() + expected_lse.sum(), (q, k, v))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _explicit_lse(q, k, causal, mask, scale=None):
    """float64 log-sum-exp of the scores, written out independently of attention_ref: (B, Hq, Sq)."""
    q, k = q.detach().double(), k.detach().double()
    k = k.repeat_interleave(q.shape[2] // k.shape[2], dim=2)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    sq, sk = q.shape[1], k.shape[1]
    if causal:
        rows, cols = torch.arange(sq)[:, None], torch.arange(sk)[None, :]
        scores = scores.masked_fill(cols > rows + sk - sq, float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(mask[:, None, None, :], float("-inf"))
    return torch.logsumexp(scores, dim=-1)


def test_fully_masked_rows_are_zero_with_finite_gradients():
    q, k, v = _qkv(2, 5, 5, 2, 2, 16)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[1] = True
    for return_lse in (False, True):  # SDPA path and op path
        result = attention(q, k, v, key_padding_mask=mask, return_lse=return_lse)
        out = result[0] if return_lse else result
        assert torch.all(out[1] == 0)
        grads = torch.autograd.grad(out.sum(), (q, k, v))
        assert all(torch.isfinite(g).all() for g in grads)
        assert torch.all(grads[0][1] == 0)
    _, lse = attention(q, k, v, key_padding_mask=mask, return_lse=True)
    assert torch.all(lse[1] == float("-inf"))


def test_bhsd_layout_matches_bshd():
    q, k, v = _qkv(2, 7, 7, 4, 2, 16, layout="bhsd")
    out = attention(q, k, v, causal=True, layout="bhsd")
    expected = attention(*(t.transpose(1, 2) for t in (q, k, v)), causal=True).transpose(1, 2)
    torch.testing.assert_close(out, expected)


def test_sdpa_parity_for_gqa_and_scale():
    q, k, v = _qkv(2, 8, 8, 4, 2, 16)
    out = attention(q, k, v, causal=True, scale=0.2)
    expected = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, scale=0.2, enable_gqa=True
    ).transpose(1, 2)
    torch.testing.assert_close(out, expected)


def test_varlen_reference_matches_per_sequence():
    q, k, v, cu_q, cu_k = _packed([3, 1, 6], [4, 5, 6], 2, 1, 16)
    out, lse = attention_varlen(q, k, v, cu_q, cu_k, 6, 6, causal=True, return_lse=True)
    dout, dlse = torch.randn(q.shape, dtype=torch.float64), torch.randn(lse.shape, dtype=torch.float64)
    expected = _varlen_truth(q, k, v, cu_q, cu_k, True, dout, dlse, torch.float32)
    torch.testing.assert_close(out, expected[0])
    torch.testing.assert_close(lse, expected[1])
    grads = torch.autograd.grad(_loss(out, lse, dout, dlse), (q, k, v))
    for a, b in zip(grads, expected[2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_no_keys_gives_zeros():
    q, k, v = _qkv(2, 3, 0, 2, 2, 16)
    out, lse = attention(q, k, v, return_lse=True)
    assert torch.all(out == 0) and torch.all(lse == float("-inf"))


def _good():
    return _qkv(2, 4, 4, 2, 2, 16)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda q, k, v: attention(q[0], k, v), ValueError, "q must be a 4-d"),
        (lambda q, k, v: attention(q, k.half(), v), TypeError, "share a dtype"),
        (lambda q, k, v: attention(q.double(), k.double(), v.double()), TypeError, "q must be float16"),
        (lambda q, k, v: attention(q, k[..., :8], v[..., :8]), ValueError, "same head dim"),
        (lambda q, k, v: attention(q, k, v[:, :3]), ValueError, "k and v must have the same shape"),
        (lambda q, k, v: attention(q[:1], k, v), ValueError, "same batch size"),
        (lambda q, k, v: attention(q.repeat(1, 1, 3, 1)[:, :, :3], k, v), ValueError, "multiple"),
        (lambda q, k, v: attention(*[torch.randn(1, 2, 1, 300)] * 3), ValueError, "head dim of q"),
        (lambda q, k, v: attention(q, k, v, layout="sbhd"), ValueError, "layout"),
        (lambda q, k, v: attention(q, k, v, key_padding_mask=torch.zeros(2, 4)), TypeError, "key_padding_mask"),
        (lambda q, k, v: attention(q, k, v, key_padding_mask=torch.zeros(2, 5, dtype=torch.bool)), ValueError,
         "key_padding_mask must have shape"),
        (lambda q, k, v: attention("q", k, v), TypeError, "q must be a torch.Tensor"),
        (lambda q, k, v: attention_varlen(q[0], k[0], v[0], torch.tensor([0, 4]),
                                          torch.tensor([0, 4], dtype=torch.int32), 4, 4), TypeError, "cu_seqlens_q"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(make, error, match):
    q, k, v = _good()
    with pytest.raises(error, match=match):
        make(q, k, v)


# The full opcheck (with its ~10 s aot_dispatch_dynamic compile) on the main op; schema, fake
# tensors and autograd registration on the others.
QUICK_OPCHECK = ("test_schema", "test_autograd_registration", "test_faketensor")


def test_opcheck_reference_ops():
    q, k, v = _qkv(2, 5, 7, 4, 2, 16)
    mask = torch.rand(2, 7) < 0.3
    fwd = torch.ops.genkernels.attention_forward.default
    torch.library.opcheck(fwd, (q, k, v, mask, None, None, 5, 7, 0.25, True, False))
    qv, kv, vv, cu_q, cu_k = _packed([2, 3], [4, 3], 2, 1, 16)
    torch.library.opcheck(fwd, (qv, kv, vv, None, cu_q, cu_k, 3, 4, 0.25, True, False), test_utils=QUICK_OPCHECK)
    bhsd = [t.detach().transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v)]  # strided views
    torch.library.opcheck(fwd, (*bhsd, None, None, None, 5, 7, 0.25, False, False), test_utils=QUICK_OPCHECK)
    out, lse = fwd(q, k, v, mask, None, None, 5, 7, 0.25, True, False)
    bwd = torch.ops.genkernels.attention_backward.default
    torch.library.opcheck(
        bwd, (torch.randn_like(out), q.detach(), k.detach(), v.detach(), out.detach(), lse.detach(), None, mask,
              None, None, 5, 7, 0.25, True, False),
        test_utils=QUICK_OPCHECK,
    )


def test_torch_compile_fullgraph():
    def f(q, k, v):
        out = attention(q, k, v, causal=True)
        out2, lse = attention(q, k, v, return_lse=True)
        return out.sum() + out2.sum() + lse.sum()

    q, k, v = _qkv(1, 6, 6, 2, 1, 16)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    expected = torch.autograd.grad(f(q, k, v), (q, k, v))
    got = torch.autograd.grad(compiled(q, k, v), (q, k, v))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------------------------
# Bounds: no cu_seqlens value reads or writes outside the tensors
# ----------------------------------------------------------------------------------------------
GUARD = 5  # sentinel rows on each side of a guarded tensor


def _guarded(data, fill):
    """data copied into the middle of a buffer with GUARD rows of `fill` on each side (along dim 0);
    returns (buffer, view). A kernel that strays past the view reads `fill` or overwrites it."""
    buffer = torch.full((data.shape[0] + 2 * GUARD, *data.shape[1:]), fill, dtype=data.dtype)
    view = buffer[GUARD : GUARD + data.shape[0]]
    view.copy_(data)
    return buffer, view


def _guards_intact(buffer, fill):
    edges = torch.cat([buffer[:GUARD], buffer[-GUARD:]])
    return bool((edges == fill).all()) if fill == fill else bool(edges.isnan().all())


@triton_test
@pytest.mark.parametrize(
    "cu_q, cu_k",
    [([0, 4, 13], [0, 5, 9]), ([-3, 4, 9], [0, 5, 9]), ([0, 6, 2, 9], [0, 3, 20, 9]), ([0, 4, 9], [-7, 5, 30])],
    ids=["past-the-end", "negative-start", "decreasing", "bad-keys"],
)
def test_triton_varlen_offsets_stay_in_bounds(cu_q, cu_k):
    # The kernel-level guarantee for offsets the host cannot check (GPU-resident): called below the
    # public checks, with NaN guards around q/k/v and sentinel guards around out/lse.
    from genkernels.kernels import attention as kernels

    total_q, total_k, heads, dim = 9, 9, 2, 16
    (_, q), (_, k), (_, v) = (_guarded(torch.randn(total_q, heads, dim), float("nan")) for _ in range(3))
    out_buf, out = _guarded(torch.zeros(total_q, heads, dim), 7.0)
    lse_buf, lse_t = _guarded(torch.full((total_q, heads), float("-inf")), 7.0)
    lse = lse_t.t()  # (H, total_q) with the guards along the token axis
    cu_q, cu_k = (torch.tensor(c, dtype=torch.int32) for c in (cu_q, cu_k))
    batch = cu_q.numel() - 1
    kernels.attention_forward(lambda f: f, q[None], k[None], v[None], out[None], lse[None], None, cu_q, cu_k, batch,
                              16, 32, dim ** -0.5, True, False, varlen=True)
    assert _guards_intact(out_buf, 7.0) and _guards_intact(lse_buf, 7.0), "wrote outside out / lse"
    assert torch.isfinite(out).all(), "read outside q / k / v (the NaN guards)"
    # Each clamped sequence is ordinary attention over its clamped rows.
    for b in range(batch):
        q0 = min(max(int(cu_q[b]), 0), total_q)
        q1 = min(max(int(cu_q[b + 1]), q0), total_q)
        k0 = min(max(int(cu_k[b]), 0), total_k)
        k1 = min(max(int(cu_k[b + 1]), k0), total_k)
        if q1 > q0 and k1 > k0 and b == batch - 1:  # the last sequence is written last: no overlap
            expected = attention_ref(q[None, q0:q1].double(), k[None, k0:k1].double(), v[None, k0:k1].double(),
                                     causal=True)[0][0]
            torch.testing.assert_close(out[q0:q1].double(), expected, rtol=1e-4, atol=1e-4)


@triton_test
def test_triton_varlen_backward_offsets_stay_in_bounds():
    # The backward kernels bound the offsets the same way: q/k/v are views into NaN-guarded
    # buffers, so a read past the packed tokens would turn a gradient NaN.
    def guarded_leaf(n):
        buffer, _ = _guarded(torch.randn(n, 2, 16), float("nan"))
        return buffer.requires_grad_()[GUARD : GUARD + n]

    q, k, v = guarded_leaf(9), guarded_leaf(9), guarded_leaf(9)
    cu_q = torch.tensor([-3, 4, 13], dtype=torch.int32)
    cu_k = torch.tensor([0, 6, 2], dtype=torch.int32)
    dout = torch.randn(9, 2, 16)
    with use_backend("triton"):
        out, _ = torch.ops.genkernels.attention_forward(q, k, v, None, cu_q, cu_k, 16, 16, 0.25, True, False)
        grads = torch.autograd.grad((out * dout).sum(), (q, k, v))
    assert torch.isfinite(out).all()
    for name, grad in zip(("dq", "dk", "dv"), grads):
        assert torch.isfinite(grad).all(), f"{name}: read outside the packed tokens"


@triton_test
def test_triton_varlen_uncovered_rows_are_zero():
    # Offsets that cover only part of the packed tokens (the op below the public checks, as with
    # GPU-resident offsets): rows no sequence covers come back as zeros / -inf, not garbage.
    q, k, v, _, _ = _packed([5, 4], [5, 4], 2, 2, 16)
    cu = torch.tensor([0, 2, 2, 5], dtype=torch.int32)
    with use_backend("triton"), torch.no_grad():
        out, lse = torch.ops.genkernels.attention_forward(q, k, v, None, cu, cu, 3, 3, 0.25, False, False)
    assert torch.all(out[5:] == 0) and torch.all(lse[:, 5:] == float("-inf"))
    assert torch.isfinite(out).all() and torch.isfinite(lse[:, :5]).all()


@pytest.mark.parametrize(
    "cu_q, max_q, match",
    [
        ([0, 4, 13], 9, r"cu_seqlens_q must end at the number of tokens in q \(9\), got 13"),
        ([0, 4, 7], 9, r"cu_seqlens_q must end at the number of tokens in q \(9\), got 7"),
        ([1, 4, 9], 9, "cu_seqlens_q must start at 0, got 1"),
        ([0, 6, 2, 9], 9, r"cu_seqlens_q must be non-decreasing .* cu_seqlens_q\[1\] = 6 > cu_seqlens_q\[2\] = 2"),
        ([0, 4, 9], 4, r"max_seqlen_q must be at least the longest sequence \(5\), got 4"),
    ],
)
def test_varlen_offsets_checked_on_the_host(cu_q, max_q, match):
    q, k, v, _, cu_k = _packed([4, 5], [4, 5], 2, 2, 16)
    if len(cu_q) == 4:
        cu_k = torch.tensor([0, 4, 4, 9], dtype=torch.int32)
    with pytest.raises(ValueError, match=match):
        attention_varlen(q, k, v, torch.tensor(cu_q, dtype=torch.int32), cu_k, max_q, 9)


def test_varlen_key_offsets_checked_on_the_host():
    q, k, v, cu_q, _ = _packed([4, 5], [4, 5], 2, 2, 16)
    with pytest.raises(ValueError, match=r"cu_seqlens_k must end at the number of tokens in k \(9\), got 10"):
        attention_varlen(q, k, v, cu_q, torch.tensor([0, 4, 10], dtype=torch.int32), 5, 6)


def test_zero_length_sequences_and_batches(backend):
    with use_backend(backend):
        # a zero-length sequence among others: no rows for it, the others unaffected
        q, k, v, cu_q, cu_k = _packed([3, 0, 2], [4, 0, 2], 2, 1, 16)
        out = attention_varlen(q, k, v, cu_q, cu_k, 3, 4, causal=True)
        expected = torch.cat([attention(q[None, :3], k[None, :4], v[None, :4], causal=True)[0],
                              attention(q[None, 3:], k[None, 4:], v[None, 4:], causal=True)[0]])
        torch.testing.assert_close(out, expected)
        # a batch of zero sequences, and every sequence empty
        empty = torch.zeros(1, dtype=torch.int32)
        q0 = torch.randn(0, 2, 16)
        out0, lse0 = attention_varlen(q0, q0, q0, empty, empty, 0, 0, return_lse=True)
        assert out0.shape == (0, 2, 16) and lse0.shape == (2, 0)
        zeros = torch.zeros(3, dtype=torch.int32)
        assert attention_varlen(q0, q0, q0, zeros, zeros, 0, 0).shape == (0, 2, 16)


# ----------------------------------------------------------------------------------------------
# NaN propagates; masked garbage does not
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("return_lse", [False, True], ids=["default-route", "lse-route"])
def test_nan_query_row_gives_nan(backend, return_lse):
    q, k, v = (t.detach() for t in _qkv(2, 6, 6, 2, 2, 16))
    q[1, 3, 0, 5] = float("nan")
    with use_backend(backend):
        result = attention(q, k, v, causal=True, return_lse=return_lse)
    out = result[0] if return_lse else result
    assert out[1, 3, 0].isnan().all(), "a NaN query row must give NaN, not zeros"
    clean = torch.ones_like(out, dtype=torch.bool)
    clean[1, 3, 0] = False
    assert torch.isfinite(out[clean]).all()
    if return_lse:
        assert result[1][1, 0, 3].isnan()


def test_scale_must_be_a_number():
    q, k, v = _good()
    with pytest.raises(TypeError, match="scale must be a float"):
        attention(q, k, v, scale="0.1")
    with pytest.raises(TypeError, match="scale must be a float"):
        attention_varlen(q[0], k[0], v[0], *[torch.tensor([0, 4], dtype=torch.int32)] * 2, 4, 4, scale=True)


SCALES = [float("nan"), float("inf"), 0.0, -0.5]


def _check_scale_taken_as_given(scale):
    # A NaN scale gives NaN outputs like the reference, never the zeros SDPA's CPU kernel returns;
    # an inf scale gives what the reference gives; zero and negative scales are ordinary (if
    # unusual) softmax temperatures.
    q, k, v = _good()
    truth, _ = attention_ref(q.double(), k.double(), v.double(), scale=scale)
    out = attention(q, k, v, scale=scale)
    assert torch.equal(out.isnan(), truth.isnan())
    assert torch.allclose(out.double().nan_to_num(), truth.nan_to_num(), atol=1e-5)
    if math.isnan(scale):
        assert out.isnan().all()


@pytest.mark.parametrize("scale", SCALES)
def test_any_scale_is_taken_as_given(scale):
    _check_scale_taken_as_given(scale)


@triton_test
@pytest.mark.parametrize("scale", SCALES)
def test_triton_any_scale_is_taken_as_given(scale):
    _check_scale_taken_as_given(scale)


def _poisoned_masked_keys(case):
    """(q, k, v, kwargs, poisoned k, poisoned v, rows that see a poisoned key): NaN/inf stored at
    key positions that the listed rows do not see."""
    q, k, v = (t.detach() for t in _qkv(2, 9, 9, 2, 1, 16))
    k_bad, v_bad = k.clone(), v.clone()
    if case == "padding":
        mask = torch.zeros(2, 9, dtype=torch.bool)
        mask[0, 2] = mask[1, 6:] = True
        k_bad[mask], v_bad[mask] = float("nan"), float("inf")
        return q, k, v, dict(key_padding_mask=mask), k_bad, v_bad, None
    # causal: the last key is seen only by the last query row
    k_bad[:, -1], v_bad[:, -1] = float("nan"), float("nan")
    return q, k, v, dict(causal=True), k_bad, v_bad, -1


@pytest.mark.parametrize("case", ["padding", "causal"])
def test_nan_at_masked_keys_does_not_poison_other_rows(backend, case):
    q, k, v, kwargs, k_bad, v_bad, seeing_row = _poisoned_masked_keys(case)
    with use_backend(backend):
        expected = attention(q, k, v, **kwargs)  # clean K/V (masked positions hold ordinary values)
        got = attention(q, k_bad, v_bad, **kwargs)
        got_lse = attention(q, k_bad, v_bad, return_lse=True, **kwargs)
    rows = slice(None) if seeing_row is None else slice(0, seeing_row)
    for out in (got, got_lse[0]):
        assert torch.isfinite(out[:, rows]).all(), "NaN at a masked key reached an unmasked row"
        torch.testing.assert_close(out[:, rows], expected[:, rows], rtol=1e-5, atol=1e-5)
    if seeing_row is not None:
        assert got[:, seeing_row].isnan().all(), "the row that sees the NaN key must be NaN"


def test_nan_at_padded_keys_gives_finite_gradients(backend):
    q, k, v, kwargs, k_bad, v_bad, _ = _poisoned_masked_keys("padding")
    mask = kwargs["key_padding_mask"]
    dout = torch.randn(q.shape)

    def grads(k_, v_):
        leaves = [t.clone().requires_grad_() for t in (q, k_, v_)]
        with use_backend(backend):
            out, lse = attention(*leaves, return_lse=True, **kwargs)
        return torch.autograd.grad((out * dout).sum() + lse.sum(), leaves)

    clean, poisoned = grads(k, v), grads(k_bad, v_bad)
    for name, a, b in zip(("dq", "dk", "dv"), poisoned, clean):
        assert torch.isfinite(a).all(), f"{name}: NaN at a padded key leaked into the gradients"
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert torch.all(poisoned[1][mask] == 0) and torch.all(poisoned[2][mask] == 0)


def test_nan_in_another_packed_sequence_stays_there(backend):
    q, k, v, cu_q, cu_k = (t.detach() for t in _packed([4, 3, 5], [4, 6, 5], 2, 2, 16))
    k_bad, v_bad = k.clone(), v.clone()
    k_bad[4:10], v_bad[4:10] = float("nan"), float("nan")  # every key of sequence 1
    with use_backend(backend):
        expected = attention_varlen(q, k, v, cu_q, cu_k, 5, 6, causal=True)
        got = attention_varlen(q, k_bad, v_bad, cu_q, cu_k, 5, 6, causal=True)
    others = torch.ones(12, dtype=torch.bool)
    others[4:7] = False
    assert torch.isfinite(got[others]).all() and got[4:7].isnan().all()
    torch.testing.assert_close(got[others], expected[others], rtol=1e-5, atol=1e-5)


def test_fp16_reference_scores_do_not_overflow():
    # |q . k| = 16 * 72^2 = 82944 > 65504: fp16 scores would be inf; the reference accumulates in fp32.
    q = torch.full((1, 2, 1, 16), 72.0, dtype=torch.float16)
    k = torch.full((1, 3, 1, 16), 72.0, dtype=torch.float16)
    k[0, 1] = -72.0
    v = torch.randn(1, 3, 1, 16, dtype=torch.float16)
    out, lse = attention_ref(q, k, v)
    truth, truth_lse = attention_ref(q.double(), k.double(), v.double())
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    torch.testing.assert_close(out.double(), truth, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(lse.double(), truth_lse, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(attention(q, k, v).double(), truth, rtol=1e-3, atol=1e-3)


@triton_test
def test_return_lse_matches_float64_logsumexp():
    q, k, v = (t.detach() for t in _qkv(2, 13, 17, 4, 2, 16))
    mask = torch.rand(2, 17) < 0.3
    with use_backend("triton"):
        _, lse = attention(q, k, v, causal=True, key_padding_mask=mask, return_lse=True)
    truth = _explicit_lse(q, k, True, mask)
    finite = torch.isfinite(truth)
    assert torch.equal(torch.isfinite(lse), finite)
    torch.testing.assert_close(lse.double()[finite], truth[finite], rtol=1e-5, atol=1e-5)


def test_nan_below_the_causal_diagonal_gives_finite_dq_above_it(backend):
    # The last key (NaN in K and V) is seen only by the last query row: every other row's dQ must
    # stay finite and equal to the clean one (dK / dV are NaN: the last row's scores are NaN).
    q, k, v, kwargs, k_bad, v_bad, _ = _poisoned_masked_keys("causal")
    dout = torch.randn(q.shape)

    def dq(k_, v_):
        leaf = q.clone().requires_grad_()
        return torch.autograd.grad((attention(leaf, k_, v_, **kwargs) * dout).sum(), leaf)[0]

    clean, poisoned = dq(k, v), dq(k_bad, v_bad)
    assert torch.isfinite(poisoned[:, :-1]).all(), "NaN below the causal diagonal leaked into dQ"
    torch.testing.assert_close(poisoned[:, :-1], clean[:, :-1], rtol=1e-5, atol=1e-5)
    assert poisoned[:, -1].isnan().all()
