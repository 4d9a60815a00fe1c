"""Density-estimation baselines and anomaly-detection scoring.

gaussian_loglik  average held-out log-likelihood of a full-covariance Gaussian fitted on train
kde_loglik       the same for a Gaussian kernel density estimate (scikit-learn KernelDensity)
                 whose bandwidth maximises the likelihood of a held-out part of train
anomaly_auc      ROC AUC of anomaly scores (higher = more anomalous), inliers vs outliers

Log-likelihoods are in nats per point (natural log, summed over a point's D coordinates, averaged
over the test points); a flow's held-out `log_prob` averaged the same way compares directly.
"""
from __future__ import annotations

import math

import numpy as np
import torch

# Candidate KDE bandwidths as multiples of Scott's rule n^(-1 / (D + 4)) * mean coordinate std:
# the rule oversmooths multi-modal data (the 2D toys), hence the factors well below 1.
_BANDWIDTH_FACTORS = (0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.45, 0.7, 1.0)
# Relative tolerance of the tree-based KDE sums: 1e-4 changes a log-density by at most ~1e-4 nats
# and makes scoring 10,000 points 5x faster than the exact default.
_KDE_RTOL = 1e-4


def _as_array(points, name: str) -> np.ndarray:
    if torch.is_tensor(points):
        points = points.detach().to("cpu", torch.float64).numpy()
    elif isinstance(points, np.ndarray):
        points = points.astype(np.float64, copy=False)
    else:
        raise TypeError(f"{name} must be a tensor or array of points (N, D), got {type(points).__name__}")
    if points.ndim != 2 or points.shape[0] < 1:
        raise ValueError(f"{name} must have shape (N, D) with N >= 1, got {tuple(points.shape)}")
    return points


def _train_and_test(train, test, min_train: int) -> tuple[np.ndarray, np.ndarray]:
    train, test = _as_array(train, "train"), _as_array(test, "test")
    if train.shape[0] < min_train:
        raise ValueError(f"train must have at least {min_train} points, got {train.shape[0]}")
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train and test must have the same dimension D, got {train.shape[1]} and {test.shape[1]}")
    return train, test


def gaussian_loglik(train, test) -> float:
    """Average log N(x; mean, cov) over the test points, nats per point.

    train (M, D), test (N, D): tensors or arrays. The mean and covariance are the maximum-likelihood
    estimates on train (plus 1e-6 on the diagonal, so a degenerate set stays finite).
    """
    train, test = _train_and_test(train, test, 2)
    dims = train.shape[1]
    mean = train.mean(0)
    cov = np.atleast_2d(np.cov(train, rowvar=False, bias=True)) + 1e-6 * np.eye(dims)
    chol = np.linalg.cholesky(cov)
    centred = np.linalg.solve(chol, (test - mean).T)  # (D, N) whitened
    log_det = 2 * np.log(np.diag(chol)).sum()
    log_p = -0.5 * (centred**2).sum(0) - 0.5 * log_det - 0.5 * dims * math.log(2 * math.pi)
    return float(log_p.mean())


def select_kde_bandwidth(train, *, holdout_fraction: float = 0.2, bandwidths=None, seed: int = 0,
                         max_points: int = 5000) -> float:
    """The Gaussian-KDE bandwidth with the highest log-likelihood on a held-out part of train.

    train (M, D) is split by a seeded permutation into a fit part and `holdout_fraction` held out,
    using at most `max_points` of it (a seeded subset; the choice is stable well before 10,000
    points and this keeps it to about a second); bandwidths default to multiples of Scott's rule
    for the fit part's size (see _BANDWIDTH_FACTORS). The best one is returned rescaled to a KDE
    on all M points, by (fit size / M)^(1 / (D + 4)).
    """
    from sklearn.neighbors import KernelDensity

    train = _as_array(train, "train")
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction!r}")
    if train.shape[0] < 4:
        raise ValueError(f"train must have at least 4 points to hold some out, got {train.shape[0]}")
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 4:
        raise ValueError(f"max_points must be an int >= 4, got {max_points!r}")
    order = np.random.RandomState(seed).permutation(train.shape[0])[:max_points]
    held = max(1, int(round(holdout_fraction * len(order))))
    fit, holdout = train[order[held:]], train[order[:held]]
    if bandwidths is None:
        scott = fit.shape[0] ** (-1.0 / (fit.shape[1] + 4)) * float(fit.std(0).mean())
        bandwidths = [f * max(scott, 1e-12) for f in _BANDWIDTH_FACTORS]
    if not len(bandwidths) or any(not b > 0 for b in bandwidths):
        raise ValueError(f"bandwidths must be positive, got {bandwidths!r}")
    scores = [KernelDensity(bandwidth=float(b), rtol=_KDE_RTOL).fit(fit).score_samples(holdout).mean()
              for b in bandwidths]
    best = float(bandwidths[int(np.nanargmax(scores))])
    # for a KDE on all M points: the optimal bandwidth shrinks as n^(-1 / (D + 4)) (Scott's rate)
    return best * (fit.shape[0] / train.shape[0]) ** (1.0 / (train.shape[1] + 4))


def kde_loglik(train, test, *, bandwidth: float | None = None, holdout_fraction: float = 0.2,
               seed: int = 0) -> float:
    """Average log-density of a Gaussian KDE fitted on train, over the test points, nats per point.

    train (M, D), test (N, D). bandwidth None: chosen by `select_kde_bandwidth` on train (a
    seeded `holdout_fraction` held out), then the KDE is refitted on all of train.
    """
    from sklearn.neighbors import KernelDensity

    train, test = _train_and_test(train, test, 4 if bandwidth is None else 1)
    if bandwidth is None:
        bandwidth = select_kde_bandwidth(train, holdout_fraction=holdout_fraction, seed=seed)
    elif not bandwidth > 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth!r}")
    return float(KernelDensity(bandwidth=float(bandwidth), rtol=_KDE_RTOL).fit(train).score_samples(test).mean())


def anomaly_auc(scores_inliers, scores_outliers) -> float:
    """ROC AUC (scikit-learn roc_auc_score) of anomaly scores, higher meaning more anomalous.

    scores_inliers (N,), scores_outliers (M,): e.g. -log p(x) of held-out items of the training
    classes and of unseen classes. 1.0: every outlier scores above every inlier; 0.5: chance.
    """
    from sklearn.metrics import roc_auc_score

    inliers = _as_array(torch.as_tensor(scores_inliers).reshape(-1, 1), "scores_inliers")[:, 0]
    outliers = _as_array(torch.as_tensor(scores_outliers).reshape(-1, 1), "scores_outliers")[:, 0]
    labels = np.concatenate([np.zeros(len(inliers)), np.ones(len(outliers))])
    scores = np.concatenate([inliers, outliers])
    if not np.isfinite(scores).all():
        raise ValueError("anomaly scores must be finite")
    return float(roc_auc_score(labels, scores))


__all__ = ["gaussian_loglik", "kde_loglik", "select_kde_bandwidth", "anomaly_auc"]
