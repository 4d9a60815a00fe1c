"""Diffusion blocks: the sinusoidal timestep embedding against its formula in float64; ResBlock,
AttentionBlock and CrossAttentionBlock against plain-torch computations of the same math; every
residual branch starts as the identity (zero-initialised last layer); masked context tokens never
reach the output; resampling shapes; input checks."""
import math

import pytest
import torch
import torch.nn.functional as F

from genkernels.nn import (AttentionBlock, CrossAttentionBlock, Downsample, ResBlock, TimestepMLP, Upsample,
                           timestep_embedding)
from genkernels.nn.diffusion_blocks import (ConditionEmbedding, check_context, check_labels, check_timesteps,
                                            group_count)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _perturb(module, std=0.2):
    """Break the zero initialisations so every branch contributes."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn_like(p))
    return module


def test_timestep_embedding_formula_int_float_and_odd_dim():
    t = torch.tensor([0, 1, 17, 999])
    dim, half = 10, 5
    emb = timestep_embedding(t, dim)
    assert emb.shape == (4, 10) and emb.dtype == torch.float32
    freqs = [10000.0 ** (-i / half) for i in range(half)]
    expected = torch.tensor([[math.cos(s * f) for f in freqs] + [math.sin(s * f) for f in freqs]
                             for s in t.tolist()], dtype=torch.float64)
    torch.testing.assert_close(emb.double(), expected, atol=2e-4, rtol=0)  # float32 args up to 999
    torch.testing.assert_close(timestep_embedding(t.double(), dim), expected, atol=1e-12, rtol=0)
    assert torch.equal(timestep_embedding(t.float(), dim), emb)  # int and float t agree
    assert torch.equal(emb[0], torch.tensor([1.0] * 5 + [0.0] * 5))
    odd = timestep_embedding(t, 7)
    assert odd.shape == (4, 7) and torch.equal(odd[:, -1], torch.zeros(4))
    fractional = timestep_embedding(torch.tensor([2.5]), dim)
    assert not torch.equal(fractional, timestep_embedding(torch.tensor([2]), dim))
    assert timestep_embedding(5, dim).shape == (1, dim)  # a number: one row
    assert timestep_embedding(t, dim, max_period=100.0).shape == (4, dim)


def test_timestep_embedding_errors():
    with pytest.raises(ValueError, match="dim must be a positive int"):
        timestep_embedding(torch.tensor([1]), 0)
    with pytest.raises(ValueError, match=r"t must be a 1-d \(N,\)"):
        timestep_embedding(torch.zeros(2, 3), 8)
    with pytest.raises(ValueError, match="t must be a 1-d"):
        timestep_embedding(torch.tensor([True]), 8)
    with pytest.raises(TypeError, match="t must be a tensor"):
        timestep_embedding("3", 8)


def test_timestep_mlp_and_condition_embedding_null_class():
    mlp = TimestepMLP(16, 32)
    assert mlp(torch.tensor([1, 2, 3])).shape == (3, 32)
    embed = ConditionEmbedding(32, 16, num_classes=4)
    t = torch.tensor([5, 5])
    null = embed(t, torch.tensor([4, 4]))
    assert torch.equal(embed(t), null)  # labels None = the null class (index num_classes)
    assert not torch.allclose(embed(t, torch.tensor([0, 1])), null)
    assert ConditionEmbedding(32, 16).label is None


def test_group_count_clips_to_a_divisor():
    assert group_count(8, 64) == 8 and group_count(8, 12) == 6 and group_count(8, 7) == 7
    assert group_count(32, 3) == 3 and group_count(4, 5) == 1


def _res_block_reference(block, x, emb):
    """ResBlock's math in plain torch ops."""
    n1, n2 = block.norm1, block.norm2
    h = F.silu(F.group_norm(x, n1.num_groups, n1.weight, n1.bias, n1.eps))
    h = block.conv1(h)
    scale, shift = F.linear(F.silu(emb), block.emb_proj[1].weight, block.emb_proj[1].bias).chunk(2, dim=1)
    h = F.group_norm(h, n2.num_groups, n2.weight, n2.bias, n2.eps) * (1 + scale[:, :, None, None]) \
        + shift[:, :, None, None]
    h = block.conv2(F.silu(h))
    return block.skip(x) + h


@pytest.mark.parametrize("in_channels, out_channels", [(8, 8), (6, 12)])
def test_res_block_identity_at_init_and_reference(in_channels, out_channels):
    block = ResBlock(in_channels, out_channels, emb_dim=10, num_groups=4)
    x, emb = torch.randn(3, in_channels, 5, 7), torch.randn(3, 10)
    assert torch.equal(block(x, emb), block.skip(x))  # zero-initialised conv2
    assert isinstance(block.skip, torch.nn.Conv2d) == (in_channels != out_channels)
    _perturb(block)
    out = block(x, emb)
    assert out.shape == (3, out_channels, 5, 7)
    torch.testing.assert_close(out, _res_block_reference(block, x, emb), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(block(x, emb + 1), out)  # the time embedding modulates


def test_res_block_dropout_only_in_training():
    block = _perturb(ResBlock(4, 4, 6, dropout=0.5, num_groups=2))
    x, emb = torch.randn(2, 4, 4, 4), torch.randn(2, 6)
    block.eval()
    assert torch.equal(block(x, emb), block(x, emb))
    block.train()
    assert not torch.equal(block(x, emb), block(x, emb))


def _attention_reference(x, norm, qkv, out, heads, context=None, pad=None):
    """softmax(q k^T / sqrt(d)) v over the H*W pixels (keys from context when given)."""
    n, c, h, w = x.shape
    tokens = F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps).flatten(2).transpose(1, 2)
    if context is None:
        q, k, v = qkv(tokens).chunk(3, dim=-1)
    else:
        q = qkv[0](tokens)
        k, v = qkv[1](context).unflatten(-1, (2, c)).unbind(2)
    split = lambda a: a.unflatten(-1, (heads, c // heads)).transpose(1, 2)  # noqa: E731 (N, heads, S, d)
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(c // heads)
    if pad is not None:
        scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
    o = (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(n, h * w, c)
    return x + out(o).transpose(1, 2).reshape(n, c, h, w)


def test_attention_block_identity_at_init_and_reference():
    block = AttentionBlock(8, num_heads=2, num_groups=4)
    x = torch.randn(3, 8, 3, 5)
    assert torch.equal(block(x), x)
    _perturb(block)
    expected = _attention_reference(x, block.norm, block.attn.qkv, block.attn.out, 2)
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)
    # non-causal: the first pixel sees the last one
    x.requires_grad_(True)
    block(x)[:, :, 0, 0].sum().backward()
    assert x.grad[:, :, -1, -1].abs().sum() > 0
    with pytest.raises(ValueError, match="divisible by num_heads"):
        AttentionBlock(6, num_heads=4)


def test_cross_attention_block_reference_and_masking():
    block = CrossAttentionBlock(8, context_dim=6, num_heads=2, num_groups=4)
    x, context = torch.randn(3, 8, 4, 4), torch.randn(3, 5, 6)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 3:] = False
    mask[1, 1:] = False
    assert torch.equal(block(x, context, mask), x)  # zero-initialised output projection
    _perturb(block)
    out = block(x, context, mask)
    expected = _attention_reference(x, block.norm, (block.attn.q, block.attn.kv), block.attn.out, 2,
                                     context=context, pad=~mask)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    changed = context.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 6) * 100
    assert torch.equal(block(x, changed, mask), out)  # masked tokens never reach the output
    assert torch.equal(block(x, None), x)  # no context: nothing added
    mask[2] = False  # a row with no real token gets no update, like context=None
    assert torch.equal(block(x, context, mask)[2], x[2])
    torch.testing.assert_close(block(x, context), _attention_reference(
        x, block.norm, (block.attn.q, block.attn.kv), block.attn.out, 2, context=context), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="context_mask must be a bool tensor"):
        block(x, context, mask.float())
    with pytest.raises(ValueError, match="context_mask must be a bool tensor"):
        block(x, context, mask[:, :3])


def test_down_and_upsample_shapes():
    x = torch.randn(3, 4, 8, 6)
    assert Downsample(4)(x).shape == (3, 4, 4, 3)
    assert Upsample(4)(x).shape == (3, 4, 16, 12)


def test_input_checks():
    assert torch.equal(check_timesteps(7, 3, "cpu"), torch.tensor([7, 7, 7]))
    assert check_timesteps(torch.tensor([0.5]), 2, "cpu").shape == (2,)
    with pytest.raises(ValueError, match=r"t must have shape \(N,\) = \(3,\)"):
        check_timesteps(torch.zeros(2), 3, "cpu")
    with pytest.raises(TypeError, match="t must hold int or float"):
        check_timesteps(torch.ones(3, dtype=torch.bool), 3, "cpu")
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\]"):
        check_labels(torch.tensor([0, 5]), 2, 4, "cpu")
    with pytest.raises(TypeError, match="labels must be an"):
        check_labels(torch.tensor([0.0, 1.0]), 2, 4, "cpu")
    with pytest.raises(ValueError, match="unconditional"):
        check_labels(torch.tensor([0, 1]), 2, 0, "cpu")
    with pytest.raises(ValueError, match="no cross-attention"):
        check_context(torch.zeros(2, 3, 4), None, 2, 0)
    with pytest.raises(ValueError, match=r"context must be a tensor \(N, L, context_dim\)"):
        check_context(torch.zeros(2, 3, 5), None, 2, 4)
    with pytest.raises(ValueError, match="context_mask was given without context"):
        check_context(None, torch.ones(2, 3, dtype=torch.bool), 2, 4)
