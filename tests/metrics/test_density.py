"""Density baselines (Gaussian, KDE), anomaly ROC AUC, and the density heat-map figure they go with."""
import math

import numpy as np
import pytest
import torch

from genkernels.metrics import anomaly_auc, gaussian_loglik, kde_loglik, select_kde_bandwidth


def test_gaussian_loglik_matches_the_closed_form():
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(20000, 2, generator=generator, dtype=torch.float64) * torch.tensor([2.0, 0.5]) + 1.0
    test = torch.randn(5000, 2, generator=generator, dtype=torch.float64) * torch.tensor([2.0, 0.5]) + 1.0
    # expected log-likelihood of N(mu, diag(4, 0.25)) on its own samples: -D/2 (1 + log 2 pi) - log(2 * 0.5)
    expected = -(1 + math.log(2 * math.pi)) - math.log(2.0 * 0.5)
    assert gaussian_loglik(train, test) == pytest.approx(expected, abs=0.03)
    assert gaussian_loglik(train.numpy(), test.numpy()) == pytest.approx(gaussian_loglik(train, test))


def test_kde_beats_the_gaussian_on_a_multimodal_set():
    from genkernels.data import sample_toy

    train, test = sample_toy("8gaussians", 3000, seed=1), sample_toy("8gaussians", 1000, seed=2)
    gaussian, kde = gaussian_loglik(train, test), kde_loglik(train, test)
    assert kde > gaussian + 1.0
    # the chosen bandwidth beats a much wider and a much narrower one on the test points
    chosen = select_kde_bandwidth(train)
    assert kde_loglik(train, test, bandwidth=chosen) == pytest.approx(kde, abs=1e-3)
    assert kde > kde_loglik(train, test, bandwidth=10 * chosen)
    assert kde > kde_loglik(train, test, bandwidth=chosen / 10)


def test_anomaly_auc_orders_scores():
    assert anomaly_auc([0.0, 1.0, 2.0], [3.0, 4.0]) == 1.0
    assert anomaly_auc(torch.tensor([3.0, 4.0]), torch.tensor([0.0, 1.0])) == 0.0
    assert anomaly_auc(np.zeros(5), np.zeros(5)) == 0.5
    with pytest.raises(ValueError, match="finite"):
        anomaly_auc([0.0, float("nan")], [1.0])


@pytest.mark.parametrize("call, error, match", [
    (lambda: gaussian_loglik(torch.zeros(5, 2), torch.zeros(5, 3)), ValueError, "same dimension"),
    (lambda: gaussian_loglik([[0.0, 1.0]], torch.zeros(5, 2)), TypeError, "train"),
    (lambda: kde_loglik(torch.zeros(2, 2), torch.zeros(5, 2)), ValueError, "at least 4"),
    (lambda: kde_loglik(torch.randn(10, 2), torch.zeros(5, 2), bandwidth=0.0), ValueError, "bandwidth"),
    (lambda: select_kde_bandwidth(torch.randn(10, 2), holdout_fraction=1.0), ValueError, "holdout_fraction"),
])
def test_bad_inputs_are_refused(call, error, match):
    with pytest.raises(error, match=match):
        call()


# -- genkernels.figures.density_heatmap ------------------------------------------------------------
def test_density_heatmap_draws_the_density_beside_the_samples(tmp_path):
    from matplotlib.figure import Figure

    from genkernels.figures import density_heatmap, save_figure

    seen = []

    def standard_normal(points):
        seen.append(points.shape)
        return -0.5 * (points.pow(2).sum(1) + 2 * math.log(2 * math.pi))

    figure = density_heatmap(standard_normal, torch.randn(300, 2), resolution=50)
    assert isinstance(figure, Figure) and len([a for a in figure.axes if a.get_title()]) == 2
    assert sum(s[0] for s in seen) == 50 * 50 and all(s[1] == 2 for s in seen)
    image = figure.axes[0].images[0].get_array()
    assert image.shape == (50, 50)
    assert (tmp_path / "d.png").name in save_figure(figure, tmp_path / "d.png")
    alone = density_heatmap(standard_normal, bounds=(-3, 3, -3, 3), resolution=40)
    grid = alone.axes[0].images[0].get_array()
    assert float(grid.sum()) * (6.0 / 39) ** 2 == pytest.approx(1.0, abs=0.02)  # it integrates to ~1
    with pytest.raises(ValueError, match="bounds"):
        density_heatmap(standard_normal, bounds=(1, 0, 0, 1))
    with pytest.raises(ValueError, match="samples"):
        density_heatmap(standard_normal, torch.zeros(5, 3))
