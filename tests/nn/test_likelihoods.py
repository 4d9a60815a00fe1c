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
    DiscretizedLogisticMixtureLikelihood,
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
    if name not in ("logistic", "logistic_mixture"):  # the logistic heads' mean is the location
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


# -- discretised logistic mixture (PixelCNN++) ---------------------------------------------
def _mixture_params(k, n=4, shape=(2, 3), seed=0):
    """(n, 3k, *shape) float64 with extreme entries: logits up to +-50, locations outside [-1, 1],
    log-scales far below the clamp (-30) and above it (+30)."""
    generator = torch.Generator().manual_seed(seed)
    params = 3 * torch.randn(n, 3 * k, *shape, generator=generator, dtype=torch.float64)
    params[0, :k] *= 15                      # near one-hot mixture weights
    params[1, k:2 * k] = torch.linspace(-4, 4, k).view(k, *([1] * len(shape)))  # locations off the range
    params[2, 2 * k:] = -30.0                # scale clamped to exp(-7): one bin holds the mass
    params[3, 2 * k:] = 30.0                 # scale clamped to exp(7): nearly flat
    return params


@pytest.mark.parametrize("num_levels", [2, 17, 256])
@pytest.mark.parametrize("k", [1, 3])
def test_mixture_sums_to_one_over_all_levels_at_extreme_params(k, num_levels):
    head = get_likelihood("logistic_mixture", num_levels, num_mixtures=k)
    assert head.params_per_channel == 3 * k
    total = _probabilities(head, _mixture_params(k)).sum(0)
    assert torch.isfinite(total).all()
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-6)


def test_mixture_of_one_is_the_discretized_logistic():
    mixture, single = DiscretizedLogisticMixtureLikelihood(17, num_mixtures=1), DiscretizedLogisticLikelihood(17)
    params = _mixture_params(1, shape=(1, 5))
    levels = torch.randint(0, 17, (4, 1, 5), generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(mixture.log_prob(params, levels), single.log_prob(params[:, 1:], levels),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mixture.mean(params), single.mean(params[:, 1:]))


def test_mixture_is_the_weighted_sum_of_its_components():
    k = 3
    head = DiscretizedLogisticMixtureLikelihood(17, num_mixtures=k)
    params = _mixture_params(k, shape=(1,))
    levels = torch.randint(0, 17, (4, 1), generator=torch.Generator().manual_seed(8))
    weights = params[:, :k].softmax(1)
    single = DiscretizedLogisticLikelihood(17)
    expected = sum(weights[:, j] * single.log_prob(params[:, [k + j, 2 * k + j]], levels).exp() for j in range(k))
    torch.testing.assert_close(head.log_prob(params, levels).exp(), expected, rtol=1e-10, atol=1e-14)


def test_mixture_stays_accurate_for_65536_levels_in_float32():
    """16-bit audio: bins of width 2/65535 next to the smallest scale exp(-7); float32 agrees with
    float64 and no bin mass underflows to -inf."""
    head = DiscretizedLogisticMixtureLikelihood(65536, num_mixtures=2)
    params = torch.tensor([[0.3, -0.2], [0.01, -0.99], [-7.0, -2.0]], dtype=torch.float64).view(1, 6, 1)
    levels = torch.tensor([0, 1, 32767, 33095, 65534, 65535, 327]).view(7, 1)
    params = params.expand(7, 6, 1)
    exact = head.log_prob(params, levels)
    single = head.log_prob(params.float(), levels)
    assert torch.isfinite(single).all()
    torch.testing.assert_close(single.double(), exact, rtol=1e-4, atol=1e-4)


def test_mixture_samples_follow_the_probabilities_with_a_generator_and_temperature():
    head = DiscretizedLogisticMixtureLikelihood(5, num_mixtures=2)
    params = torch.tensor([[0.5, -0.5, -0.8, 0.6, -1.0, -1.5]]).view(1, 6, 1)  # two separate modes
    probabilities = _probabilities(head, params.double())[:, 0, 0]  # (5,)
    many = params.expand(20000, 6, 1)
    draws = head.draw(many, generator=torch.Generator().manual_seed(0))[:, 0]
    counts = torch.stack([(draws == level).sum() for level in range(5)]).double()
    expected = 20000 * probabilities
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 20.0, (counts, expected)  # 4 degrees of freedom: p < 0.001
    assert torch.equal(draws, head.draw(many, generator=torch.Generator().manual_seed(0))[:, 0])
    # temperature 0: the location of the most likely component (-0.8 on [-1, 1] -> level 0.4 -> 0)
    assert head.draw(params, temperature=0).item() == 0


def test_mixture_gradients_are_finite_at_extreme_params():
    k = 3
    head = DiscretizedLogisticMixtureLikelihood(256, num_mixtures=k)
    params = _mixture_params(k).requires_grad_()
    levels = torch.randint(0, 256, (4, 2, 3), generator=torch.Generator().manual_seed(9))
    levels[:, 0, 0], levels[:, 0, 1] = 0, 255  # edge bins too
    head.nll(params, levels).sum().backward()
    assert torch.isfinite(params.grad).all() and params.grad.abs().sum() > 0
    for dtype in (torch.float32, torch.float64):  # a bin far in a tail: still finite
        far = torch.tensor([0.0, -1e3, -7.0], dtype=dtype).view(1, 3, 1).requires_grad_()
        value = DiscretizedLogisticMixtureLikelihood(256, num_mixtures=1).log_prob(far, torch.tensor([[128]]))
        value.sum().backward()
        assert torch.isfinite(value).all() and torch.isfinite(far.grad).all()


def test_mixture_bad_params_and_options_are_refused():
    head = get_likelihood("logistic_mixture", 17, num_mixtures=2)
    assert "num_mixtures=2" in repr(head)
    with pytest.raises(ValueError, match="params must have shape \\(N, 6, C"):
        head.log_prob(torch.zeros(2, 5, 1, 4), torch.zeros(2, 1, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="params must have shape \\(N, 6, C"):
        head.sample(torch.zeros(2, 9, 1))
    with pytest.raises(ValueError, match="levels must have shape"):
        head.log_prob(torch.zeros(2, 6, 1, 4), torch.zeros(2, 1, 5, dtype=torch.int64))
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="num_mixtures must be an int >= 1"):
            DiscretizedLogisticMixtureLikelihood(17, num_mixtures=bad)
    with pytest.raises(ValueError, match="num_mixtures applies only"):
        get_likelihood("categorical", 17, num_mixtures=3)
    assert get_likelihood("logistic_mixture", 17).num_mixtures == 5
