"""Two-sample distances for low-dimensional samples (the 2D toy sets): MMD and energy distance.

Both work in float64 and process pairwise distances in row chunks, so tens of thousands of points
fit in memory; the cost is O(M N) kernel evaluations per bandwidth, so compare a few thousand
points per set rather than tens of thousands. Points are (N, D) tensors; the toy sets have D = 2
and unit-variance scaling, which the default MMD bandwidths assume.
"""
from __future__ import annotations

import torch

DEFAULT_BANDWIDTHS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
_CHUNK_ROWS = 2048


def _as_points(points: torch.Tensor, name: str) -> torch.Tensor:
    if not torch.is_tensor(points):
        raise TypeError(f"{name} must be a tensor of points (N, D), got {type(points).__name__}")
    if points.dim() != 2 or points.shape[0] < 2:
        raise ValueError(f"{name} must have shape (N, D) with N >= 2, got {tuple(points.shape)}")
    return points.detach().to("cpu", torch.float64)


def _pairwise_sum(a: torch.Tensor, b: torch.Tensor, kernel) -> float:
    """sum_{i, j} kernel(|a_i - b_j|^2) over all pairs, chunked over rows of a."""
    total = 0.0
    for start in range(0, a.shape[0], _CHUNK_ROWS):
        squared = torch.cdist(a[start:start + _CHUNK_ROWS], b).square()  # (chunk, M)
        total += kernel(squared).sum().item()
    return total


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidths: tuple[float, ...] = DEFAULT_BANDWIDTHS) -> float:
    """Unbiased estimate of the squared maximum mean discrepancy MMD^2(P, Q) (Gretton et al., 2012).

    x (M, D) ~ P, y (N, D) ~ Q. The kernel is the mean of RBF kernels
    k(a, b) = mean_s exp(-|a - b|^2 / (2 s^2)) over the bandwidths s, so k(a, a) = 1 and no single
    length scale must fit every dataset. The U-statistic
        MMD^2_u = sum_{i != j} k(x_i, x_j) / (M (M-1)) + sum_{i != j} k(y_i, y_j) / (N (N-1))
                  - 2 sum_{i, j} k(x_i, y_j) / (M N)
    is unbiased, so it scatters around 0 (and may be slightly negative) when P = Q. Returns a float.
    """
    x, y = _as_points(x, "x"), _as_points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension D, got {x.shape[1]} and {y.shape[1]}")
    if not bandwidths or any(s <= 0 for s in bandwidths):
        raise ValueError(f"bandwidths must be positive, got {bandwidths!r}")
    scales = [-1.0 / (2.0 * s * s) for s in bandwidths]

    def kernel(squared: torch.Tensor) -> torch.Tensor:  # (rows, cols) -> (rows, cols)
        total = torch.zeros_like(squared)
        for scale in scales:
            total += torch.exp(squared * scale)
        return total / len(scales)

    m, n = x.shape[0], y.shape[0]
    # k(a, a) = 1, so the diagonal of the within-sample sums is exactly m (or n).
    within_x = (_pairwise_sum(x, x, kernel) - m) / (m * (m - 1))
    within_y = (_pairwise_sum(y, y, kernel) - n) / (n * (n - 1))
    between = _pairwise_sum(x, y, kernel) / (m * n)
    return within_x + within_y - 2.0 * between


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Székely & Rizzo, 2013).

    x (M, D), y (N, D); Euclidean distances. Each expectation is the mean over all pairs (the
    V-statistic, diagonals included), so the result is symmetric, >= 0, and exactly 0 for
    identical sets. It is zero in the population only when the distributions are equal.
    Returns a float (the squared-distance-like quantity, not its square root).
    """
    x, y = _as_points(x, "x"), _as_points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension D, got {x.shape[1]} and {y.shape[1]}")
    m, n = x.shape[0], y.shape[0]
    identity = lambda squared: squared.sqrt()  # noqa: E731 - distances from squared distances
    between = _pairwise_sum(x, y, identity) / (m * n)
    within_x = _pairwise_sum(x, x, identity) / (m * m)
    within_y = _pairwise_sum(y, y, identity) / (n * n)
    return max(2.0 * between - within_x - within_y, 0.0)
