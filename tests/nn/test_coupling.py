"""genkernels.nn coupling layers: AffineCoupling, AdditiveCoupling, SplineCoupling.

Round trips in float32 and float64 (tolerances in flow_helpers.ROUNDTRIP_TOL), log-determinants
against the autograd Jacobian in float64 for every mask and parity, context conditioning, custom
conditioners, the identity at initialisation, and bad input."""
import pytest
import torch
from torch import nn

from genkernels.nn import AdditiveCoupling, AffineCoupling, SplineCoupling
from tests.nn.flow_helpers import check_logdet, check_roundtrip, randomize

MASKS = [("channel", 0), ("channel", 1), ("checkerboard", 0), ("checkerboard", 1)]


def _layers(mask, parity, context_channels=None, conditioner=None):
    kw = dict(mask=mask, parity=parity, context_channels=context_channels, conditioner=conditioner)
    return {
        "affine-tanh": AffineCoupling(4, 8, **kw),
        "affine-sigmoid": AffineCoupling(4, 8, form="sigmoid", scale=1.5, **kw),
        "additive": AdditiveCoupling(4, 8, **kw),
        "spline": SplineCoupling(4, 8, num_bins=5, tail_bound=2.5, **kw),
    }


def _image(dtype, n=2, c=4, h=4, w=4):
    return 1.5 * torch.randn(n, c, h, w, dtype=dtype)  # some elements outside the spline's bound


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mask, parity", MASKS)
def test_roundtrip_images(mask, parity, dtype):
    x = _image(dtype, h=6, w=8)
    for name, layer in _layers(mask, parity).items():
        layer = randomize(layer.to(dtype))
        y, _ = check_roundtrip(layer, x)
        assert y.shape == x.shape and y.dtype == dtype, name
        assert not torch.allclose(y, x), name


@pytest.mark.parametrize("parity", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_roundtrip_vectors_mlp(parity, dtype):
    x = 1.5 * torch.randn(5, 6, dtype=dtype)
    for layer in (AffineCoupling(6, 16, parity=parity, conditioner="mlp"),
                  AdditiveCoupling(6, 16, parity=parity, conditioner="mlp"),
                  SplineCoupling(6, 16, parity=parity, conditioner="mlp")):
        y, _ = check_roundtrip(randomize(layer.to(dtype)), x)
        kept = slice(0, 3) if parity == 0 else slice(3, 6)
        assert torch.equal(y[:, kept], x[:, kept])


@pytest.mark.parametrize("mask, parity", MASKS)
def test_logdet_matches_jacobian(mask, parity):
    x = _image(torch.float64)
    for name, layer in _layers(mask, parity).items():
        check_logdet(randomize(layer.double()), x)


def test_logdet_matches_jacobian_vectors():
    x = 1.5 * torch.randn(3, 6, dtype=torch.float64)
    for cls in (AffineCoupling, AdditiveCoupling, SplineCoupling):
        check_logdet(randomize(cls(6, 16, parity=1, conditioner="mlp").double()), x)


@pytest.mark.parametrize("mask, parity", MASKS)
def test_identity_parts_pass_unchanged(mask, parity):
    x = _image(torch.float32)
    if mask == "channel":
        kept = (slice(None), slice(0, 2) if parity == 0 else slice(2, 4))
    else:
        h, w = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
        kept = (slice(None), slice(None), (h + w) % 2 == parity)
    for layer in _layers(mask, parity).values():
        y, _ = randomize(layer)(x)
        assert torch.equal(y[kept], x[kept])


@pytest.mark.parametrize("mask, parity", MASKS)
def test_starts_as_identity(mask, parity):
    """The zero-initialised conditioner head: tanh-affine, additive and spline start at y = x."""
    x = _image(torch.float32)
    for name, layer in _layers(mask, parity).items():
        if name == "affine-sigmoid":  # log(sigmoid(2)) != 0: Glow's form starts as a contraction
            continue
        y, logdet = layer(x)
        torch.testing.assert_close(y, x, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(logdet, torch.zeros(2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mask, parity", [("channel", 1), ("checkerboard", 0)])
def test_context_conditioning(mask, parity):
    x = _image(torch.float64)
    context = torch.randn(2, 3, dtype=torch.float64)
    for name, layer in _layers(mask, parity, context_channels=3).items():
        layer = randomize(layer.double())
        check_roundtrip(layer, x, context)
        check_logdet(layer, x, context)
        y1, _ = layer(x, context)
        y2, _ = layer(x, context.flip(0))
        assert not torch.allclose(y1, y2), name  # the output depends on the context
        context_leaf = context.clone().requires_grad_()
        y, logdet = layer(x, context_leaf)
        (y.square().sum() + logdet.sum()).backward()
        assert context_leaf.grad is not None and context_leaf.grad.abs().sum() > 0, name


def test_context_conditioning_vectors():
    x = torch.randn(4, 6)
    context = torch.randn(4, 2)
    layer = randomize(AffineCoupling(6, 16, conditioner="mlp", context_channels=2))
    check_roundtrip(layer, x, context)
    assert not torch.allclose(layer(x, context)[0], layer(x, torch.zeros_like(context))[0])


class _Linear1x1(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, 1)

    def forward(self, h):
        return self.conv(h)


def test_custom_conditioner_any_rank():
    """A user module replaces the default network; (N, C, L) inputs work with mask='channel'."""
    x = torch.randn(3, 4, 7, dtype=torch.float64)
    affine = randomize(AffineCoupling(4, mask="channel", conditioner=_Linear1x1(2, 4)).double())
    spline = randomize(SplineCoupling(4, num_bins=4, conditioner=_Linear1x1(2, 2 * 11)).double())
    for layer in (affine, spline):
        check_roundtrip(layer, x)
        check_logdet(layer, x[:, :, :3].contiguous())
    wrong = AffineCoupling(4, conditioner=_Linear1x1(2, 3))
    with pytest.raises(ValueError, match="conditioner output must be"):
        wrong(x.float())


def test_gradients_flow_to_every_parameter():
    x = _image(torch.float32)
    for name, layer in _layers("checkerboard", 1, context_channels=2).items():
        layer = randomize(layer)
        y, logdet = layer(x, torch.randn(2, 2))
        (y.square().sum() - logdet.sum()).backward()
        for pname, p in layer.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (name, pname)


def test_bad_input():
    with pytest.raises(ValueError, match="channels must be even"):
        AffineCoupling(3)
    with pytest.raises(ValueError, match="mask must be one of"):
        AffineCoupling(4, mask="stripes")
    with pytest.raises(ValueError, match="parity must be 0 or 1"):
        AdditiveCoupling(4, parity=2)
    with pytest.raises(ValueError, match="form must be"):
        AffineCoupling(4, form="exp")
    with pytest.raises(TypeError, match="conditioner must be"):
        AffineCoupling(4, conditioner="resnet")
    with pytest.raises(ValueError, match="conditioner='mlp' is for vectors"):
        AffineCoupling(4, mask="checkerboard", conditioner="mlp")
    with pytest.raises(ValueError, match="num_bins must be >= 2"):
        SplineCoupling(4, num_bins=1)
    layer = AffineCoupling(4, 8, mask="checkerboard")
    with pytest.raises(ValueError, match="even H and W"):
        layer(torch.randn(2, 4, 5, 4))
    with pytest.raises(ValueError, match=r"must be \(N, 4, ...\)"):
        layer(torch.randn(2, 6, 4, 4))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) for the conv conditioner"):
        AffineCoupling(4)(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"\(N, D\) for the MLP"):
        AffineCoupling(4, conditioner="mlp")(torch.randn(2, 4, 3))
    with pytest.raises(TypeError, match="floating-point"):
        AffineCoupling(4)(torch.ones(2, 4, 4, 4, dtype=torch.long))
    x = torch.randn(2, 4, 4, 4)
    assert torch.equal(layer(x, torch.randn(2, 3))[0], layer(x)[0])  # no context_channels: context ignored
    conditional = AffineCoupling(4, 8, context_channels=3)
    with pytest.raises(ValueError, match="context .* is required"):
        conditional(torch.randn(2, 4, 4, 4))
    with pytest.raises(ValueError, match="context must be"):
        conditional(torch.randn(2, 4, 4, 4), torch.randn(2, 2))


def test_nan_propagates():
    x = _image(torch.float32)
    x[0, 2, 1, 1] = float("nan")  # a transformed element of channel-mask parity 0
    y, logdet = randomize(AffineCoupling(4, 8))(x)
    assert torch.isnan(y[0, 2, 1, 1]) and torch.isfinite(y[1]).all()


def test_repr():
    assert "mask='checkerboard', parity=1" in repr(AffineCoupling(4, mask="checkerboard", parity=1))
    assert "num_bins=8" in repr(SplineCoupling(4))
