"""GroupNormAct, AdaLayerNorm and modulate: torch.nn.GroupNorm's state dict loads and the layer
matches nn.GroupNorm + SiLU (with and without modulation), gradients reach the parameters, errors."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genkernels.nn import AdaLayerNorm, GroupNormAct, modulate


@pytest.mark.parametrize("act", ["silu", None])
@pytest.mark.parametrize("shape, groups", [((2, 6, 3, 5), 3), ((3, 10, 7), 5), ((2, 8, 2, 2, 3), 4)], ids=str)
def test_loads_group_norm_state_dict_and_matches(act, shape, groups):
    torch.manual_seed(0)
    ref = nn.GroupNorm(groups, shape[1], eps=1e-5)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    layer = GroupNormAct(groups, shape[1], act=act)
    layer.load_state_dict(ref.state_dict())
    assert set(layer.state_dict()) == {"weight", "bias"}
    x = torch.randn(shape, requires_grad=True)
    y = layer(x)
    expected = F.silu(ref(x)) if act == "silu" else ref(x)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    g = torch.randn(shape)
    grads = torch.autograd.grad(y, [x, layer.weight, layer.bias], g)
    expected_grads = torch.autograd.grad(expected, [x, ref.weight, ref.bias], g)
    for a, e in zip(grads, expected_grads):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


def test_scale_shift_modulation():
    torch.manual_seed(1)
    layer = GroupNormAct(2, 4)
    with torch.no_grad():
        layer.weight.normal_()
        layer.bias.normal_()
    x, scale, shift = torch.randn(3, 4, 5, 5), torch.randn(3, 4), torch.randn(3, 4)
    y = layer(x, scale, shift)
    h = F.group_norm(x, 2, layer.weight, layer.bias) * (1 + scale[..., None, None]) + shift[..., None, None]
    torch.testing.assert_close(y, F.silu(h), rtol=1e-5, atol=1e-5)
    shifted_only = F.group_norm(x, 2, layer.weight, layer.bias) + shift[..., None, None]
    torch.testing.assert_close(layer(x, shift=shift), F.silu(shifted_only), rtol=1e-5, atol=1e-5)


def test_no_affine_has_no_parameters():
    layer = GroupNormAct(2, 4, affine=False, act=None)
    assert list(layer.parameters()) == [] and layer.weight is None
    x = torch.randn(2, 4, 3)
    torch.testing.assert_close(layer(x), F.group_norm(x, 2), rtol=1e-5, atol=1e-5)
    assert "act=None" in repr(layer)


def test_ada_layer_norm_and_modulate():
    torch.manual_seed(2)
    x, shift, scale = torch.randn(2, 5, 8, requires_grad=True), torch.randn(2, 8), torch.randn(2, 8)
    expected = F.layer_norm(x, (8,), eps=1e-6) * (1 + scale[:, None]) + shift[:, None]
    torch.testing.assert_close(AdaLayerNorm(8)(x, shift, scale), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(modulate(x, shift, scale), expected, rtol=1e-5, atol=1e-5)
    (gx,) = torch.autograd.grad(modulate(x, shift, scale).sum(), [x])
    (ex,) = torch.autograd.grad(expected.sum(), [x])
    torch.testing.assert_close(gx, ex, rtol=1e-4, atol=1e-4)


def test_errors():
    with pytest.raises(ValueError, match="num_channels must be divisible by num_groups"):
        GroupNormAct(4, 6)
    with pytest.raises(TypeError, match="num_groups must be an int"):
        GroupNormAct(2.0, 6)
    with pytest.raises(ValueError, match="act must be 'silu' or None"):
        GroupNormAct(2, 6, act="gelu")
    with pytest.raises(ValueError, match="x must have last dimension 8"):
        AdaLayerNorm(8)(torch.zeros(2, 3, 4), torch.zeros(2, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"scale must have shape \(N, C\)"):
        GroupNormAct(2, 4)(torch.zeros(2, 4, 3), torch.zeros(4))
