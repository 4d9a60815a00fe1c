"""FlowModel (genkernels.models.flow_base): dequantisation, likelihood units, sampling, evaluate,
figures and anomaly scores, through a one-layer diagonal affine "flow" whose density is known."""
import dataclasses
import math

import pytest
import torch
from torch import nn

from genkernels.data import get_dataset
from genkernels.models.flow_base import FlowConfig, FlowModel, standard_normal_log_prob


@dataclasses.dataclass
class DiagonalConfig(FlowConfig):
    """data_shape etc. from FlowConfig; no fields of its own."""


class DiagonalFlow(FlowModel):
    """z = (v - shift[label]) * exp(-log_scale): a diagonal Gaussian, per-class shift when conditional."""

    name = "diagonal"
    config_class = DiagonalConfig

    def __init__(self, config=None):
        super().__init__(config if config is not None else DiagonalConfig())
        self.shift = nn.Parameter(torch.zeros(max(1, self.config.num_classes), *self.data_shape))
        self.log_scale = nn.Parameter(torch.zeros(self.data_shape))

    def _shift(self, labels, n):
        return self.shift[labels] if labels is not None else self.shift[0].expand(n, *self.data_shape)

    def log_prob_continuous(self, v, labels=None):
        z = (v - self._shift(labels, v.shape[0])) * torch.exp(-self.log_scale)
        return standard_normal_log_prob(z) - self.log_scale.sum().expand(v.shape[0])

    def sample_continuous(self, n, temperature=1.0, labels=None, generator=None):
        z = temperature * torch.randn((n, *self.data_shape), generator=generator, device=self.device)
        return z * torch.exp(self.log_scale) + self._shift(labels, n)


class UniformFlow(DiagonalFlow):
    """log p(v) = 0: the uniform density on [0, 1)^D under preprocess="scale"."""

    def log_prob_continuous(self, v, labels=None):
        return torch.zeros(v.shape[0], dtype=v.dtype, device=v.device) + 0 * self.log_scale.sum()


def digits_flow(cls=DiagonalFlow, **overrides):
    return cls(cls.config_for_data(get_dataset("digits", "train"), overrides))


# -- config and data ------------------------------------------------------------------------------
def test_config_for_data_reads_shape_and_levels():
    points = DiagonalFlow.config_for_data(get_dataset("moons", "train"))
    assert points.data_shape == (2,) and points.num_levels == 0
    images = DiagonalFlow.config_for_data(get_dataset("digits", "train"), {"num_classes": 10})
    assert images.data_shape == (1, 8, 8) and images.num_levels == 17 and images.num_classes == 10


@pytest.mark.parametrize("field, value, error", [
    ("num_levels", 1, ValueError), ("dequantization", "gaussian", ValueError), ("preprocess", "tanh", ValueError),
    ("logit_alpha", 0.5, ValueError), ("data_shape", (2, 0), ValueError), ("num_classes", 1.5, TypeError),
])
def test_bad_config_is_refused(field, value, error):
    with pytest.raises(error, match=field):
        DiagonalConfig(**{field: value})


def test_bad_inputs_name_the_problem():
    model = DiagonalFlow()
    with pytest.raises(ValueError, match=r"\(N, \*\(2,\)\)"):
        model.log_prob(torch.zeros(4, 3))
    with pytest.raises(TypeError, match="tensor"):
        model.log_prob([[0.0, 0.0]])
    conditional = DiagonalFlow(DiagonalConfig(num_classes=3))
    with pytest.raises(ValueError, match="class-conditional"):
        conditional.log_prob(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="digits"):  # an image model cannot evaluate points
        digits_flow().check_dataset(get_dataset("moons", "val"), "digits")


def test_nan_propagates():
    model = DiagonalFlow()
    log_p = model.log_prob(torch.tensor([[float("nan"), 0.0], [0.0, 0.0]]))
    assert torch.isnan(log_p[0]) and torch.isfinite(log_p[1])


# -- dequantisation and the level-grid bound ------------------------------------------------------
@pytest.mark.parametrize("dequantization", ["uniform", "variational"])
def test_dequantised_values_stay_in_their_bins(dequantization):
    torch.manual_seed(0)
    model = digits_flow(preprocess="scale", dequantization=dequantization)
    levels = get_dataset("digits-levels", "val").images[:32]
    v, correction = model.dequantize(levels)
    assert v.shape == levels.shape and correction.shape == (32,)
    assert torch.equal((v * 17).floor().long(), levels)  # y = (x + u) / L with u in [0, 1)
    if dequantization == "uniform":  # log|dv/dy| = 0 and q = 1: only the bin volume, -D log L
        torch.testing.assert_close(correction, torch.full((32,), -64 * math.log(17)))


def test_uniform_density_scores_log2_levels_bits_per_dim():
    model = digits_flow(UniformFlow, preprocess="scale")
    metrics = model.evaluate(get_dataset("digits", "val"), max_items=64)
    assert metrics["nll_bpd"] == pytest.approx(math.log2(17), abs=1e-6)
    assert metrics["uniform_bpd"] == pytest.approx(math.log2(17))
    loss = model.loss(get_dataset("digits", "train").images[:16])["loss"]  # bits/dim, like nll_bpd
    assert loss.item() == pytest.approx(math.log2(17), abs=1e-5)


def test_logit_log_det_matches_autograd():
    model = DiagonalFlow(DiagonalConfig(data_shape=(3,), num_levels=5))
    y = torch.tensor([[0.01, 0.5, 0.97]], dtype=torch.float64, requires_grad=True)
    v, log_det = model._preprocess(y)
    slopes = torch.autograd.grad(v.sum(), y)[0]  # elementwise map: the Jacobian is diagonal
    torch.testing.assert_close(log_det, slopes.log().sum(1).detach())
    torch.testing.assert_close(model._postprocess(v.detach()), y.detach())


@pytest.mark.parametrize("preprocess", ["logit", "scale"])
def test_discrete_likelihood_bound_sums_to_at_most_one(preprocess):
    """exp(E_u log p) <= P(x) by Jensen, and the P(x) of a density sum to 1 over the grid: so the
    bounds of all L^D level combinations sum to <= 1, and to nearly 1 for a smooth wide density."""
    torch.manual_seed(0)
    model = DiagonalFlow(DiagonalConfig(data_shape=(2,), num_levels=6, preprocess=preprocess))
    with torch.no_grad():
        model.shift.fill_(0.5 if preprocess == "scale" else 0.0)
        model.log_scale.fill_(math.log(0.3) if preprocess == "scale" else 0.0)
    grid = torch.cartesian_prod(torch.arange(6), torch.arange(6))  # (36, 2) levels
    draws = torch.stack([model.log_prob(grid) for _ in range(400)])  # (400, 36)
    bound_total = draws.mean(0).exp().sum().item()
    estimate_total = draws.exp().mean(0).sum().item()  # Monte Carlo P(x) summed: the mass on the grid
    # the mass the density puts on the grid's range: [logit(a), logit(1 - a)]^2 for the logit
    # transform (a = 0.05, z ~ N(0, 1)), [0, 1]^2 for N(0.5, 0.3^2) per coordinate when scaled
    edge = math.log(0.95 / 0.05) if preprocess == "logit" else 0.5 / 0.3  # in standard deviations
    inside = math.erf(edge / math.sqrt(2))
    assert estimate_total == pytest.approx(inside**2, abs=0.01)
    assert 0.9 * inside**2 < bound_total <= estimate_total


def test_variational_dequantizer_is_trained_by_the_loss():
    model = digits_flow(dequantization="variational")
    model.loss(get_dataset("digits", "train").images[:8])["loss"].backward()
    grads = [p.grad for p in model.dequantizer.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


# -- points: exact density, units, evaluate, figures, anomaly score -------------------------------
def test_points_log_prob_is_the_exact_density_and_loss_is_nats():
    model = DiagonalFlow()
    x = torch.randn(16, 2)
    expected = -0.5 * (x.pow(2) + math.log(2 * math.pi)).sum(1)
    torch.testing.assert_close(model.log_prob(x), expected)
    torch.testing.assert_close(model.loss(x)["loss"], -expected.mean())
    torch.testing.assert_close(model.anomaly_score(x), -expected)
    assert model.metric_units["loss"] == "nats/point" and digits_flow().metric_units["loss"] == "bits/dim"


def test_points_evaluate_reports_baselines_beside_the_model():
    model = DiagonalFlow()
    metrics = model.evaluate(get_dataset("moons", "val"), max_items=500)
    assert set(metrics) == {"loglik_nats", "gaussian_loglik_nats", "kde_loglik_nats"}
    # a standard normal is a worse fit than the fitted Gaussian, which is worse than the KDE
    assert metrics["loglik_nats"] < metrics["gaussian_loglik_nats"] < metrics["kde_loglik_nats"]
    assert metrics["loglik_nats"] == pytest.approx(
        model.log_prob(get_dataset("moons", "val").points[:500]).mean().item(), abs=1e-5)


def test_points_figures_are_a_density_heatmap():
    from matplotlib.figure import Figure

    model = DiagonalFlow()
    figures = model.figures(model.sample(200, seed=0))
    assert set(figures) == {"samples"} and isinstance(figures["samples"], Figure)


def test_sampling_is_seeded_and_tempered():
    model = DiagonalFlow()
    assert torch.equal(model.sample(8, seed=3), model.sample(8, seed=3))
    assert not torch.equal(model.sample(8, seed=3), model.sample(8, seed=4))
    assert torch.equal(model.sample(8, temperature=0.0, seed=1), torch.zeros(8, 2))
    assert model.sample(4000, temperature=0.5, seed=0).std().item() == pytest.approx(0.5, rel=0.05)


# -- images: samples on the level grid, figures, conditioning --------------------------------------
def test_image_samples_lie_on_the_level_grid_and_figures_are_grids():
    from PIL import Image

    model = digits_flow()
    samples = model.sample(6, seed=0)
    assert samples.shape == (6, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    torch.testing.assert_close(samples * 16, (samples * 16).round())
    figures = model.figures(samples)
    assert set(figures) == {"samples", "temperatures"}
    assert all(isinstance(f, Image.Image) for f in figures.values())


def test_class_conditioning_reaches_the_flow():
    model = digits_flow(num_classes=10)
    with torch.no_grad():
        model.shift[3].fill_(2.0)  # class 3 lives at large logits: bright images
    bright, dark = model.sample(4, labels=3, seed=0), model.sample(4, labels=0, seed=0)
    assert bright.mean() > dark.mean()
    images, labels = get_dataset("digits", "train").images[:8], torch.arange(8)
    assert model.loss((images, labels))["loss"].isfinite()
    metrics = model.evaluate(get_dataset("digits", "val"), max_items=32)
    assert set(metrics) == {"nll_bpd", "uniform_bpd"}
    with pytest.raises(ValueError, match="labels"):
        model.loss(images)
