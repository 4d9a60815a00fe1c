"""Forecast metrics against hand-computed values, scipy, and their defining properties."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from genkernels.metrics.forecast import (coverage, crps_gaussian, crps_quantiles, gaussian_nll, mae, mase,
                                         mase_scale, pinball_loss, quantile_loss, rmse, smape)


def test_point_errors_by_hand():
    pred, truth = [1.0, 2.0, 4.0, 0.0], [2.0, 2.0, 1.0, 0.0]
    assert mae(pred, truth) == pytest.approx((1 + 0 + 3 + 0) / 4)
    assert rmse(pred, truth) == pytest.approx(math.sqrt((1 + 0 + 9 + 0) / 4))
    # 200 |p - y| / (|p| + |y|): 200/3, 0, 120, and 0 for the 0/0 point
    assert smape(pred, truth) == pytest.approx((200 / 3 + 0 + 120 + 0) / 4)
    assert smape([1.0], [-1.0]) == pytest.approx(200.0)  # the upper bound
    assert mae(torch.ones(2, 3), np.zeros((2, 3))) == 1.0  # tensors and arrays alike


def test_mase_by_hand():
    history = [1.0, 3.0, 2.0, 4.0, 3.0]
    assert mase_scale(history) == pytest.approx((2 + 1 + 2 + 1) / 4)
    assert mase_scale(history, season=2) == pytest.approx((1 + 1 + 1) / 3)
    pred = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    truth = torch.tensor([[2.0, 3.0], [0.0, 1.0]])  # window MAEs 1.5 and 0.5
    assert mase(pred, truth, torch.tensor([0.5, 1.0])) == pytest.approx((3.0 + 0.5) / 2)
    assert mase(pred, truth, 2.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="more than season=5"):
        mase_scale(history, season=5)
    with pytest.raises(ValueError, match="one per window"):
        mase(pred, truth, torch.ones(3))


def _crps_by_integration(mean, std, y):
    cdf = stats.norm(mean, std).cdf
    below, _ = integrate.quad(lambda x: cdf(x) ** 2, mean - 12 * std, y, limit=200)
    above, _ = integrate.quad(lambda x: (1 - cdf(x)) ** 2, y, mean + 12 * std, limit=200)
    return below + above


@pytest.mark.parametrize("mean, std, y", [(0.0, 1.0, 0.0), (1.0, 2.0, 4.0), (-3.0, 0.5, -3.2)])
def test_crps_gaussian_matches_the_integral(mean, std, y):
    assert crps_gaussian([mean], [std], [y]) == pytest.approx(_crps_by_integration(mean, std, y), rel=1e-6)


def test_crps_of_a_degenerate_gaussian_is_the_absolute_error():
    mean, y = torch.tensor([1.0, 2.0, -1.0]), torch.tensor([3.0, 2.0, 0.5])
    assert crps_gaussian(mean, torch.zeros(3), y) == pytest.approx(mae(mean, y))
    assert crps_gaussian(mean, torch.full((3,), 1e-9), y) == pytest.approx(mae(mean, y), abs=1e-8)
    assert crps_gaussian(mean, 0.0, y) == pytest.approx(mae(mean, y))  # a broadcast std
    with pytest.raises(ValueError, match="std must be >= 0"):
        crps_gaussian(mean, -torch.ones(3), y)


def test_pinball_by_hand_and_the_quantile_crps_approaches_the_gaussian_one():
    # tau 0.1: y above q by 2 -> 0.2; tau 0.9: y below q by 1 -> 0.1
    assert pinball_loss([[1.0, 4.0]], [3.0], [0.1, 0.9]) == pytest.approx((0.1 * 2 + 0.1 * 1) / 2)
    assert quantile_loss is pinball_loss
    # the median's pinball loss is half the absolute error
    assert pinball_loss([[1.0]], [4.0], [0.5]) == pytest.approx(1.5)
    levels = np.arange(1, 200) / 200
    rng = np.random.default_rng(0)
    y = rng.normal(size=500)
    quantiles = np.broadcast_to(stats.norm.ppf(levels), (500, len(levels)))
    exact = crps_gaussian(np.zeros(500), np.ones(500), y)
    assert crps_quantiles(quantiles, y, levels) == pytest.approx(exact, rel=0.02)
    with pytest.raises(ValueError, match="one level per prediction column"):
        pinball_loss([[1.0, 2.0]], [1.0], [0.5])
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        pinball_loss([[1.0]], [1.0], [1.5])
    with pytest.raises(ValueError, match="target.shape"):
        pinball_loss([1.0, 2.0], [1.0, 2.0], [0.5])


def test_coverage_and_gaussian_nll():
    y = torch.tensor([0.0, 1.0, 2.0, 3.0])
    assert coverage(torch.zeros(4), torch.full((4,), 2.0), y) == pytest.approx(0.75)  # the ends count
    mean, std = np.array([0.0, 1.0]), np.array([1.0, 2.0])
    target = np.array([0.5, -1.0])
    assert gaussian_nll(mean, std, target) == pytest.approx(-stats.norm.logpdf(target, mean, std).mean())


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        mae([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="empty"):
        rmse([], [])
    with pytest.raises(TypeError, match="real numbers"):
        mae(torch.tensor([True]), torch.tensor([False]))
    with pytest.raises(TypeError, match="prediction must be a tensor"):
        mae("abc", [1.0])
