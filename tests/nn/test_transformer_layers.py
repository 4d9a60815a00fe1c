"""Transformer layers: RMSNorm / LayerNorm load torch.nn's state dicts (and back) and match them,
outputs and parameter gradients; SwiGLU / GeluMLP match their eager formulas; RotaryEmbedding
matches the reference, grows its tables, and cached offsets equal the full sequence."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genkernels.nn import GeluMLP, LayerNorm, RMSNorm, RotaryEmbedding, SwiGLU
from genkernels.ops.rotary import rotary_ref


def _grads(module, x):
    y = module(x)
    loss = (y * torch.linspace(-1, 1, y.shape[-1])).square().sum()
    return (y, *torch.autograd.grad(loss, [x, *module.parameters()]))


@pytest.mark.parametrize("ours, theirs, kwargs", [
    (RMSNorm, nn.RMSNorm, {}),
    (RMSNorm, nn.RMSNorm, {"eps": 1e-5}),
    (RMSNorm, nn.RMSNorm, {"elementwise_affine": False}),
    (LayerNorm, nn.LayerNorm, {}),
    (LayerNorm, nn.LayerNorm, {"bias": False}),
    (LayerNorm, nn.LayerNorm, {"elementwise_affine": False}),
])
def test_norms_are_drop_ins(ours, theirs, kwargs):
    torch.manual_seed(0)
    ref = theirs(33, **kwargs)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p))
    mine = ours(33, **kwargs)
    mine.load_state_dict(ref.state_dict())
    assert mine.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(4, 5, 33, requires_grad=True)
    for a, b in zip(_grads(mine, x), _grads(ref, x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    theirs(33, **kwargs).load_state_dict(mine.state_dict())  # and back


def test_mlps_match_eager():
    torch.manual_seed(1)
    x = torch.randn(3, 7, 16)
    m = SwiGLU(16)
    assert m.w1.out_features == 64
    torch.testing.assert_close(m(x), m.w2(F.silu(m.w1(x)) * m.w3(x)))
    g = GeluMLP(16, 40)
    torch.testing.assert_close(g(x), g.fc2(F.gelu(g.fc1(x), approximate="tanh")))


def test_rotary_embedding():
    rope = RotaryEmbedding(8, max_positions=4)
    q, k = torch.randn(2, 6, 3, 8), torch.randn(2, 6, 1, 8)
    q2, k2 = rope(q, k)  # 6 > 4 positions: the tables grow
    assert rope.cos.shape[0] >= 6 and "cos" not in rope.state_dict()
    torch.testing.assert_close(q2, rotary_ref(q, rope.cos, rope.sin))
    torch.testing.assert_close(k2, rotary_ref(k, rope.cos, rope.sin))
    # decoding token 5 of each sequence with a cache: offset 5 equals position 5 of the full call
    q5, k5 = rope(q[:, 5:], k[:, 5:], 5)
    assert torch.equal(q5, q2[:, 5:]) and torch.equal(k5, k2[:, 5:])
    offsets = torch.tensor([5, 2])
    qo, _ = rope(q[:, :1], k[:, :1], offsets)
    torch.testing.assert_close(qo, rotary_ref(q[:, :1], rope.cos, rope.sin, offsets))
