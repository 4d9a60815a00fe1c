"""Fused attention: Triton kernels (interpreter, small shapes) against a float64 reference with the
2x rule, and the reference / SDPA path, validation, opcheck and torch.compile (always)."""

import pytest
import torch
import torch.nn.functional as F

from genkernels import use_backend
from genkernels.ops.attention import (
    attention,
    attention_decode,
    attention_ref,
    attention_varlen,
    decode_allowed,
)
from genkernels.testing import assert_close_2x
from tests.helpers import triton_test



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


def _decode_truth(q, k_cache, v_cache, lengths, causal, dtype):
    allowed = decode_allowed(lengths, q.shape[1], k_cache.shape[1], causal)
    return attention_ref(q.to(dtype), k_cache.to(dtype), v_cache.to(dtype), allowed=allowed)


@triton_test
@pytest.mark.parametrize("new_tokens, causal, dtype", [(1, False, torch.float16), (3, True, torch.float32)])
def test_triton_decode(new_tokens, causal, dtype):
    batch, cache_len, heads, kv_heads, head_dim = 3, 70, 4, 2, 32
    q = torch.randn(batch, new_tokens, heads, head_dim, dtype=dtype)
    k_cache = torch.randn(batch, cache_len, kv_heads, head_dim, dtype=dtype)
    v_cache = torch.randn(batch, cache_len, kv_heads, head_dim, dtype=dtype)
    lengths = torch.tensor([70, 2, 37], dtype=torch.int32)
    with use_backend("triton"):
        out, lse = attention_decode(q, k_cache, v_cache, lengths, causal=causal, return_lse=True)
    truth = _decode_truth(q, k_cache, v_cache, lengths, causal, torch.float64)
    lowp = _decode_truth(q, k_cache, v_cache, lengths, causal, dtype)
    assert_close_2x(out, truth[0], lowp[0], name="out")
    assert_lse_close(lse, truth[1], lowp[1])


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
    torch.testing.assert_close(op_lse, expected_lse)
    # The explicit backward (op path) agrees with autograd through the reference.
    dout = torch.randn_like(op_out)
    got = torch.autograd.grad((op_out * dout).sum() + op_lse.sum(), (q, k, v))
    want = torch.autograd.grad((expected * dout).sum() + expected_lse.sum(), (q, k, v))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


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


def test_decode_reference_matches_truncated_attention():
    q = torch.randn(2, 2, 4, 16)
    k_cache, v_cache = torch.randn(2, 10, 2, 16), torch.randn(2, 10, 2, 16)
    lengths = torch.tensor([10, 6], dtype=torch.int32)
    out = attention_decode(q, k_cache, v_cache, lengths, causal=True)
    for b, n in enumerate(lengths.tolist()):
        dense = attention(q[b : b + 1], k_cache[b : b + 1, :n], v_cache[b : b + 1, :n], causal=True, return_lse=True)[0]
        torch.testing.assert_close(out[b : b + 1], dense)


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
        (lambda q, k, v: attention_decode(q, k, v, torch.tensor([4])), ValueError, "cache_seqlens must have shape"),
        (lambda q, k, v: attention_decode(q, k, v, torch.tensor([4.0, 4.0])), TypeError, "cache_seqlens"),
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
    decode = torch.ops.genkernels.attention_decode.default
    torch.library.opcheck(decode, (q.detach()[:, :1], k.detach(), v.detach(), torch.tensor([7, 3], dtype=torch.int32),
                                   0.25, True, False), test_utils=QUICK_OPCHECK)


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
