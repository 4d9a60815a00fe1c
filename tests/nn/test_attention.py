"""Attention layers: MultiheadAttention parity with torch, KV-cache decoding equals full attention."""

import pytest
import torch
from torch import nn

from genkernels import use_backend
from tests.helpers import triton_test
from genkernels.nn import CrossAttention, KVCache, MultiheadAttention, SelfAttention



def _pair(**kwargs):
    """A torch MHA and ours with the same weights (loaded through state_dict)."""
    reference = nn.MultiheadAttention(**kwargs)
    ours = MultiheadAttention(**kwargs)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def test_state_dict_keys_match_torch():
    for kwargs in (dict(embed_dim=32, num_heads=2), dict(embed_dim=32, num_heads=2, kdim=12, vdim=20, bias=False)):
        assert set(MultiheadAttention(**kwargs).state_dict()) == set(nn.MultiheadAttention(**kwargs).state_dict())


@pytest.mark.parametrize(
    "batch_first, masked, causal_mask, cross",
    [
        (True, False, None, False),
        (False, True, None, False),
        (True, True, "bool", False),
        (True, False, "float", False),
        (True, False, "is_causal", False),
        (False, True, None, True),
    ],
)
def test_multihead_attention_matches_torch(batch_first, masked, causal_mask, cross, monkeypatch):
    kwargs = dict(embed_dim=64, num_heads=4, batch_first=batch_first)
    if cross:
        kwargs.update(kdim=24, vdim=40)
    reference, ours = _pair(**kwargs)
    monkeypatch.setattr(ours, "_torch_forward", None)  # these calls must take the fused path
    batch, tgt_len, src_len = 3, 9, (13 if cross else 9)

    def seq_first(n, dim):
        return torch.randn((batch, n, dim) if batch_first else (n, batch, dim), requires_grad=True)

    query = seq_first(tgt_len, 64)
    key = seq_first(src_len, 24) if cross else query
    value = seq_first(src_len, 40) if cross else query
    call = dict(need_weights=False)
    if masked:
        call["key_padding_mask"] = torch.rand(batch, src_len) < 0.3
    future = torch.ones(tgt_len, src_len, dtype=torch.bool).triu(1)
    if causal_mask == "bool":
        call["attn_mask"] = future
    elif causal_mask == "float":
        call["attn_mask"] = torch.zeros(tgt_len, src_len).masked_fill(future, float("-inf"))
    elif causal_mask == "is_causal":
        call.update(attn_mask=future, is_causal=True)
    expected, _ = reference(query, key, value, **call)
    got, weights = ours(query, key, value, **call)
    assert weights is None
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    expected_grads = torch.autograd.grad(expected.sum(), [query, *reference.parameters()])
    got_grads = torch.autograd.grad(got.sum(), [query, *ours.parameters()])
    for a, b in zip(got_grads, expected_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_multihead_attention_weights_and_general_masks_fall_back_to_torch():
    reference, ours = _pair(embed_dim=32, num_heads=2, batch_first=True)
    x = torch.randn(2, 6, 32)
    arbitrary = torch.rand(6, 6) < 0.3
    arbitrary.fill_diagonal_(False)
    for call in (dict(), dict(attn_mask=arbitrary, need_weights=False), dict(average_attn_weights=False)):
        expected = reference(x, x, x, **call)
        got = ours(x, x, x, **call)
        torch.testing.assert_close(got[0], expected[0])
        if expected[1] is not None:
            torch.testing.assert_close(got[1], expected[1])


def _prefill_then_decode(layer, x, steps_at_once):
    """Feed x through the cache in chunks; return the concatenated outputs."""
    cache = layer.new_cache(x.shape[0], x.shape[1] + 3)
    outputs, start = [], 0
    for size in steps_at_once:
        outputs.append(layer(x[:, start : start + size], kv_cache=cache))
        start += size
    assert cache.length == x.shape[1] and torch.all(cache.seqlens == x.shape[1])
    return torch.cat(outputs, dim=1)


@pytest.mark.parametrize("num_kv_heads", [4, 2, 1], ids=["mha", "gqa", "mqa"])
def test_self_attention_kv_cache_equals_full_attention(num_kv_heads):
    layer = SelfAttention(64, num_heads=4, num_kv_heads=num_kv_heads).eval()
    layer.decode_max_tokens = 2  # the 5-token prefill takes the regular path, the rest decode
    x = torch.randn(2, 10, 64)
    with torch.no_grad():
        full = layer(x)
        stepped = _prefill_then_decode(layer, x, [5, 1, 1, 2, 1])
    torch.testing.assert_close(stepped, full, rtol=1e-5, atol=1e-5)


def test_cross_attention_cache_reuses_context():
    layer = CrossAttention(32, context_dim=24, num_heads=2).eval()
    x, context = torch.randn(2, 4, 32), torch.randn(2, 7, 24)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[1, 5:] = True
    with torch.no_grad():
        full = layer(x, context, context_mask=mask)
        cache = KVCache(2, 7, 2, 16)
        first = layer(x[:, :2], context, context_mask=mask, kv_cache=cache)
        second = layer(x[:, 2:], None, context_mask=mask, kv_cache=cache)
    torch.testing.assert_close(torch.cat([first, second], 1), full)
    # Padded context positions do not matter.
    with torch.no_grad():
        changed = context.clone()
        changed[1, 5:] = 100.0
        torch.testing.assert_close(layer(x, changed, context_mask=mask), full)


def test_kv_cache_errors():
    cache = KVCache(1, 4, 2, 16)
    cache.append(torch.zeros(1, 3, 2, 16), torch.zeros(1, 3, 2, 16))
    with pytest.raises(ValueError, match="KVCache is full"):
        cache.append(torch.zeros(1, 2, 2, 16), torch.zeros(1, 2, 2, 16))
    with pytest.raises(ValueError, match="k and v must have shape"):
        cache.append(torch.zeros(1, 1, 3, 16), torch.zeros(1, 1, 3, 16))
    cache.reset()
    assert cache.length == 0 and cache.keys.shape == (1, 0, 2, 16)


def test_constructor_errors():
    with pytest.raises(ValueError, match="divisible"):
        MultiheadAttention(30, 4)
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        SelfAttention(64, num_heads=4, num_kv_heads=3)


@triton_test
def test_triton_self_attention_decode_matches_torch():
    layer = SelfAttention(64, num_heads=4, num_kv_heads=2).eval()
    layer.decode_max_tokens = 2
    x = torch.randn(2, 7, 64)
    with torch.no_grad():
        expected = layer(x)
        with use_backend("triton"):
            full = layer(x)
            stepped = _prefill_then_decode(layer, x, [4, 1, 2])
    torch.testing.assert_close(full, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stepped, expected, rtol=1e-5, atol=1e-5)


@triton_test
def test_triton_multihead_attention_matches_torch(monkeypatch):
    reference, ours = _pair(embed_dim=64, num_heads=2, batch_first=True)
    monkeypatch.setattr(ours, "_torch_forward", None)
    x = torch.randn(2, 11, 64, requires_grad=True)
    mask = torch.rand(2, 11) < 0.3
    expected, _ = reference(x, x, x, key_padding_mask=mask, need_weights=False)
    with use_backend("triton"):
        got, _ = ours(x, x, x, key_padding_mask=mask, need_weights=False)
        got_grad = torch.autograd.grad(got.sum(), x)[0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad, torch.autograd.grad(expected.sum(), x)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "make_inputs, match",
    [
        (lambda: (torch.randn(2, 5, 24),) * 3, r"query must have embed_dim = 32 as its last dimension"),
        (lambda: (torch.randn(2, 5, 32), torch.randn(2, 5, 24), torch.randn(2, 5, 32)),
         r"key must have kdim = 32 as its last dimension"),
        (lambda: (torch.randn(2, 5, 32), torch.randn(2, 5, 32), torch.randn(2, 5, 16)),
         r"value must have vdim = 32 as its last dimension"),
        (lambda: (torch.randn(2, 3, 5, 32),) * 3, r"query must be a 2-d or 3-d tensor .* embed_dim = 32, got shape"),
        (lambda: (torch.randn(2, 5, 32), torch.randn(3, 5, 32), torch.randn(3, 5, 32)),
         r"query, key and value must have the same batch size N"),
        (lambda: (torch.randn(2, 5, 32), torch.randn(2, 6, 32), torch.randn(2, 5, 32)),
         r"key and value must have the same length S"),
    ],
    ids=["embed-dim", "kdim", "vdim", "rank", "batch", "key-value-length"],
)
def test_multihead_attention_shape_errors_name_the_argument(make_inputs, match):
    layer = MultiheadAttention(32, 2, batch_first=True)
    with pytest.raises(ValueError, match=match):
        layer(*make_inputs(), need_weights=False)
    with pytest.raises(ValueError, match=match):  # torch's path (need_weights=True) says the same
        layer(*make_inputs())


def test_self_and_cross_attention_shape_errors_name_the_argument():
    layer = SelfAttention(64, num_heads=4, num_kv_heads=2)
    with pytest.raises(ValueError, match=r"x must have dim = 64 as its last dimension \(B, T, dim\), got shape"):
        layer(torch.randn(2, 5, 48))
    with pytest.raises(ValueError, match=r"x must be a 3-d tensor \(B, T, dim\) with dim = 64"):
        layer(torch.randn(5, 64))
    with pytest.raises(ValueError, match=r"kv_cache must hold \(batch, Hkv, D\) = \(2, 2, 16\)"):
        layer(torch.randn(2, 1, 64), kv_cache=KVCache(3, 8, 2, 16))
    cross = CrossAttention(32, context_dim=24, num_heads=2)
    with pytest.raises(ValueError, match=r"x must have dim = 32 as its last dimension"):
        cross(torch.randn(2, 4, 24), torch.randn(2, 7, 24))
    with pytest.raises(ValueError, match=r"context must have context_dim = 24 as its last dimension"):
        cross(torch.randn(2, 4, 32), torch.randn(2, 7, 32))
    with pytest.raises(ValueError, match=r"context must have the batch size of x \(2\)"):
        cross(torch.randn(2, 4, 32), torch.randn(3, 7, 24))
    with pytest.raises(ValueError, match=r"context_mask must be a bool tensor of shape \(B, S\) = \(2, 7\)"):
        cross(torch.randn(2, 4, 32), torch.randn(2, 7, 24), context_mask=torch.zeros(2, 6, dtype=torch.bool))


def test_self_attention_decode_step_with_gradients_fails_at_the_call():
    layer = SelfAttention(64, num_heads=4, num_kv_heads=2)
    cache = layer.new_cache(2, 8)
    with pytest.raises(ValueError, match=r"kv_cache decodes for inference only .* torch.no_grad\(\)"):
        layer(torch.randn(2, 1, 64), kv_cache=cache)
    assert cache.length == 0  # nothing appended by the refused call
    with torch.no_grad():
        assert layer(torch.randn(2, 1, 64), kv_cache=cache).shape == (2, 1, 64)
