"""Point and probabilistic forecast metrics.

Every function takes tensors or arrays (anything `torch.as_tensor` reads), computes in float64 and
returns a Python float: the mean over every element given (all windows and horizon steps), unless
its docstring says otherwise. Units are those of the data, except where stated (sMAPE in percent,
MASE and coverage unitless).

    mae, rmse               point errors
    smape                   symmetric mean absolute percentage error, 0..200 %
    mase, mase_scale        mean absolute scaled error (Hyndman & Koehler 2006): the MAE divided by
                            the in-sample MAE of the seasonal naive forecast on each series' history
    crps_gaussian           CRPS of a Gaussian forecast, closed form (Gneiting & Raftery 2007)
    pinball_loss            quantile (pinball) loss averaged over quantile levels
    crps_quantiles          CRPS approximated from quantiles: 2 x the mean pinball loss over levels
    coverage                fraction of the truth inside a [lower, upper] interval
    gaussian_nll            negative log-likelihood of a Gaussian forecast, nats per point
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

__all__ = ["mae", "rmse", "smape", "mase", "mase_scale", "crps_gaussian", "pinball_loss", "quantile_loss",
           "crps_quantiles", "coverage", "gaussian_nll"]


def _float64(name: str, value) -> torch.Tensor:
    if isinstance(value, np.ndarray) and not value.flags.writeable:
        value = value.copy()  # torch warns on read-only arrays (broadcast views)
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{name} must be a tensor or array of numbers, got {type(value).__name__}") from error
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {tensor.dtype}")
    return tensor.detach().to("cpu", torch.float64)


def _pair(prediction, target, names=("prediction", "target")) -> tuple[torch.Tensor, torch.Tensor]:
    prediction, target = _float64(names[0], prediction), _float64(names[1], target)
    if prediction.shape != target.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got "
                         f"{tuple(prediction.shape)} and {tuple(target.shape)}")
    if prediction.numel() == 0:
        raise ValueError(f"{names[0]} is empty")
    return prediction, target


def mae(prediction, target) -> float:
    """Mean absolute error, mean |prediction - target|."""
    prediction, target = _pair(prediction, target)
    return float((prediction - target).abs().mean())


def rmse(prediction, target) -> float:
    """Root mean squared error, sqrt(mean (prediction - target)^2)."""
    prediction, target = _pair(prediction, target)
    return float((prediction - target).square().mean().sqrt())


def smape(prediction, target) -> float:
    """Symmetric MAPE in percent: mean 200 |p - y| / (|p| + |y|), in [0, 200]; a point where both
    are 0 counts as 0 (a perfect forecast of 0)."""
    prediction, target = _pair(prediction, target)
    denominator = prediction.abs() + target.abs()
    ratio = torch.where(denominator > 0, (prediction - target).abs() / denominator.clamp_min(1e-300),
                        torch.zeros_like(denominator))
    return float(200.0 * ratio.mean())


def mase_scale(history, season: int = 1) -> float:
    """The MASE denominator of one series: mean |y_t - y_{t-season}| over its history (the
    in-sample MAE of the seasonal naive forecast; season 1 is the naive one). Needs more than
    `season` values."""
    history = _float64("history", history).reshape(-1)
    if isinstance(season, bool) or not isinstance(season, int) or season < 1:
        raise ValueError(f"season must be an int >= 1, got {season!r}")
    if history.numel() <= season:
        raise ValueError(f"history must have more than season={season} values, got {history.numel()}")
    return float((history[season:] - history[:-season]).abs().mean())


def mase(prediction, target, scale) -> float:
    """Mean absolute scaled error: mean over series/windows of MAE / scale.

    prediction, target: (..., horizon); scale: a number or one per window (...,), each from
    `mase_scale` on that series' history (training part). Below 1: better than the in-sample
    seasonal naive forecast. A scale of 0 (a constant history) gives inf or nan, as MASE does.
    """
    prediction, target = _pair(prediction, target)
    scale = _float64("scale", scale)
    errors = (prediction - target).abs()
    per_window = errors.mean(dim=-1) if errors.ndim else errors
    if scale.ndim and scale.shape != per_window.shape:
        raise ValueError(f"scale must be a number or have shape {tuple(per_window.shape)} (one per window), "
                         f"got {tuple(scale.shape)}")
    return float((per_window / scale).mean())


def crps_gaussian(mean, std, target) -> float:
    """Mean CRPS of Gaussian forecasts N(mean, std^2) at the observed `target` (same shapes), closed
    form: std [z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi)] with z = (target - mean) / std. A std of
    0 gives |target - mean| (the CRPS of a point forecast is its absolute error)."""
    mean, target = _pair(mean, target, ("mean", "target"))
    std = _float64("std", std).expand_as(mean)
    if bool((std < 0).any()):
        raise ValueError("std must be >= 0")
    safe = std.clamp_min(1e-300)
    z = (target - mean) / safe
    normal = torch.distributions.Normal(0.0, 1.0)
    crps = safe * (z * (2.0 * normal.cdf(z) - 1.0) + 2.0 * normal.log_prob(z).exp() - 1.0 / math.sqrt(math.pi))
    return float(torch.where(std > 0, crps, (target - mean).abs()).mean())


def _levels(quantiles: Sequence[float], count: int) -> torch.Tensor:
    levels = _float64("quantiles", quantiles).reshape(-1)
    if levels.numel() != count:
        raise ValueError(f"quantiles must have one level per prediction column ({count}), got {levels.numel()}")
    if bool(((levels <= 0) | (levels >= 1)).any()):
        raise ValueError(f"quantile levels must be in (0, 1), got {levels.tolist()}")
    return levels


def pinball_loss(prediction, target, quantiles: Sequence[float]) -> float:
    """Mean pinball (quantile) loss: prediction (..., K) holds the K quantiles `quantiles` of each
    target (...); loss_tau(q, y) = max(tau (y - q), (tau - 1)(y - q)), averaged over all."""
    prediction, target = _float64("prediction", prediction), _float64("target", target)
    if prediction.ndim == 0 or prediction.shape[:-1] != target.shape:
        raise ValueError(f"prediction must have shape target.shape + (K,) = {tuple(target.shape)} + (K,), "
                         f"got {tuple(prediction.shape)}")
    levels = _levels(quantiles, prediction.shape[-1])
    error = target.unsqueeze(-1) - prediction
    return float(torch.maximum(levels * error, (levels - 1.0) * error).mean())


quantile_loss = pinball_loss


def crps_quantiles(prediction, target, quantiles: Sequence[float]) -> float:
    """CRPS approximated from K quantile forecasts: 2 x the pinball loss averaged over the levels
    (CRPS = 2 int_0^1 pinball_tau d tau, a rectangle rule over the given levels; the "weighted
    quantile loss" of the GluonTS / M5 evaluations up to normalisation). With the levels 0.1 .. 0.9
    it slightly underestimates the tails' share."""
    return 2.0 * pinball_loss(prediction, target, quantiles)


def coverage(lower, upper, target) -> float:
    """Fraction of `target` inside [lower, upper] (same shapes): 0.8 for a calibrated 80 % interval."""
    lower, target = _pair(lower, target, ("lower", "target"))
    upper, _ = _pair(upper, target, ("upper", "target"))
    return float(((target >= lower) & (target <= upper)).double().mean())


def gaussian_nll(mean, std, target) -> float:
    """Mean negative log-density of `target` under N(mean, std^2), nats per point (std > 0)."""
    mean, target = _pair(mean, target, ("mean", "target"))
    std = _float64("std", std).expand_as(mean)
    if bool((std <= 0).any()):
        raise ValueError("std must be > 0")
    return float(-torch.distributions.Normal(mean, std).log_prob(target).mean())
