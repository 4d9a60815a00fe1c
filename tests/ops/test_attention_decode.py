"""attention_decode (ops/attention_decode.py): the split-KV kernels (interpreter) against the float64
reference with the 2x rule, the CPU path, bounds on cache_seqlens, NaN hygiene and validation."""

import pytest
import torch

from genkernels import use_backend
from genkernels.ops.attention import attention, attention_ref, decode_allowed
from genkernels.ops.attention_decode import attention_decode
from genkernels.testing import assert_close_2x
from tests.helpers import triton_test
from tests.ops.test_attention import QUICK_OPCHECK, assert_lse_close, backend  # noqa: F401 (fixture)



def _decode_truth(q, k_cache, v_cache, lengths, causal, dtype):
    allowed = decode_allowed(lengths, q.shape[1], k_cache.shape[1], causal)
    return attention_ref(q.to(dtype), k_cache.to(dtype), v_cache.to(dtype), allowed=allowed)


def _cache(batch=2, new_tokens=1, cache_len=20, heads=4, kv_heads=2, head_dim=16, dtype=torch.float32):
    q = torch.randn(batch, new_tokens, heads, head_dim, dtype=dtype)
    k_cache = torch.randn(batch, cache_len, kv_heads, head_dim, dtype=dtype)
    v_cache = torch.randn(batch, cache_len, kv_heads, head_dim, dtype=dtype)
    return q, k_cache, v_cache


@triton_test
@pytest.mark.parametrize("new_tokens, causal, dtype", [(1, False, torch.float16), (3, True, torch.float32)])
def test_triton_decode(new_tokens, causal, dtype):
    q, k_cache, v_cache = _cache(3, new_tokens, 70, 4, 2, 32, dtype)
    lengths = torch.tensor([70, 2, 37], dtype=torch.int32)
    with use_backend("triton"):
        out, lse = attention_decode(q, k_cache, v_cache, lengths, causal=causal, return_lse=True)
    truth = _decode_truth(q, k_cache, v_cache, lengths, causal, torch.float64)
    lowp = _decode_truth(q, k_cache, v_cache, lengths, causal, dtype)
    assert_close_2x(out, truth[0], lowp[0], name="out")
    assert_lse_close(lse, truth[1], lowp[1])


def test_decode_reference_matches_truncated_attention():
    q, k_cache, v_cache = _cache(2, 2, 10, 4, 2, 16)
    lengths = torch.tensor([10, 6], dtype=torch.int32)
    out = attention_decode(q, k_cache, v_cache, lengths, causal=True)
    for b, n in enumerate(lengths.tolist()):
        dense = attention(q[b : b + 1], k_cache[b : b + 1, :n], v_cache[b : b + 1, :n], causal=True, return_lse=True)[0]
        torch.testing.assert_close(out[b : b + 1], dense)


@triton_test
def test_triton_cache_lengths_stay_in_bounds():
    # Lengths the host cannot check (GPU-resident), past the cache or negative, below the public
    # checks: the kernel clamps them into [0, S_cache]. The cache is a view of a bigger buffer
    # whose extra sequence is NaN, so a read past sequence b's own cache shows up as NaN.
    from genkernels.kernels import attention_decode as kernels

    q, k_cache, v_cache = _cache(3, 1, 20)
    k_buf, v_buf = (torch.cat([t, torch.full_like(t[:1], float("nan"))]) for t in (k_cache, v_cache))
    k_view, v_view = k_buf[:3], v_buf[:3]
    lengths = torch.tensor([35, 1000, -4], dtype=torch.int32)
    out, lse = torch.empty_like(q), torch.empty(3, 4, 1)
    splits = kernels.decode_num_splits(3, 2, 20, 16, 4)
    out_partial, lse_partial = torch.empty(3, 4, 1, splits, 16), torch.empty(3, 4, 1, splits)
    kernels.attention_decode(lambda f: f, q, k_view, v_view, lengths, out, lse, out_partial, lse_partial,
                             0.25, False, False)
    assert torch.isfinite(out).all(), "read past a sequence's cache"
    clamped = lengths.clamp(0, 20)
    truth, truth_lse = _decode_truth(q, k_cache, v_cache, clamped, False, torch.float64)
    torch.testing.assert_close(out.double(), truth, rtol=1e-4, atol=1e-4)
    assert torch.all(out[2] == 0) and torch.all(lse[2] == float("-inf"))  # length < 0: no keys


@pytest.mark.parametrize("lengths", [[21, 3], [5, -1]], ids=["past-the-cache", "negative"])
def test_cache_lengths_checked_on_the_host(lengths):
    q, k_cache, v_cache = _cache()
    with pytest.raises(ValueError, match=r"cache_seqlens must lie in \[0, 20\] \(the cache length of k_cache\)"):
        attention_decode(q, k_cache, v_cache, torch.tensor(lengths, dtype=torch.int32))


def test_zero_lengths_and_empty_caches(backend):
    q, k_cache, v_cache = _cache()
    with use_backend(backend):
        out, lse = attention_decode(q, k_cache, v_cache, torch.tensor([0, 7], dtype=torch.int32), return_lse=True)
        empty = attention_decode(q, k_cache[:, :0], v_cache[:, :0], torch.zeros(2, dtype=torch.int32))
        none = attention_decode(q[:0], k_cache[:0], v_cache[:0], torch.zeros(0, dtype=torch.int32))
    assert torch.all(out[0] == 0) and torch.all(lse[0] == float("-inf")) and torch.isfinite(out[1]).all()
    assert torch.all(empty == 0) and none.shape == (0, 1, 4, 16)


@pytest.mark.parametrize("causal", [False, True])
def test_nan_past_cache_length_is_never_read(backend, causal):
    q, k_cache, v_cache = _cache(2, 2, 20)
    lengths = torch.tensor([9, 20], dtype=torch.int32)
    k_bad, v_bad = k_cache.clone(), v_cache.clone()
    k_bad[0, 9:], v_bad[0, 9:] = float("nan"), float("inf")
    if causal:  # position 8 is seen only by the last new token of sequence 0
        v_bad[0, 8] = float("nan")
    with use_backend(backend):
        expected = attention_decode(q, k_cache, v_cache, lengths, causal=causal)
        got = attention_decode(q, k_bad, v_bad, lengths, causal=causal)
    clean_rows = (slice(None), slice(0, 1)) if causal else (slice(None), slice(None))
    assert torch.isfinite(got[clean_rows]).all()
    torch.testing.assert_close(got[clean_rows], expected[clean_rows], rtol=1e-5, atol=1e-5)
    if causal:
        assert got[0, 1].isnan().all() and torch.isfinite(got[1]).all()


def test_nan_scale_gives_nan(backend):
    q, k_cache, v_cache = _cache()
    with use_backend(backend):
        out = attention_decode(q, k_cache, v_cache, torch.tensor([5, 20]), scale=float("nan"))
    assert out.isnan().all()


def test_inputs_that_require_grad_fail_at_the_call():
    q, k_cache, v_cache = _cache()
    lengths = torch.tensor([20, 3], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"attention_decode has no backward .* q require grad.*torch.no_grad"):
        attention_decode(q.requires_grad_(), k_cache, v_cache, lengths)
    with pytest.raises(ValueError, match="k_cache, v_cache require grad"):
        attention_decode(q.detach(), k_cache.requires_grad_(), v_cache.requires_grad_(), lengths)
    with torch.no_grad():  # inference with trainable tensors is fine
        assert attention_decode(q, k_cache, v_cache, lengths).shape == q.shape


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda q, k, v: attention_decode(q, k, v, torch.tensor([4])), ValueError, "cache_seqlens must have shape"),
        (lambda q, k, v: attention_decode(q, k, v, torch.tensor([4.0, 4.0])), TypeError, "cache_seqlens"),
        (lambda q, k, v: attention_decode(q, k, v, torch.tensor([4, 4]), scale="0.1"), TypeError,
         "scale must be a float"),
        (lambda q, k, v: attention_decode(q, k[:1], v[:1], torch.tensor([4, 4])), ValueError, "same batch size"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(make, error, match):
    q, k_cache, v_cache = _cache(cache_len=4)
    with pytest.raises(error, match=match):
        make(q, k_cache, v_cache)


def test_opcheck_decode_op():
    q, k_cache, v_cache = _cache(2, 1, 7)
    decode = torch.ops.genkernels.attention_decode.default
    torch.library.opcheck(decode, (q, k_cache, v_cache, torch.tensor([7, 3], dtype=torch.int32), 0.25, True, False),
                          test_utils=QUICK_OPCHECK)


@pytest.mark.parametrize("num_kv_heads", [4, 2, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_single_token_fast_path_matches_the_masked_reference(num_kv_heads, dtype):
    """One new token at equal lengths takes SDPA over the sliced cache on the CPU; past the length
    the cache holds NaN, which must never be read."""
    from genkernels.ops.attention_decode import attention_decode_op

    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 1, 4, 16, generator=gen).to(dtype)
    k = torch.randn(2, 20, num_kv_heads, 16, generator=gen).to(dtype)
    v = torch.randn(2, 20, num_kv_heads, 16, generator=gen).to(dtype)
    k[:, 13:], v[:, 13:] = float("nan"), float("nan")
    lengths = torch.tensor([13, 13])
    for causal in (False, True):
        fast = attention_decode(q, k, v, lengths, causal=causal)
        masked, _ = attention_decode_op(q, k, v, lengths, 16 ** -0.5, causal, False)
        assert fast.shape == masked.shape and fast.dtype == dtype and torch.isfinite(fast).all()
        torch.testing.assert_close(fast.float(), masked.float(), rtol=2e-2 if dtype == torch.bfloat16 else 1e-5,
                                   atol=2e-2 if dtype == torch.bfloat16 else 1e-6)
