"""PSNR and the bicubic super-resolution baseline."""
import math

import pytest
import torch
import torch.nn.functional as F

from genkernels.metrics.image_quality import bicubic_upsample, psnr


def test_psnr_matches_the_formula():
    a = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    b = (a + 0.1 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    assert psnr(a, b) == pytest.approx(float((10 * torch.log10(1 / mse)).mean()), rel=1e-12)
    assert psnr(a * 255, b * 255, data_range=255) == pytest.approx(psnr(a, b), rel=1e-5)
    assert psnr(a, a) == math.inf
    assert math.isnan(psnr(a, torch.full_like(a, math.nan)))
    noisier = (a + 0.3 * torch.randn(a.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    assert psnr(a, noisier) < psnr(a, b)


def test_bicubic_upsample():
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    up = bicubic_upsample(x, 2)
    assert up.shape == (2, 3, 8, 8) and up.min() >= 0 and up.max() <= 1
    assert torch.allclose(up, F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1))
    assert torch.equal(bicubic_upsample(x, 1), x)
    flat = torch.full((1, 1, 4, 4), 0.25)
    assert torch.allclose(bicubic_upsample(flat, 4), torch.full((1, 1, 16, 16), 0.25))
    # on the digits, bicubic upsampling of the 2x average-pooled image beats a blank guess
    from genkernels.data.digits import load_digits_tensors

    images = load_digits_tensors("test")[0][:64]
    guess = bicubic_upsample(F.avg_pool2d(images, 2), 2)
    assert psnr(guess, images) > psnr(torch.full_like(images, float(images.mean())), images) + 3


def test_bad_input():
    x = torch.rand(1, 1, 4, 4)
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, torch.rand(1, 1, 4, 5))
    with pytest.raises(ValueError, match="\\(N, C, H, W\\)"):
        psnr(torch.rand(4, 4), torch.rand(4, 4))
    with pytest.raises(TypeError, match="tensor"):
        psnr([1.0], x)
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, x, data_range=0)
    with pytest.raises(ValueError, match="factor"):
        bicubic_upsample(x, 1.5)
    with pytest.raises(TypeError, match="floating"):
        bicubic_upsample(torch.ones(1, 1, 4, 4, dtype=torch.long), 2)
