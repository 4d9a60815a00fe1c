"""Output heads for discrete data: likelihoods over the levels 0..L-1 of each data channel.

A decoder (VAE, PixelCNN++, WaveNet, ...) outputs `params_per_channel` numbers per data channel;
the head turns them into a normalised distribution over the L levels:

  BinomialLikelihood            Binomial(L - 1, sigmoid(logit)): a level counts the "on" sub-pixels
                                of a block, each on with the same probability. L = 2: Bernoulli.
  CategoricalLikelihood         a softmax over the L levels (L parameters).
  DiscretizedLogisticLikelihood discretised logistic (Salimans et al. 2017, PixelCNN++, one
                                component): levels mapped onto [-1, 1], bins of width 2 / (L - 1),
                                open-ended edge bins (2 parameters: mean, log-scale).
  DiscretizedLogisticMixtureLikelihood
                                K of those per channel, mixed by softmax weights (PixelCNN++, the
                                16-bit audio head of Parallel WaveNet): 3K parameters, K mixture
                                logits, then K locations, then K log-scales. K = 1 is the logistic head.
                                Channels are independent given the parameters (no PixelCNN++ R -> G -> B
                                linear coupling inside a pixel).

Layout: params (N, P, C, *S) float, P = params_per_channel, levels (N, C, *S) int64 in [0, L - 1]
(*S: any spatial or time dims, e.g. (H, W) for images, (T,) for audio). `log_prob` gives nats per
element (N, C, *S); `nll` sums them per item (N,); `mean` is E[level] / (L - 1) in [0, 1];
`sample` draws int64 levels.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# log-scale clamp: below -7 a bin (width 2/16) holds all the mass anyway; above 7 it is flat
LOG_SCALE_MIN, LOG_SCALE_MAX = -7.0, 7.0


def _logistic_bin_log_prob(levels: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                           num_levels: int) -> torch.Tensor:
    """log P(bin of `levels`) under logistic(mean, exp(log_scale)) on [-1, 1]; levels broadcast.

    Level k sits at x = 2k / (L - 1) - 1 with the bin [x - 1/(L-1), x + 1/(L-1)]; the lowest bin
    reaches to -inf and the highest to +inf, so the L bins hold all the mass."""
    top = num_levels - 1
    x = 2.0 * levels.to(mean.dtype) / top - 1.0
    half_bin, inv_scale = 1.0 / top, torch.exp(-log_scale)
    upper, lower = (x + half_bin - mean) * inv_scale, (x - half_bin - mean) * inv_scale
    # log(sigmoid(u) - sigmoid(l)) = logsigmoid(u) + logsigmoid(-l) + log(1 - exp(l - u)): every term
    # stays in the log domain, so the bin mass never underflows to log(0), whether the bin sits far in
    # a tail (logsigmoid) or is tiny next to the scale (expm1): PixelCNN++'s fallback to the density
    # at the bin centre is not needed. With log s >= -7, l - u = -2 / ((L - 1) s) <= -0.03 at L = 65536.
    interior = F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(lower - upper))
    return torch.where(levels == 0, F.logsigmoid(upper),
                       torch.where(levels == top, F.logsigmoid(-lower), interior))


class DiscreteLikelihood:
    """Base of the heads: shape checks and `nll`; subclasses give the distribution."""

    name = ""

    def __init__(self, num_levels: int):
        if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 2:
            raise ValueError(f"num_levels must be an int >= 2, got {num_levels!r}")
        self.num_levels = num_levels

    @property
    def params_per_channel(self) -> int:
        raise NotImplementedError

    def _check(self, params: torch.Tensor, levels: torch.Tensor | None = None) -> None:
        if not isinstance(params, torch.Tensor) or params.ndim < 2 or params.shape[1] != self.params_per_channel:
            shape = tuple(params.shape) if isinstance(params, torch.Tensor) else type(params).__name__
            raise ValueError(f"params must have shape (N, {self.params_per_channel}, C, ...) for "
                             f"{type(self).__name__}, got {shape}")
        if levels is not None and (levels.shape[:1] + levels.shape[1:]) != (params.shape[:1] + params.shape[2:]):
            raise ValueError(f"levels must have shape {(params.shape[0], *params.shape[2:])} (params without "
                             f"dim 1), got {tuple(levels.shape)}")

    def log_prob(self, params: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """log p(level) in nats per element, (N, C, *S)."""
        raise NotImplementedError

    def nll(self, params: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """-log p(x) per item in nats, summed over every dim but the first, (N,)."""
        return -self.log_prob(params, levels).flatten(1).sum(1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[level] / (L - 1) in [0, 1], (N, C, *S)."""
        raise NotImplementedError

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        """Levels drawn from the distribution, int64 (N, C, *S)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_levels={self.num_levels})"


class BinomialLikelihood(DiscreteLikelihood):
    name = "bernoulli"

    @property
    def params_per_channel(self) -> int:
        return 1

    def log_prob(self, params, levels):
        self._check(params, levels)
        trials = self.num_levels - 1
        k, logit = levels.to(params.dtype), params[:, 0]
        log_choose = math.lgamma(trials + 1) - torch.lgamma(k + 1) - torch.lgamma(trials - k + 1)
        return log_choose + k * F.logsigmoid(logit) + (trials - k) * F.logsigmoid(-logit)

    def mean(self, params):
        self._check(params)
        return torch.sigmoid(params[:, 0])

    def sample(self, params):
        p = self.mean(params)
        return torch.binomial(torch.full_like(p, self.num_levels - 1), p).long()


class CategoricalLikelihood(DiscreteLikelihood):
    name = "categorical"

    @property
    def params_per_channel(self) -> int:
        return self.num_levels

    def log_prob(self, params, levels):
        self._check(params, levels)
        return -F.cross_entropy(params, levels, reduction="none")

    def mean(self, params):
        self._check(params)
        probs = params.softmax(dim=1)  # (N, L, C, *S)
        shape = (1, -1) + (1,) * (params.ndim - 2)
        levels = torch.arange(self.num_levels, device=params.device, dtype=probs.dtype).view(shape)
        return (probs * levels).sum(1) / (self.num_levels - 1)

    def sample(self, params):
        self._check(params)
        probs = params.softmax(dim=1)
        flat = probs.movedim(1, -1).reshape(-1, self.num_levels)
        return torch.multinomial(flat, 1).view(probs.shape[0], *probs.shape[2:])


class DiscretizedLogisticLikelihood(DiscreteLikelihood):
    name = "logistic"

    @property
    def params_per_channel(self) -> int:
        return 2

    def location_and_log_scale(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log s), each (N, C, *S): the logistic's location on [-1, 1] and clamped log-scale."""
        self._check(params)
        return params[:, 0], params[:, 1].clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)

    def log_prob(self, params, levels):
        self._check(params, levels)
        mean, log_scale = self.location_and_log_scale(params)
        return _logistic_bin_log_prob(levels, mean, log_scale, self.num_levels)

    def mean(self, params):
        # the location, not the exact mean of the binned distribution: what figures show
        mean, _ = self.location_and_log_scale(params)
        return (mean.clamp(-1, 1) + 1) / 2

    def sample(self, params):
        mean, log_scale = self.location_and_log_scale(params)
        top = self.num_levels - 1
        u = torch.rand_like(mean).clamp(1e-5, 1 - 1e-5)
        x = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))  # inverse logistic CDF
        return (((x + 1) / 2) * top).round().clamp(0, top).long()


class DiscretizedLogisticMixtureLikelihood(DiscreteLikelihood):
    """Mixture of K discretised logistics per data channel (PixelCNN++, Salimans et al. 2017).

    params (N, 3K, C, *S): [:, :K] mixture logits, [:, K:2K] locations on [-1, 1] (any real: a
    location outside the range piles mass into the edge bins), [:, 2K:] log-scales (clamped to
    [LOG_SCALE_MIN, LOG_SCALE_MAX] = [-7, 7] as in PixelCNN++)."""

    name = "logistic_mixture"

    def __init__(self, num_levels: int, num_mixtures: int = 5):
        super().__init__(num_levels)
        if isinstance(num_mixtures, bool) or not isinstance(num_mixtures, int) or num_mixtures < 1:
            raise ValueError(f"num_mixtures must be an int >= 1, got {num_mixtures!r}")
        self.num_mixtures = num_mixtures

    @property
    def params_per_channel(self) -> int:
        return 3 * self.num_mixtures

    def components(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log weights, locations, clamped log-scales), each (N, K, C, *S)."""
        self._check(params)
        k = self.num_mixtures
        return (params[:, :k].log_softmax(dim=1), params[:, k:2 * k],
                params[:, 2 * k:].clamp(LOG_SCALE_MIN, LOG_SCALE_MAX))

    def log_prob(self, params, levels):
        self._check(params, levels)
        log_weights, mean, log_scale = self.components(params)
        per_component = _logistic_bin_log_prob(levels.unsqueeze(1), mean, log_scale, self.num_levels)
        return torch.logsumexp(log_weights + per_component, dim=1)

    def mean(self, params):
        # the weighted location (clamped to the range), like the logistic head: what figures show
        log_weights, mean, _ = self.components(params)
        return ((log_weights.exp() * mean.clamp(-1, 1)).sum(1) + 1) / 2

    def draw(self, params: torch.Tensor, temperature: float = 1.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Levels int64 (N, C, *S): a component from softmax(logits / T), then the inverse logistic
        CDF with its scale times T, rounded to the nearest level. T = 0: the location of the most
        likely component."""
        log_weights, mean, log_scale = self.components(params)
        top = self.num_levels - 1
        if temperature == 0:
            chosen = log_weights.argmax(dim=1, keepdim=True)
            x = mean.gather(1, chosen).squeeze(1)
        else:
            flat = (log_weights / temperature).softmax(dim=1).movedim(1, -1).reshape(-1, self.num_mixtures)
            chosen = torch.multinomial(flat, 1, generator=generator).view(*mean.shape[:1], *mean.shape[2:])
            chosen = chosen.unsqueeze(1)
            loc, scale = mean.gather(1, chosen).squeeze(1), log_scale.gather(1, chosen).squeeze(1).exp()
            u = torch.rand(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
            u = u.clamp(1e-5, 1 - 1e-5)
            x = loc + temperature * scale * (torch.log(u) - torch.log1p(-u))  # inverse logistic CDF
        return (((x + 1) / 2) * top).round().clamp(0, top).long()

    def sample(self, params):
        return self.draw(params)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_levels={self.num_levels}, num_mixtures={self.num_mixtures})"


LIKELIHOODS: dict[str, type[DiscreteLikelihood]] = {
    cls.name: cls for cls in (BinomialLikelihood, CategoricalLikelihood, DiscretizedLogisticLikelihood,
                              DiscretizedLogisticMixtureLikelihood)}


def get_likelihood(name: str, num_levels: int, num_mixtures: int | None = None) -> DiscreteLikelihood:
    """The head registered as `name` ("bernoulli", "categorical", "logistic" or "logistic_mixture")
    over `num_levels`; `num_mixtures` K only for "logistic_mixture" (default 5)."""
    if name not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {tuple(LIKELIHOODS)}, got {name!r}")
    if name == DiscretizedLogisticMixtureLikelihood.name:
        return DiscretizedLogisticMixtureLikelihood(num_levels, 5 if num_mixtures is None else num_mixtures)
    if num_mixtures is not None:
        raise ValueError(f"num_mixtures applies only to the 'logistic_mixture' likelihood, not {name!r}")
    return LIKELIHOODS[name](num_levels)


__all__ = ["DiscreteLikelihood", "BinomialLikelihood", "CategoricalLikelihood", "DiscretizedLogisticLikelihood",
           "DiscretizedLogisticMixtureLikelihood", "LIKELIHOODS", "get_likelihood"]
