"""What every normalizing-flow family (MAF, RealNVP, Glow) shares: data handling, dequantisation,
likelihood units, sampling, evaluation and figures.

A flow is an invertible map f from the model's input space to a standard normal base:

    log p(v) = log N(f(v); 0, I) + log |det df/dv|

A subclass implements only the two continuous-space methods (see FlowModel); this class turns them
into a GenerativeModel on the data's own scale.

Data. Points (the 2D toys; num_levels = 0) are modelled as they are: the input space is the data
space and log_prob is a density in nats. Images (num_levels = L >= 2, levels 0..L-1; float images
in [0, 1] are rounded onto the level grid) are dequantised (Theis et al. 2016; Ho et al. 2019):

    y = (x + u) / L,  u in [0, 1)^D     (uniform: u ~ U[0, 1)^D; variational: u ~ q(u | x))
    v = logit(a + (1 - 2a) y)           (preprocess "logit", a = logit_alpha; "scale": v = y)

and the discrete log-likelihood is bounded from below, per image, in nats on the level grid:

    log P(x) >= E_u[log p(y) - log q(u | x)] - D log L,  log p(y) = log p(v) + log |dv/dy|

(q = 1 for uniform noise). `log_prob` returns a one-draw estimate of that bound, so its bits/dim
compare with the PixelCNN's exact ones and the VAE's bounds on the same levels; a uniform density
on [0, 1)^D gives log2 L bits/dim. The variational q is a small conditional flow
u = sigmoid(mu(x) + exp(s(x)) * eps), eps ~ N(0, I), with mu, s from a 2-layer conv net on the
levels, trained jointly by the same bound (Flow++, Ho et al. 2019, in its simplest form).

Units: `loss` is the batch mean NLL in bits/dim for images and nats per point for points
(`metric_units` says which); `log_prob` and `anomaly_score` are nats per item.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar

import torch
from torch import nn

from genkernels.models._validate import (check_choice, check_int, check_int_tuple,
                                          check_real, class_labels, evaluation_count)
from genkernels.models.base import GenerativeModel

DEQUANTIZATIONS = ("uniform", "variational")
PREPROCESSINGS = ("logit", "scale")
FIGURE_TEMPERATURES = (0.5, 0.7, 1.0)
_LOG_2PI = math.log(2 * math.pi)


@dataclasses.dataclass
class FlowConfig:
    """Fields every flow family's config inherits (subclass it with @dataclass; every field needs a
    default; call super().__post_init__() from yours).

    data_shape      shape of one item: (D,) for points or vectors, (C, H, W) for images
    num_levels      0: continuous data (points); L >= 2: discrete levels 0..L-1 (17 for the digits),
                    dequantised (see the module docstring)
    dequantization  "uniform" or "variational" (images only)
    preprocess      images only: "logit" (v = logit(a + (1 - 2a) y)) or "scale" (v = y in [0, 1))
    logit_alpha     a of the logit transform, keeps v finite at y = 0 and 1
    num_classes     classes for conditioning (labels -> context); 0: unconditional
    """

    data_shape: tuple[int, ...] = (2,)
    num_levels: int = 0
    dequantization: str = "uniform"
    preprocess: str = "logit"
    logit_alpha: float = 0.05
    num_classes: int = 0

    def __post_init__(self):
        name = type(self).__name__
        self.data_shape = check_int_tuple(f"{name}.data_shape", self.data_shape)
        self.num_levels = check_int(f"{name}.num_levels", self.num_levels, 0)
        if self.num_levels == 1:
            raise ValueError(f"{name}.num_levels must be 0 (continuous data) or >= 2 levels, got 1")
        self.dequantization = check_choice(f"{name}.dequantization", self.dequantization, DEQUANTIZATIONS)
        self.preprocess = check_choice(f"{name}.preprocess", self.preprocess, PREPROCESSINGS)
        self.logit_alpha = check_real(f"{name}.logit_alpha", self.logit_alpha, 0.0)
        if not self.logit_alpha < 0.5:
            raise ValueError(f"{name}.logit_alpha must be in [0, 0.5), got {self.logit_alpha}")
        self.num_classes = check_int(f"{name}.num_classes", self.num_classes, 0)

    @property
    def num_dims(self) -> int:
        return math.prod(self.data_shape)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over every dimension but the first: (N, ...) -> (N,) nats."""
    return -0.5 * (z.pow(2) + _LOG_2PI).reshape(z.shape[0], -1).sum(1)


class VariationalDequantizer(nn.Module):
    """q(u | x) on [0, 1)^D: u = sigmoid(h), h = mu(x) + exp(s(x)) * eps, eps ~ N(0, I).

    mu, s come from a small net on the centred levels (convs for (C, H, W) items, an MLP otherwise).
    `forward(levels_float)` returns (u, log q(u | x)) per item (N,) in nats.
    """

    def __init__(self, data_shape: tuple[int, ...], hidden: int = 32):
        super().__init__()
        self.data_shape = tuple(data_shape)
        if len(self.data_shape) == 3:
            c = self.data_shape[0]
            self.net = nn.Sequential(nn.Conv2d(c, hidden, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(hidden, 2 * c, 3, padding=1))
        else:
            d = math.prod(self.data_shape)
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(d, 4 * hidden), nn.ReLU(), nn.Linear(4 * hidden, 2 * d))
        last = self.net[-1]
        nn.init.zeros_(last.weight)  # starts as the logistic-normal N(0, 1) through a sigmoid
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        params = self.net(x).reshape(n, 2, *self.data_shape)  # (N, 2, *shape)
        mu, log_scale = params[:, 0], params[:, 1].clamp(-7.0, 3.0)
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        h = mu + torch.exp(log_scale) * eps
        u = torch.sigmoid(h)
        # log q(u) = log N(eps) - log|dh/deps| - log|du/dh|,  du/dh = u (1 - u)
        log_q = (standard_normal_log_prob(eps) - log_scale.reshape(n, -1).sum(1)
                 - (nn.functional.logsigmoid(h) + nn.functional.logsigmoid(-h)).reshape(n, -1).sum(1))
        return u, log_q


class FlowModel(GenerativeModel):
    """Base class of the flow families. Subclasses implement

        log_prob_continuous(v, labels=None) -> (N,) nats
            log p(v) of items v (N, *data_shape) in the model's input space (points as they are;
            images after dequantisation and preprocessing), labels (N,) int64 or None
        sample_continuous(n, temperature=1.0, labels=None, generator=None) -> (n, *data_shape)
            draws in the input space; the base z ~ N(0, temperature^2 I) (drawn with `generator`)

    and set `name`, `config_class` (a @dataclass subclass of FlowConfig) and `default_data`. Use
    `self.class_context(labels)` for a one-hot context (N, num_classes) or None, and
    `standard_normal_log_prob` for the base density. Everything else (`log_prob` on the data's
    scale, `loss`, `sample`, `anomaly_score`, `evaluate`, `figures`, `config_for_data`) is here.
    """

    config_class: ClassVar[type] = FlowConfig
    default_data: ClassVar[str] = "moons"
    data_kinds: ClassVar[tuple[str, ...]] = ("points", "image", "image-levels")
    metric_units: ClassVar[dict[str, str]] = {"loss": "nats/item or bits/dim", "loglik_nats": "nats/point",
                                              "gaussian_loglik_nats": "nats/point", "kde_loglik_nats": "nats/point",
                                              "nll_bpd": "bits/dim", "uniform_bpd": "bits/dim"}

    def __init__(self, config):
        super().__init__(config)
        config = self.config
        if not isinstance(config, FlowConfig):
            raise TypeError(f"config must subclass FlowConfig, got {type(config).__name__}")
        # an instance attribute: the loss unit depends on the data
        self.metric_units = {**type(self).metric_units,
                             "loss": "bits/dim" if self.is_discrete else "nats/point"}
        self.dequantizer = (VariationalDequantizer(config.data_shape)
                            if self.is_discrete and config.dequantization == "variational" else None)
        self._figure_items: torch.Tensor | None = None  # held-out items kept by evaluate()

    # -- what subclasses implement -------------------------------------------------------------
    def log_prob_continuous(self, v: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def sample_continuous(self, n: int, temperature: float = 1.0, labels: torch.Tensor | None = None,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------------------------
    @property
    def is_discrete(self) -> bool:
        return self.config.num_levels >= 2

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.config.data_shape)

    @property
    def num_dims(self) -> int:
        return math.prod(self.config.data_shape)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def class_context(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """One-hot float context (N, num_classes) in the model's dtype, or None (no labels)."""
        if labels is None:
            return None
        return nn.functional.one_hot(labels, self.config.num_classes).to(self.dtype)

    def _labels(self, labels, n: int, generator: torch.Generator | None = None, *, required: bool = True):
        """Class indices (n,) int64 on the model's device, or None (unconditional model)."""
        if self.config.num_classes and labels is None and required:
            raise ValueError(f"this {self.name or type(self).__name__} is class-conditional "
                             f"(num_classes={self.config.num_classes}): pass labels")
        return class_labels(labels, n, self.config.num_classes, model=type(self).__name__, device=self.device,
                            generator=generator)

    def _check_items(self, x: Any, name: str = "x") -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a tensor (N, *{self.data_shape}), got {type(x).__name__}")
        if x.ndim != 1 + len(self.data_shape) or tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"{name} must have shape (N, *{self.data_shape}), got {tuple(x.shape)}")
        return x

    def _levels(self, x: torch.Tensor) -> torch.Tensor:
        """Discrete items as int64 levels: integer data as is (clamped), float data in [0, 1] rounded."""
        top = self.config.num_levels - 1
        if x.is_floating_point():
            return (x.float() * top).round().clamp(0, top).long()
        return x.long().clamp(0, top)

    @staticmethod
    def _split_batch(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(items, labels or None) from a collated batch: items, or (items, labels)."""
        if isinstance(batch, (tuple, list)):
            return batch[0], batch[1] if len(batch) > 1 else None
        return batch, None

    def _generator(self, seed: int | None) -> torch.Generator:
        """Seeded by `seed`, else from the global torch RNG (so torch.manual_seed fixes samples too)."""
        seed = int(torch.randint(0, 2**62, ()).item()) if seed is None else check_int("seed", seed, 0)
        return torch.Generator(device=self.device).manual_seed(seed)

    # -- the input space: dequantisation and preprocessing ---------------------------------------
    def _preprocess(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y in [0, 1) -> (v, log|dv/dy| per item (N,))."""
        if self.config.preprocess == "scale":
            return y, y.new_zeros(y.shape[0])
        a = self.config.logit_alpha
        s = a + (1 - 2 * a) * y
        v = torch.log(s) - torch.log1p(-s)
        log_det = (math.log(1 - 2 * a) - torch.log(s) - torch.log1p(-s)).reshape(y.shape[0], -1).sum(1)
        return v, log_det

    def _postprocess(self, v: torch.Tensor) -> torch.Tensor:
        """Inverse of `_preprocess`: v -> y, clamped to [0, 1]."""
        if self.config.preprocess == "scale":
            return v.clamp(0, 1)
        a = self.config.logit_alpha
        return ((torch.sigmoid(v) - a) / (1 - 2 * a)).clamp(0, 1)

    def dequantize(self, x: torch.Tensor, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Discrete items x -> (v in the input space, correction (N,) nats) with
        log P(x) >= log p(v) + correction (one-draw estimate of the bound):
        correction = log|dv/dy| - log q(u | x) - D log L."""
        levels = self._levels(x).to(self.device)
        level_values = levels.to(self.dtype)
        if self.dequantizer is not None:
            u, log_q = self.dequantizer(level_values / (self.config.num_levels - 1) - 0.5, generator)
        else:
            u = torch.rand(levels.shape, generator=generator, device=levels.device, dtype=self.dtype)
            log_q = u.new_zeros(levels.shape[0])
        y = (level_values + u) / self.config.num_levels
        v, log_det = self._preprocess(y)
        return v, log_det - log_q - self.num_dims * math.log(self.config.num_levels)

    # -- likelihood ---------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor, labels=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """log p(x) per item in nats, (N,).

        Points: the exact density. Discrete images: a one-draw estimate of the dequantised lower
        bound on log P(x) over the level grid (module docstring). labels: class indices (N,) for a
        class-conditional model.
        """
        x = self._check_items(x)
        labels = self._labels(labels, x.shape[0])
        if not self.is_discrete:
            return self.log_prob_continuous(x.to(self.device, self.dtype), labels)
        v, correction = self.dequantize(x, generator)
        return self.log_prob_continuous(v, labels) + correction

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """{"loss": batch mean NLL, bits/dim for images, nats per point for points}."""
        x, labels = self._split_batch(batch)
        if self.config.num_classes and labels is None:
            raise ValueError(f"this {self.name} is class-conditional (num_classes > 0) but the data has no labels")
        nll = -self.log_prob(x, labels if self.config.num_classes else None)
        if self.is_discrete:
            return {"loss": nll.mean() / (self.num_dims * math.log(2))}
        return {"loss": nll.mean()}

    @torch.no_grad()
    def anomaly_score(self, x: torch.Tensor, labels=None, num_samples: int = 1) -> torch.Tensor:
        """-log p(x) per item in nats, (N,): high for inputs the model finds unlikely. For images,
        averaged over `num_samples` dequantisation draws."""
        draws = check_int("num_samples", num_samples, 1) if self.is_discrete else 1
        return -torch.stack([self.log_prob(x, labels) for _ in range(draws)]).mean(0)

    # -- generation ---------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels=None, temperature: float = 1.0, seed: int | None = None) -> torch.Tensor:
        """n items (n, *data_shape): points as they are, images float32 in [0, 1] on the level grid
        (level / (L - 1)).

        labels       class-conditional models: an int, a sequence of n ints, or None (random)
        temperature  >= 0; the base draw is z ~ N(0, temperature^2 I) (Glow's reduced temperature)
        seed         seeds the draws; None draws from the global RNG
        """
        check_int("n", n, 1)
        temperature = check_real("temperature", temperature, 0.0)
        generator = self._generator(seed)
        labels = self._labels(labels, n, generator, required=False)
        v = self.sample_continuous(n, temperature, labels, generator)
        if not self.is_discrete:
            return v
        levels = (self._postprocess(v) * self.config.num_levels).floor().clamp(0, self.config.num_levels - 1)
        return (levels / (self.config.num_levels - 1)).float()

    # -- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, dataset, *, max_items: int | None = None, batch_size: int = 256,
                 train_points: torch.Tensor | None = None) -> dict[str, float]:
        """Held-out metrics.

        Images: {"nll_bpd": the dequantised NLL bound in bits/dim, "uniform_bpd": log2 L}.
        Points: {"loglik_nats": average held-out log-likelihood in nats per point,
        "gaussian_loglik_nats", "kde_loglik_nats": the same for a full-covariance Gaussian and a
        Gaussian KDE (bandwidth chosen on a held-out part of train) fitted on the train split}.
        The train split is `train_points` (N, D), else the toy set's own train draw; without
        either the baselines are left out. Keeps 16 held-out items for `figures`.
        """
        from genkernels.metrics import bits_per_dim

        count = evaluation_count(dataset, max_items, batch_size)
        log_probs, items_all = [], []
        for start in range(0, count, batch_size):
            batch = [dataset[i] for i in range(start, min(count, start + batch_size))]
            x = torch.stack([item[0] if isinstance(item, (tuple, list)) else item for item in batch])
            labels = None
            if self.config.num_classes:
                if not isinstance(batch[0], (tuple, list)):
                    raise ValueError(f"this {self.name} is class-conditional but the data has no labels")
                labels = torch.as_tensor([int(item[1]) for item in batch])
            log_probs.append(self.log_prob(x.to(self.device), labels).double().cpu())
            items_all.append(x)
        log_prob = torch.cat(log_probs)
        items = torch.cat(items_all)
        self._figure_items = items[:16].cpu()
        if self.is_discrete:
            return {"nll_bpd": bits_per_dim(-log_prob, self.num_dims),
                    "uniform_bpd": math.log2(self.config.num_levels)}
        metrics = {"loglik_nats": log_prob.mean().item()}
        train = train_points if train_points is not None else _toy_train_points(dataset)
        if train is not None:
            metrics.update(_baselines(train.reshape(len(train), -1).double(), items.reshape(count, -1).double()))
        return metrics

    # -- figures ------------------------------------------------------------------------------
    @torch.no_grad()
    def figures(self, samples: torch.Tensor, *, nrow: int | None = None) -> dict[str, Any]:
        """Images: {"samples": grid of the given samples, "temperatures": rows of 8 samples (seed 0)
        at temperatures 0.5, 0.7, 1.0} (PIL). 2D points: {"samples": matplotlib Figure, the density
        exp(log p) on a grid beside a scatter of the samples}. Other vectors: {}."""
        from genkernels.figures import density_heatmap, image_grid

        if not self.is_discrete:
            if self.data_shape != (2,):
                return {}
            labels = 0 if self.config.num_classes else None  # a conditional density: class 0's
            samples = samples.float().cpu()

            def log_prob_fn(points: torch.Tensor) -> torch.Tensor:
                return self.log_prob(points.to(self.device, self.dtype),
                                     None if labels is None else [labels]).float().cpu()

            return {"samples": density_heatmap(log_prob_fn, samples)}
        if len(self.data_shape) != 3 or self.data_shape[0] not in (1, 3):
            return {}
        figures = {"samples": image_grid(samples.float().cpu().clamp(0, 1), nrow or 8)}
        columns = 8
        rows = [self.sample(columns, temperature=t, seed=0, labels=(torch.arange(columns) % self.config.num_classes
                                                                      if self.config.num_classes else None)).cpu()
                for t in FIGURE_TEMPERATURES]
        figures["temperatures"] = image_grid(torch.cat(rows), columns,
                                             row_labels=[f"T={t:g}" for t in FIGURE_TEMPERATURES])
        return figures

    # -- fitting to data ----------------------------------------------------------------------
    @staticmethod
    def _first_item(dataset) -> torch.Tensor:
        if len(dataset) == 0:
            raise ValueError("the dataset is empty")
        item = dataset[0]
        return item[0] if isinstance(item, (tuple, list)) else item

    @classmethod
    def config_for_data(cls, dataset, overrides: dict[str, Any] | None = None, *, data_name: str | None = None):
        """data_shape from the first item; num_levels 0 for points, the dataset's levels (256 for
        8-bit folders, 17 for the digits) for images. `overrides` win."""
        cls.check_data(dataset, data_name)
        values = dict(overrides or {})
        values.setdefault("data_shape", tuple(int(s) for s in cls._first_item(dataset).shape))
        kind = getattr(dataset, "kind", None)
        values.setdefault("num_levels", int(getattr(dataset, "num_levels", 256)) if kind != "points" else 0)
        return cls.config_class(**values)

    def check_dataset(self, dataset, data_name: str | None = None) -> None:
        self.check_data(dataset, data_name)
        shape = tuple(int(s) for s in self._first_item(dataset).shape)
        name = f"data {str(data_name)!r}" if data_name is not None else "the data"
        if shape != self.data_shape:
            raise ValueError(f"{name} has items of shape {shape}, but this {self.name} model was built for "
                             f"{self.data_shape}")
        if (getattr(dataset, "kind", None) == "points") == self.is_discrete:
            raise ValueError(f"{name} is {getattr(dataset, 'kind', None)} data, but this {self.name} model was "
                             f"built for {'discrete images' if self.is_discrete else 'continuous points'}")


# -- point baselines ------------------------------------------------------------------------------
def _toy_train_points(dataset) -> torch.Tensor | None:
    """The train draw of a toy set (same name and seed), or None for other data."""
    from genkernels.data.toy2d import TOY_DATASETS, ToyDataset, toy_dataset

    if isinstance(dataset, ToyDataset) and dataset.name in TOY_DATASETS:
        return toy_dataset(dataset.name, "train", seed=dataset.seed).points
    return None


def _baselines(train: torch.Tensor, test: torch.Tensor) -> dict[str, float]:
    """Gaussian and KDE held-out log-likelihoods (nats per point), cached per (train, test)."""
    return dict(_cached_baselines(train.numpy().tobytes(), test.numpy().tobytes(), train.shape[1]))


@functools.lru_cache(maxsize=16)
def _cached_baselines(train_bytes: bytes, test_bytes: bytes, dims: int) -> tuple[tuple[str, float], ...]:
    import numpy as np

    from genkernels.metrics.density import gaussian_loglik, kde_loglik

    train = torch.from_numpy(np.frombuffer(train_bytes, dtype=np.float64).reshape(-1, dims).copy())
    test = torch.from_numpy(np.frombuffer(test_bytes, dtype=np.float64).reshape(-1, dims).copy())
    return (("gaussian_loglik_nats", gaussian_loglik(train, test)), ("kde_loglik_nats", kde_loglik(train, test)))


__all__ = ["FlowModel", "FlowConfig", "VariationalDequantizer", "standard_normal_log_prob", "DEQUANTIZATIONS",
           "PREPROCESSINGS", "FIGURE_TEMPERATURES"]
