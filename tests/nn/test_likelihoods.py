"""Output heads over discrete levels: each is normalised over the levels, agrees with
torch.distributions, samples and means follow the distribution, and bad shapes are refused."""
import pytest
import torch
from torch.distributions import AffineTransform, Binomial, Categorical, SigmoidTransform, TransformedDistribution
from torch.distributions import Uniform

from genkernels.nn.likelihoods import (
    LIKELIHOODS,
    BinomialLikelihood,
    CategoricalLikelihood,
    DiscretizedLogisticLikelihood,
    get_likelihood,
)

NAMES = list(LIKELIHOODS)


def _params(head, n=6, shape=(1, 1, 1), scale=3.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, head.params_per_channel, *shape, generator=generator, dtype=torch.float64)


def _probabilities(head, params):
    """p(level) for every level, (L, N, C, *S), from log_prob."""
    shape = (params.shape[0], *params.shape[2:])
    return torch.stack([head.log_prob(params, torch.full(shape, level, dtype=torch.int64)).exp()
                        for level in range(head.num_levels)])


@pytest.mark.parametrize("num_levels", [2, 17, 256])
@pytest.mark.parametrize("name", NAMES)
def test_probabilities_over_all_levels_sum_to_one(name, num_levels):
    head = get_likelihood(name, num_levels)
    params = _params(head, shape=(2, 3, 1))  # (N, P, C, H, W): works for any trailing dims
    total = _probabilities(head, params).sum(0)
    torch.testing.assert_close(total, torch.ones_like(total), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_nll_sums_log_prob_per_item(name):
    head = get_likelihood(name, 17)
    params = _params(head, shape=(1, 4, 4))
    levels = torch.randint(0, 17, (6, 1, 4, 4), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(head.nll(params, levels), -head.log_prob(params, levels).flatten(1).sum(1))
    assert head.nll(params, levels).shape == (6,)


def test_binomial_matches_torch_distributions():
    head = BinomialLikelihood(17)
    params = _params(head, shape=(1, 5))
    levels = torch.randint(0, 17, (6, 1, 5), generator=torch.Generator().manual_seed(2))
    expected = Binomial(total_count=16, logits=params[:, 0]).log_prob(levels.double())
    torch.testing.assert_close(head.log_prob(params, levels), expected)
    bits = torch.randint(0, 2, (6, 1, 5), generator=torch.Generator().manual_seed(3))  # L = 2: Bernoulli
    expected = torch.distributions.Bernoulli(logits=params[:, 0]).log_prob(bits.double())
    torch.testing.assert_close(BinomialLikelihood(2).log_prob(params, bits), expected)


def test_categorical_matches_torch_distributions():
    head = CategoricalLikelihood(5)
    params = _params(head, shape=(2, 3))  # (N, L, C, T)
    levels = torch.randint(0, 5, (6, 2, 3), generator=torch.Generator().manual_seed(4))
    expected = Categorical(logits=params.movedim(1, -1)).log_prob(levels)
    torch.testing.assert_close(head.log_prob(params, levels), expected)


def test_discretized_logistic_matches_the_logistic_cdf():
    """Interior bins hold CDF(x + 1/(L-1)) - CDF(x - 1/(L-1)); edge bins reach to -inf / +inf."""
    head = DiscretizedLogisticLikelihood(17)
    params = _params(head, n=4, shape=(1, 1), scale=1.0)
    loc, log_scale = head.location_and_log_scale(params)
    logistic = TransformedDistribution(Uniform(torch.zeros_like(loc), torch.ones_like(loc)),
                                       [SigmoidTransform().inv, AffineTransform(loc, log_scale.exp())])
    probabilities = _probabilities(head, params)  # (17, N, 1, 1)
    half_bin = 1.0 / 16
    for level in range(17):
        x = torch.full_like(loc, 2.0 * level / 16 - 1.0)
        upper = logistic.cdf(x + half_bin) if level < 16 else torch.ones_like(loc)
        lower = logistic.cdf(x - half_bin) if level > 0 else torch.zeros_like(loc)
        torch.testing.assert_close(probabilities[level], upper - lower, rtol=1e-7, atol=1e-12)


def test_tiny_scale_puts_all_mass_in_one_bin_without_nan():
    head = DiscretizedLogisticLikelihood(17)
    params = torch.tensor([[0.25, -30.0]], dtype=torch.float32).view(1, 2, 1)  # log-scale clamped to -7
    probabilities = _probabilities(head, params)[:, 0, 0]
    assert torch.isfinite(probabilities).all()
    assert probabilities.argmax() == 10 and probabilities[10] > 0.99  # 0.25 on [-1, 1] is level 10


@pytest.mark.parametrize("name", NAMES)
def test_sample_frequencies_and_mean_follow_the_distribution(name):
    head = get_likelihood(name, 5)
    params = _params(head, n=2, shape=(1,), scale=1.0, seed=5).float()
    probabilities = _probabilities(head, params)[:, :, 0]  # (5, 2)
    torch.manual_seed(0)
    draws = head.sample(params.repeat(20000, *([1] * (params.ndim - 1))))  # (40000, 1)
    assert draws.dtype == torch.int64 and 0 <= draws.min() and draws.max() <= 4
    draws = draws.view(20000, 2)
    frequencies = torch.stack([(draws == level).double().mean(0) for level in range(5)])
    torch.testing.assert_close(frequencies, probabilities.double(), rtol=0, atol=0.015)
    if name != "logistic":  # the logistic head's mean is its location (what figures show)
        expected = (probabilities * torch.arange(5.0).view(5, 1)).sum(0) / 4
        torch.testing.assert_close(head.mean(params)[:, 0].double(), expected.double(), rtol=1e-5, atol=1e-6)


def test_bad_shapes_and_levels_are_refused():
    head = DiscretizedLogisticLikelihood(17)
    with pytest.raises(ValueError, match="params must have shape \\(N, 2, C"):
        head.log_prob(torch.zeros(2, 3, 1, 4, 4), torch.zeros(2, 1, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="levels must have shape"):
        head.log_prob(torch.zeros(2, 2, 1, 4, 4), torch.zeros(2, 1, 4, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="num_levels must be an int >= 2"):
        CategoricalLikelihood(1)
    with pytest.raises(ValueError, match="likelihood must be one of"):
        get_likelihood("gaussian", 17)
