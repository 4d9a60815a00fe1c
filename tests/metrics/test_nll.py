import math

import pytest
import torch

from genkernels.metrics.nll import (
    bits_per_dim,
    categorical_bits_per_dim,
    categorical_nll,
    dequantize,
    dequantized_nll,
    iwae_bound,
    nats_to_bits,
)


def test_unit_conversions():
    assert nats_to_bits(math.log(2.0)) == pytest.approx(1.0)
    torch.testing.assert_close(nats_to_bits(torch.tensor([math.log(8.0)])), torch.tensor([3.0]))
    # Two items of 64 dims with 64 ln 2 and 192 ln 2 nats: means 1 and 3 bits per dim -> 2.
    nll = torch.tensor([64, 192]) * math.log(2.0)
    assert bits_per_dim(nll, 64) == pytest.approx(2.0)
    assert bits_per_dim(64 * math.log(2.0), 64) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="num_dims"):
        bits_per_dim(1.0, 0)


def test_uniform_categorical_model_scores_log2_of_the_levels():
    targets = torch.randint(0, 17, (5, 1, 8, 8))
    logits = torch.zeros(5, 17, 1, 8, 8)
    torch.testing.assert_close(categorical_nll(logits, targets), torch.full((5,), 64 * math.log(17.0)))
    assert categorical_bits_per_dim(logits, targets) == pytest.approx(math.log2(17))
    # Levels last (e.g. (N, H, W, L) logits) give the same answer.
    levels_last = logits.movedim(1, -1)  # (N, 1, 8, 8, L)
    assert categorical_bits_per_dim(levels_last, targets, level_dim=-1) == pytest.approx(math.log2(17))


def test_categorical_nll_hand_computed():
    probabilities = torch.tensor([[[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]]])  # (N=1, dims=2, L=3)
    logits = torch.log(probabilities).transpose(1, 2)  # (1, 3, 2)
    targets = torch.tensor([[0, 2]])
    # -log 0.5 - log 0.25 = 3 ln 2
    torch.testing.assert_close(categorical_nll(logits, targets), torch.tensor([3 * math.log(2.0)]))
    with pytest.raises(ValueError, match="disagree"):
        categorical_nll(logits, torch.tensor([[0, 1, 2]]))
    with pytest.raises(TypeError, match="integer"):
        categorical_nll(logits, targets.float())


def test_dequantized_uniform_density_matches_the_uniform_categorical():
    # A uniform density on [0, 1)^D has log p = 0; on [-1, 1)^D it is -D log 2.
    assert bits_per_dim(dequantized_nll(torch.zeros(3), 17, 64), 64) == pytest.approx(math.log2(17))
    on_symmetric = dequantized_nll(torch.full((3,), -64 * math.log(2.0)), 17, 64, data_range=2.0)
    assert bits_per_dim(on_symmetric, 64) == pytest.approx(math.log2(17))


def test_dequantize_stays_in_the_right_bin():
    levels = torch.arange(17).repeat(50)
    y = dequantize(levels, 17, generator=torch.Generator().manual_seed(0))
    assert y.dtype == torch.float32 and y.min() >= 0 and y.max() < 1
    assert torch.equal(torch.floor(y * 17).long(), levels)


def test_iwae_bound():
    log_weights = torch.tensor([[-3.0], [-1.5]])
    torch.testing.assert_close(iwae_bound(log_weights), torch.tensor([-3.0, -1.5]))  # K = 1: the ELBO
    # Equal weights: log-mean-exp is the common value; unequal: log((e^0 + e^-ln3) / 2) = log(2/3).
    torch.testing.assert_close(iwae_bound(torch.full((2, 4), -2.0)), torch.tensor([-2.0, -2.0]))
    unequal = torch.tensor([[0.0, -math.log(3.0)]])
    torch.testing.assert_close(iwae_bound(unequal), torch.tensor([math.log(2 / 3)]))
    # The bound is at least the mean ELBO (Jensen) and K sits on `dim`.
    weights = torch.randn(6, 10)
    assert torch.all(iwae_bound(weights) >= weights.mean(dim=1))
    torch.testing.assert_close(iwae_bound(weights.T, dim=0), iwae_bound(weights))
