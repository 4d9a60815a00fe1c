"""Image-quality metrics for super-resolution: PSNR and the bicubic baseline it is compared with.

psnr               peak signal-to-noise ratio in dB, the mean over images of 10 log10(R^2 / MSE)
bicubic_upsample   torch's bicubic interpolation by an integer factor, clamped to [0, 1]: the
                   baseline a super-resolution model has to beat on held-out images
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _images(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of images (N, C, H, W), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, C, H, W) with N >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {x.dtype}")
    return x


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    """Mean over images of PSNR = 10 log10(data_range^2 / MSE) in dB.

    a, b: (N, C, H, W) floating images of one shape (values in [0, data_range]); the MSE of each
    image is the mean over its C H W values, in float64. An image pair that is equal gives +inf
    (and so does the mean). NaN propagates.
    """
    a, b = _images(a, "a"), _images(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float)) or not data_range > 0 \
            or not math.isfinite(data_range):
        raise ValueError(f"data_range must be a positive finite number, got {data_range!r}")
    mse = (a.detach().double().cpu() - b.detach().double().cpu()).pow(2).flatten(1).mean(1)  # (N,)
    values = 10.0 * torch.log10(data_range ** 2 / mse)
    return float(values.mean())


def bicubic_upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """x (N, C, h, w) in [0, 1] -> (N, C, factor h, factor w): bicubic interpolation
    (F.interpolate, align_corners=False) clamped to [0, 1] (bicubic overshoots at edges)."""
    x = _images(x, "x")
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be an int >= 1, got {factor!r}")
    if factor == 1:
        return x.clamp(0, 1)
    out = F.interpolate(x.float(), scale_factor=factor, mode="bicubic", align_corners=False)
    return out.clamp(0, 1).to(x.dtype)


__all__ = ["psnr", "bicubic_upsample"]
