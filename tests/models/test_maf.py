"""MAF: MADE masks are autoregressive, blocks invert, log-determinants equal autograd's, the 2D
density integrates to 1, and a few hundred seeded steps on moons beat a fitted Gaussian."""
import pytest
import torch

from genkernels.data import get_dataset
from genkernels.metrics import gaussian_loglik
from genkernels.models import get_model_class
from genkernels.models.maf import MADE, MAF, MAFBlock, MAFConfig, made_masks


def randomise_outputs(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> None:
    """The MADE output layers start at zero (identity blocks): give them random weights so the
    tests below see non-trivial transforms."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for made in (m for m in module.modules() if isinstance(m, MADE)):
            made.output.weight.copy_(torch.randn(made.output.weight.shape, generator=generator) * scale)
            made.output.bias.copy_(torch.randn(made.output.bias.shape, generator=generator) * scale)


@pytest.mark.parametrize("dims, hidden, layers", [(5, 16, 2), (2, 8, 1), (7, 3, 3), (1, 4, 1)])
def test_made_jacobian_is_strictly_lower_triangular(dims, hidden, layers):
    torch.manual_seed(0)
    made = MADE(dims, hidden, layers, context_features=3)
    randomise_outputs(made)
    x, context = torch.randn(dims, dtype=torch.float64), torch.randn(1, 3, dtype=torch.float64)
    made.double()
    for part in (0, 1):  # mu, then alpha
        jacobian = torch.autograd.functional.jacobian(lambda v: made(v[None], context)[part][0], x)  # (D, D)
        assert torch.equal(jacobian.triu(), torch.zeros_like(jacobian)), jacobian
    masks = made_masks(dims, hidden, layers)
    connectivity = masks[-1]
    for mask in reversed(masks[:-1]):
        connectivity = connectivity @ mask  # paths from input j to output i
    assert torch.equal(connectivity.triu() > 0, torch.zeros(dims, dims, dtype=torch.bool))
    if hidden >= dims - 1:  # every allowed connection exists
        assert bool((connectivity.tril(-1) > 0)[torch.ones(dims, dims).tril(-1) > 0].all())


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("options", [{}, {"permutation": "random", "actnorm": True, "num_classes": 4}])
def test_inverse_of_forward_returns_the_input(dtype, tolerance, options):
    torch.manual_seed(0)
    model = MAF(MAFConfig(data_shape=(5,), num_blocks=3, hidden=16, **options)).to(dtype)
    randomise_outputs(model)
    x = torch.randn(64, 5, dtype=dtype)
    labels = torch.arange(64) % 4 if options else None
    if options:
        model.flow.initialize(x, model.class_context(labels))  # ActNorm's data-dependent init
    model.eval()
    z, logdet = model.transform(x, labels)
    back, inverse_logdet = model.inverse_transform(z, labels)
    assert (back - x).abs().max().item() < tolerance * 10
    assert (logdet + inverse_logdet).abs().max().item() < tolerance * 10
    assert not torch.allclose(z, x)  # the flow does something


def test_logdet_equals_the_autograd_jacobian():
    torch.manual_seed(0)
    model = MAF(MAFConfig(data_shape=(4,), num_blocks=3, hidden=12, permutation="random")).double()
    randomise_outputs(model, scale=0.5)
    for x in torch.randn(3, 4, dtype=torch.float64):
        jacobian = torch.autograd.functional.jacobian(lambda v: model.transform(v[None])[0][0], x)  # (4, 4)
        _, logdet = model.transform(x[None])
        torch.testing.assert_close(logdet[0], torch.linalg.slogdet(jacobian)[1], rtol=1e-10, atol=1e-10)


def test_a_block_is_one_pass_forward_and_dims_passes_inverse():
    block = MAFBlock(6, 8, 1)
    calls = []
    block.made.register_forward_hook(lambda *args: calls.append(1))
    u, _ = block(torch.randn(2, 6))
    assert len(calls) == 1
    block.inverse(u)
    assert len(calls) == 1 + 6


def test_density_integrates_to_one_on_a_grid():
    """Riemann sum of exp(log p) over [-7, 7]^2 at 351^2 points; tolerance 1% (grid and tails)."""
    torch.manual_seed(0)
    model = MAF(MAFConfig(num_blocks=3, hidden=16)).double()
    randomise_outputs(model, scale=0.4)
    axis = torch.linspace(-7, 7, 351, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        mass = model.log_prob(grid).exp().sum().item() * (14 / 350) ** 2
    assert mass == pytest.approx(1.0, abs=0.01)


def test_short_training_on_moons_beats_the_gaussian_baseline():
    """300 seeded steps of a small MAF (a few seconds): held-out log-likelihood above a fitted
    full-covariance Gaussian's (about -2.58 nats on moons)."""
    torch.manual_seed(0)
    train, test = get_dataset("moons", "train"), get_dataset("moons", "test", n=1000)
    model = MAF(MAFConfig(num_blocks=4, hidden=32))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        batch = train.points[torch.randint(0, len(train), (128,), generator=generator)]
        loss = model.loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        held_out = model.log_prob(test.points).mean().item()
    baseline = gaussian_loglik(train.points, test.points)
    assert held_out > baseline + 0.3, (held_out, baseline)


def test_digits_vectors_and_class_conditioning():
    torch.manual_seed(0)
    digits = get_dataset("digits", "train")
    model = MAF(MAF.config_for_data(digits, {"num_blocks": 2, "hidden": 64, "num_classes": 10}))
    assert model.config.data_shape == (1, 8, 8) and model.config.num_levels == 17
    loss = model.loss((digits.images[:16], digits.labels[:16]))["loss"]
    assert loss.isfinite() and 1.0 < loss.item() < 10.0  # bits/dim at initialisation
    samples = model.sample(3, labels=[1, 2, 3], seed=0)
    assert samples.shape == (3, 1, 8, 8) and 0 <= samples.min() and samples.max() <= 1
    assert set(model.evaluate(get_dataset("digits", "val"), max_items=32)) == {"nll_bpd", "uniform_bpd"}


def test_registered_and_configured_from_data():
    assert get_model_class("maf") is MAF and MAF.default_data == "moons"
    assert MAF.sample_conditions() == ["labels", "temperature", "seed"]


@pytest.mark.parametrize("field, value, error", [
    ("num_blocks", 0, ValueError), ("hidden", 2.0, TypeError), ("permutation", "shuffle", ValueError),
    ("actnorm", 1, TypeError), ("alpha_max", 0.0, ValueError), ("alpha_max", float("nan"), ValueError),
])
def test_bad_config_is_refused(field, value, error):
    with pytest.raises(error, match=field):
        MAFConfig(**{field: value})


def test_wrong_shapes_are_refused():
    model = MAF()
    with pytest.raises(ValueError, match="shape"):
        model.log_prob(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="z must"):
        model.inverse_transform(torch.zeros(3, 3))
