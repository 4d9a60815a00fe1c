import pytest
import torch

from genkernels.data.toy2d import sample_toy
from genkernels.metrics.samples2d import energy_distance, mmd


def test_mmd_hand_computed():
    x, y = torch.tensor([[0.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    k1 = torch.exp(torch.tensor(-0.5)).item()  # distance 1, bandwidth 1
    k2 = torch.exp(torch.tensor(-1.0)).item()  # distance sqrt 2
    # within: k1 (one off-diagonal pair each); between: 2 pairs at distance 1, 2 at sqrt 2.
    assert mmd(x, y, bandwidths=(1.0,)) == pytest.approx(k1 + k1 - 2 * (2 * k1 + 2 * k2) / 4)


def test_mmd_identical_near_zero_shifted_positive():
    x = sample_toy("moons", 500, seed=0)
    assert abs(mmd(x, x)) < 4e-3  # unbiased: -2/M (1 - mean off-diagonal kernel) <= MMD^2 <= 0
    fresh = sample_toy("moons", 500, seed=1)
    shifted = fresh + torch.tensor([0.5, 0.0])
    same_distribution, shifted_distribution = mmd(x, fresh), mmd(x, shifted)
    assert abs(same_distribution) < 1e-2
    assert shifted_distribution > 10 * abs(same_distribution)
    assert shifted_distribution == pytest.approx(mmd(shifted, x))


def test_energy_distance_hand_computed_symmetric_and_zero_on_identical_sets():
    x, y = torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    # 2 * E|X-Y| = 2 * 1, E|X-X'| = (0 + 2 + 2 + 0) / 4 = 1, E|Y-Y'| = 0.
    assert energy_distance(torch.cat([x, x]), torch.cat([y, y])) == pytest.approx(1.0)
    a, b = sample_toy("circles", 500, seed=0), sample_toy("8gaussians", 400, seed=0)
    assert energy_distance(a, a) == 0.0
    assert energy_distance(a, b) == pytest.approx(energy_distance(b, a), rel=1e-12)
    fresh = sample_toy("circles", 400, seed=1)
    assert energy_distance(a, b) > 5 * energy_distance(a, fresh)


def test_chunking_matches_one_block(monkeypatch):
    from genkernels.metrics import samples2d

    x, y = sample_toy("moons", 300, seed=0), sample_toy("moons", 200, seed=5)
    whole = (mmd(x, y), energy_distance(x, y))
    monkeypatch.setattr(samples2d, "_CHUNK_ROWS", 64)  # 5 uneven chunks
    assert (mmd(x, y), energy_distance(x, y)) == pytest.approx(whole, rel=1e-10)


def test_bad_inputs():
    with pytest.raises(ValueError, match="same dimension"):
        mmd(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        energy_distance(torch.zeros(4), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="bandwidths"):
        mmd(torch.zeros(4, 2), torch.zeros(4, 2), bandwidths=(0.0,))
    with pytest.raises(TypeError, match="tensor"):
        mmd([[0.0, 0.0]], torch.zeros(4, 2))
