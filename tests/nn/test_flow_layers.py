"""genkernels.nn ActNorm, InvertibleConv1x1, Squeeze, Permute: round trips (float32 / float64,
flow_helpers.ROUNDTRIP_TOL), log-determinants against the autograd Jacobian (float64), ActNorm's
data-dependent initialisation, and bad input."""
import pytest
import torch

from genkernels.nn import ActNorm, InvertibleConv1x1, Permute, Squeeze
from tests.nn.flow_helpers import check_logdet, check_roundtrip, randomize


def _layers(channels=4):
    return {
        "actnorm": ActNorm(channels),
        "conv1x1-lu": InvertibleConv1x1(channels),
        "conv1x1-plain": InvertibleConv1x1(channels, lu=False),
        "squeeze": Squeeze(),
        "permute-reverse": Permute(channels),
        "permute-random": Permute(channels, mode="random", seed=3),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_roundtrip(dtype):
    x = torch.randn(3, 4, 6, 8, dtype=dtype)
    for name, layer in _layers().items():
        layer = randomize(layer.to(dtype))
        y, _ = check_roundtrip(layer, x)
        assert y.dtype == dtype, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_roundtrip_vectors(dtype):
    x = torch.randn(5, 6, dtype=dtype)
    for name, layer in _layers(6).items():
        if name != "squeeze":
            check_roundtrip(randomize(layer.to(dtype)), x)


def test_logdet_matches_jacobian():
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    for name, layer in _layers().items():
        check_logdet(randomize(layer.double()), x)
    check_logdet(randomize(InvertibleConv1x1(6).double()), torch.randn(3, 6, dtype=torch.float64))
    check_logdet(Squeeze(factor=3), torch.randn(1, 2, 3, 6, dtype=torch.float64))


def test_actnorm_data_dependent_init():
    x = 3.0 + 2.0 * torch.randn(16, 3, 5, 5)
    layer = ActNorm(3)
    assert layer.needs_initialization and "initialized" in layer.state_dict()
    y, logdet = layer(x)
    assert not layer.needs_initialization
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(logdet, torch.full((16,), 25 * layer.log_scale.sum().item()))
    # the second batch is not used to re-initialise; the state dict carries the flag
    before = layer.bias.detach().clone()
    layer(torch.randn(16, 3, 5, 5))
    assert torch.equal(layer.bias, before)
    fresh = ActNorm(3)
    fresh.load_state_dict(layer.state_dict())
    assert not fresh.needs_initialization and torch.equal(fresh(x)[0], y)


def test_actnorm_eval_mode_does_not_initialize():
    layer = ActNorm(2).eval()
    x = torch.randn(4, 2)
    y, logdet = layer(x)
    assert layer.needs_initialization and torch.equal(y, x) and torch.equal(logdet, torch.zeros(4))


def test_actnorm_init_rejects_non_finite():
    for bad in (float("nan"), float("inf")):
        x = torch.randn(4, 2, 3, 3)
        x[1, 0, 2, 2] = bad
        with pytest.raises(ValueError, match="finite"):
            ActNorm(2)(x)


def test_conv1x1_starts_orthogonal_and_lu_matches_plain():
    layer = InvertibleConv1x1(5)
    weight, logabsdet = layer.weight_and_logabsdet(torch.float64)
    torch.testing.assert_close(weight @ weight.t(), torch.eye(5, dtype=torch.float64), atol=1e-6, rtol=0)
    assert abs(logabsdet.item()) < 1e-6
    randomize(layer)
    weight, logabsdet = layer.weight_and_logabsdet(torch.float64)
    torch.testing.assert_close(logabsdet, torch.linalg.slogdet(weight)[1])


def test_squeeze_layout():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    y, logdet = Squeeze()(x)
    assert y.shape == (2, 4, 2, 2) and torch.equal(logdet, torch.zeros(2))
    # channel i * 2 + j holds x[2h + i, 2w + j]
    assert torch.equal(y[0, 1], x[0, 0, 0::2, 1::2]) and torch.equal(y[0, 2], x[0, 0, 1::2, 0::2])


def test_permute_modes():
    x = torch.randn(2, 5, 3)
    y, _ = Permute(5)(x)
    assert torch.equal(y, x.flip(1))
    a, b = Permute(5, "random", seed=1), Permute(5, "random", seed=1)
    assert torch.equal(a.permutation, b.permutation)
    assert sorted(a.permutation.tolist()) == list(range(5))


def test_gradients_reach_parameters():
    x = torch.randn(2, 4, 4, 4)
    for name, layer in _layers().items():
        params = list(layer.parameters())
        if not params:
            continue
        y, logdet = randomize(layer)(x)
        (y.square().sum() - logdet.sum()).backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params), name


def test_bad_input():
    with pytest.raises(ValueError, match="H and W divisible by 2"):
        Squeeze()(torch.randn(1, 2, 5, 4))
    with pytest.raises(ValueError, match=r"at least 4 dimensions"):
        Squeeze()(torch.randn(2, 4))
    with pytest.raises(ValueError, match="Squeeze.*inverse needs"):
        Squeeze().inverse(torch.randn(1, 6, 2, 2))
    with pytest.raises(ValueError, match="factor must be >= 1"):
        Squeeze(0)
    with pytest.raises(ValueError, match="mode must be"):
        Permute(4, mode="shuffle")
    with pytest.raises(TypeError, match="channels must be an int"):
        ActNorm(4.0)
    for layer in (ActNorm(4), InvertibleConv1x1(4), Permute(4)):
        with pytest.raises(ValueError, match="must have 4 channels"):
            layer(torch.randn(2, 3, 4, 4))
        with pytest.raises(ValueError, match="at least 2 dimensions"):
            layer(torch.randn(4))
        with pytest.raises(TypeError, match="floating-point"):
            layer(torch.ones(2, 4, dtype=torch.int64))
