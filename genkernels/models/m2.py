"""M2 (Kingma, Rezende, Mohamed & Welling 2014, "Semi-supervised learning with deep generative
models"): a class-conditional VAE whose class is a latent variable when the label is missing.

    p(y) = Cat(1/K),  p(z) = N(0, I),  p(x | y, z)             the generative model
    q(y | x) (the classifier),  q(z | x, y) = N(mu, diag sigma^2)  the inference networks

    labelled (x, y):  L(x, y) = -ELBO(x, y) = E_q(z|x,y)[-log p(x | y, z)] + KL(q(z|x,y) || p(z)) - log p(y)
    unlabelled x:     U(x) = sum_y q(y | x) L(x, y) - H(q(y | x))        (>= -log p(x))
    objective:        J^alpha = sum_labelled L(x, y) + sum_unlabelled U(x) + alpha * E_labelled[-log q(y | x)]

The paper sets alpha = 0.1 N (N: training items), so that per item the classification term weighs
0.1 nats against the ELBOs. `loss` is an unbiased one-batch estimate of J^alpha / (N D) (D pixels):

    loss = [ (N_l / N) mean_labelled L + (N_u / N) mean_batch U + (alpha / N) mean_labelled CE ] / D

with N_l = num_labels and N_u = N - N_l. U sums over the K classes exactly (the batch is expanded
K-fold through the encoder and decoder); z is one reparameterised draw (fused op reparam_kl).

Data: the labelled set is a few digits (num_labels, 50-100), balanced over the classes and chosen
with a fixed seed (`label_seed`) from the training set. `config_for_data` records their indices in
the config (`labelled_indices`); the model keeps the images and labels as buffers (so checkpoints
carry them), filled by `prepare_dataset(train_set)` (which the CLI calls on the training set first)
or `set_labelled(images, labels)`. Every training batch is the unlabelled stream: its labels, if
any, are ignored; every step also uses the whole labelled set (N_l <= a few hundred small images).
So `genkernels train m2` trains on the digits as they are, and `genkernels eval` reports the test
accuracy of q(y | x) beside a classifier of the same architecture trained on the labelled digits
alone (`train_labels_only`), and the unlabelled bound U in bits/dim.

p(x | y, z) is an output head of genkernels.nn.likelihoods over the L levels (default
"bernoulli": Binomial(L - 1, p) per pixel, the paper's Bernoulli on the sub-pixels).
Units: `loss` in nats/dim (as above); `negative_elbo`, `unlabelled_loss` per item in nats.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genkernels.models._validate import (check_choice, check_int, check_int_tuple, check_real,
                                          evaluation_count)
from genkernels.models.base import ImageGenerativeModel
from genkernels.nn.latent import GaussianLatent
from genkernels.nn.likelihoods import LIKELIHOODS, DiscreteLikelihood, get_likelihood


@dataclasses.dataclass
class M2Config:
    """image_shape       (C, H, W) of the data
    num_levels        discrete levels per pixel L (17 for the digits)
    num_classes       K, the classes of y
    latent_dim        size of z
    hidden            width of the two hidden layers of the encoder, decoder and classifier
    likelihood        output head of p(x | y, z) (genkernels.nn.likelihoods)
    num_labels        N_l, labelled training items (balanced over the classes)
    label_seed        seed of the choice of the labelled items
    alpha             weight of the classification term; None: 0.1 * num_train (the paper)
    num_train         N, training items (labelled + unlabelled); config_for_data sets len(train set)
    labelled_indices  the labelled items' indices in the training set (config_for_data chooses them)
    baseline_steps    full-batch Adam steps of the labels-only classifier that `evaluate` compares with
    """

    image_shape: tuple[int, int, int] = (1, 8, 8)
    num_levels: int = 17
    num_classes: int = 10
    latent_dim: int = 16
    hidden: int = 256
    likelihood: str = "bernoulli"
    num_labels: int = 100
    label_seed: int = 0
    alpha: float | None = None
    num_train: int = 1000
    labelled_indices: tuple[int, ...] = ()
    baseline_steps: int = 300

    def __post_init__(self):
        self.image_shape = check_int_tuple("M2Config.image_shape", self.image_shape, length=3)
        self.likelihood = check_choice("M2Config.likelihood", self.likelihood, tuple(LIKELIHOODS))
        self.num_levels = check_int("M2Config.num_levels", self.num_levels, 2)
        self.num_classes = check_int("M2Config.num_classes", self.num_classes, 2)
        for name in ("latent_dim", "hidden", "baseline_steps"):
            setattr(self, name, check_int(f"M2Config.{name}", getattr(self, name), 1))
        self.num_labels = check_int("M2Config.num_labels", self.num_labels, self.num_classes)
        self.label_seed = check_int("M2Config.label_seed", self.label_seed, 0)
        self.num_train = check_int("M2Config.num_train", self.num_train, self.num_labels)
        if self.alpha is not None:
            self.alpha = check_real("M2Config.alpha", self.alpha, 0.0)
        self.labelled_indices = tuple(int(i) for i in self.labelled_indices)
        if self.labelled_indices and len(self.labelled_indices) != self.num_labels:
            raise ValueError(f"M2Config.labelled_indices must hold num_labels={self.num_labels} indices, "
                             f"got {len(self.labelled_indices)}")

    @property
    def alpha_value(self) -> float:
        return 0.1 * self.num_train if self.alpha is None else self.alpha


def balanced_label_indices(labels: torch.Tensor, num_labels: int, num_classes: int, seed: int = 0) -> list[int]:
    """Indices of `num_labels` items, num_labels // K per class (the first num_labels % K classes one
    more), drawn without replacement with a fixed seed; sorted. labels: (N,) int class indices."""
    labels = torch.as_tensor(labels).long().reshape(-1)
    check_int("num_labels", num_labels, num_classes)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        want = num_labels // num_classes + (1 if c < num_labels % num_classes else 0)
        if len(members) < want:
            raise ValueError(f"num_labels={num_labels} needs {want} items of class {c}, the data has {len(members)}")
        chosen += members[torch.randperm(len(members), generator=generator)[:want]].tolist()
    return sorted(chosen)


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, outputs))


def classifier_network(config: M2Config) -> nn.Sequential:
    """q(y | x): images centred to [-0.5, 0.5], flattened (N, D) -> logits (N, K)."""
    return _mlp(math.prod(config.image_shape), config.hidden, config.num_classes)


def train_labels_only(config: M2Config, images: torch.Tensor, labels: torch.Tensor, *, steps: int | None = None,
                      lr: float = 1e-3, weight_decay: float = 1e-4, seed: int = 0) -> nn.Module:
    """The baseline: `classifier_network(config)` trained on the labelled items alone (full-batch
    AdamW, cross-entropy, `steps` steps, default config.baseline_steps). images (N, C, H, W) in [0, 1]."""
    steps = config.baseline_steps if steps is None else check_int("steps", steps, 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = classifier_network(config).to(images.device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    inputs = images.float().flatten(1) - 0.5  # (N, D)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.cross_entropy(net(inputs), labels.long())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return net.eval()


class M2(ImageGenerativeModel):
    """Semi-supervised M2 over discrete-level images; see the module docstring."""

    name = "m2"
    config_class = M2Config
    default_data = "digits"
    metric_units = {"loss": "nats/dim, -J^alpha / (N D)", "labelled_nelbo": "nats/item",
                    "unlabelled": "nats/item", "ce": "nats/item", "accuracy": "fraction",
                    "baseline_accuracy": "fraction", "elbo_bpd": "bits/dim"}
    train_defaults = {"steps": 2000, "lr": 1e-3, "batch_size": 64, "weight_decay": 0.0, "eval_every": 500}

    def __init__(self, config: M2Config | None = None):
        super().__init__(config if config is not None else M2Config())
        config = self.config
        dims, k = math.prod(config.image_shape), config.num_classes
        self.likelihood: DiscreteLikelihood = get_likelihood(config.likelihood, config.num_levels)
        self.classifier = classifier_network(config)  # q(y | x)
        self.encoder = nn.Sequential(nn.Linear(dims + k, config.hidden), nn.ReLU(),
                                     nn.Linear(config.hidden, config.hidden), nn.ReLU())
        self.latent = GaussianLatent(config.hidden, config.latent_dim)  # q(z | x, y)
        self.decoder = _mlp(config.latent_dim + k, config.hidden,
                            self.likelihood.params_per_channel * dims)  # p(x | y, z)
        # the labelled set; persistent, so a checkpoint carries it
        self.register_buffer("labelled_images", torch.zeros(config.num_labels, *config.image_shape))
        self.register_buffer("labelled_targets", torch.zeros(config.num_labels, dtype=torch.long))
        self.register_buffer("labelled_ready", torch.zeros((), dtype=torch.bool))
        self._baseline: tuple[nn.Module, ...] = ()  # labels-only classifier, trained by evaluate()

    @property
    def num_dims(self) -> int:
        return math.prod(self.config.image_shape)

    # -- the labelled set ---------------------------------------------------------------------------
    @classmethod
    def config_for_data(cls, dataset, overrides: dict[str, Any] | None = None, *, data_name: str | None = None):
        """image_shape and num_levels from the data; num_classes, num_train = len(dataset) and the
        balanced labelled_indices (num_labels of them, label_seed) from its labels."""
        cls.check_data(dataset, data_name)
        values = dict(overrides or {})
        values.setdefault("image_shape", tuple(int(s) for s in cls._first_image(dataset).shape))
        values.setdefault("num_levels", int(getattr(dataset, "num_levels", 256)))
        labels = _dataset_labels(dataset)
        values.setdefault("num_classes", int(getattr(dataset, "num_classes", int(labels.max()) + 1)))
        values.setdefault("num_train", len(dataset))
        probe = M2Config(**{k: v for k, v in values.items() if k != "labelled_indices"})
        values.setdefault("labelled_indices", tuple(balanced_label_indices(
            labels, probe.num_labels, probe.num_classes, probe.label_seed)))
        return cls.config_class(**values)

    def set_labelled(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Keep the labelled items: images (num_labels, C, H, W) in [0, 1] or levels, labels (num_labels,)."""
        levels = self._levels(images, "images")
        labels = torch.as_tensor(labels).long().reshape(-1)
        if levels.shape[0] != self.config.num_labels or labels.shape[0] != self.config.num_labels:
            raise ValueError(f"set_labelled needs num_labels={self.config.num_labels} images and labels, got "
                             f"{levels.shape[0]} and {labels.shape[0]}")
        if labels.min() < 0 or labels.max() >= self.config.num_classes:
            raise ValueError(f"labels must be in 0..{self.config.num_classes - 1}")
        self.labelled_images.copy_(self._to_images(levels))
        self.labelled_targets.copy_(labels)
        self.labelled_ready.fill_(True)
        self._baseline = ()

    def prepare_dataset(self, dataset):
        """Fill the labelled set from the training set (the first dataset the CLI prepares) at
        config.labelled_indices, once; the dataset itself is returned unchanged."""
        if not bool(self.labelled_ready):
            if not self.config.labelled_indices or len(dataset) != self.config.num_train:
                raise ValueError(f"M2 takes its {self.config.num_labels} labelled items from the training set "
                                 f"({self.config.num_train} items, config.labelled_indices), got a dataset of "
                                 f"{len(dataset)}; build the config with M2.config_for_data(train_set)")
            items = [dataset[i] for i in self.config.labelled_indices]
            self.set_labelled(torch.stack([item[0] for item in items]),
                              torch.stack([torch.as_tensor(item[1]) for item in items]))
        return dataset

    def _labelled(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not bool(self.labelled_ready):
            raise ValueError("M2 has no labelled items yet: call model.prepare_dataset(train_set) or "
                             "model.set_labelled(images, labels)")
        return self._levels(self.labelled_images, "labelled_images"), self.labelled_targets

    # -- the networks -------------------------------------------------------------------------------
    def _inputs(self, levels: torch.Tensor) -> torch.Tensor:
        return self._to_images(levels).flatten(1) - 0.5  # (N, D) centred

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y | x), (N, K), for images x (N, C, H, W) in [0, 1] (or int levels)."""
        return self.classifier(self._inputs(self._levels(x))).float()

    def _one_hot(self, labels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels.long(), self.config.num_classes).to(like.dtype)

    def _negative_elbo(self, levels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """L(x, y) = -log p(x | y, z) + KL(q(z | x, y) || N(0, I)) + log K per item in nats, (N,)."""
        inputs = self._inputs(levels)  # (N, D)
        y = self._one_hot(labels, inputs)  # (N, K)
        z, kl, _, _ = self.latent(self.encoder(torch.cat([inputs, y], 1)))  # (N, Z), (N,)
        params = self.decoder(torch.cat([z, y], 1)).float()  # (N, P D)
        params = params.view(levels.shape[0], self.likelihood.params_per_channel, *self.config.image_shape)
        return self.likelihood.nll(params, levels) + kl.float() + math.log(self.config.num_classes)

    def negative_elbo(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """L(x, y) per item in nats, (N,), one draw of z: x (N, C, H, W) images, labels (N,) ints."""
        return self._negative_elbo(self._levels(x), torch.as_tensor(labels, device=x.device))

    def _unlabelled(self, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(U(x) per item (N,), logits of q(y | x) (N, K)); the K classes in one expanded batch."""
        n, k = levels.shape[0], self.config.num_classes
        logits = self.classifier(self._inputs(levels)).float()  # (N, K)
        every_class = torch.arange(k, device=levels.device).repeat(n)  # (N K,): 0..K-1 per item
        nelbo = self._negative_elbo(levels.repeat_interleave(k, 0), every_class).view(n, k)  # (N, K)
        q, log_q = logits.softmax(-1), logits.log_softmax(-1)
        return (q * (nelbo + log_q)).sum(-1), logits  # sum_y q L - H(q) = sum_y q (L + log q)

    def unlabelled_loss(self, x: torch.Tensor) -> torch.Tensor:
        """U(x) = sum_y q(y | x) L(x, y) - H(q(y | x)) per item in nats, (N,) (an upper bound on -log p(x))."""
        return self._unlabelled(self._levels(x))[0]

    # -- training -----------------------------------------------------------------------------------
    def loss(self, batch) -> dict[str, torch.Tensor]:
        """{"loss": J^alpha / (N D) estimate (module docstring); "labelled_nelbo", "unlabelled", "ce":
        batch means in nats/item}. The batch is unlabelled: labels in it are ignored."""
        levels = self._levels(batch[0] if isinstance(batch, (tuple, list)) else batch)
        labelled, targets = self._labelled()
        config = self.config
        nelbo_l = self._negative_elbo(labelled, targets)  # (N_l,)
        ce = F.cross_entropy(self.classify(labelled), targets)
        u, _ = self._unlabelled(levels)  # (B,)
        n, n_l = config.num_train, config.num_labels
        objective = (n_l / n) * nelbo_l.mean() + ((n - n_l) / n) * u.mean() + (config.alpha_value / n) * ce
        return {"loss": objective / self.num_dims, "labelled_nelbo": nelbo_l.mean(), "unlabelled": u.mean(),
                "ce": ce}

    # -- generation ---------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels=None, mode: str = "mean") -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1] from p(x | y, z), z ~ N(0, I).

        labels  an int (that class for all), a sequence of n ints, or None (0, 1, ..., K-1 cycling)
        mode    "mean": the decoder's mean image; "sample": pixels drawn from p(x | y, z)
        """
        check_int("n", n, 1)
        check_choice("mode", mode, ("mean", "sample"))
        device = self.labelled_images.device
        k = self.config.num_classes
        if labels is None:
            labels = torch.arange(n, device=device) % k
        else:
            labels = torch.as_tensor(labels, device=device).long().reshape(-1)
            labels = labels.expand(n) if labels.numel() == 1 else labels
            if labels.numel() != n or labels.min() < 0 or labels.max() >= k:
                raise ValueError(f"labels must be an int or {n} ints in 0..{k - 1}, got {labels.tolist()}")
        z = torch.randn(n, self.config.latent_dim, device=device)
        y = self._one_hot(labels, z)
        params = self.decoder(torch.cat([z, y], 1)).float().view(
            n, self.likelihood.params_per_channel, *self.config.image_shape)
        if mode == "mean":
            return self.likelihood.mean(params)
        return self._to_images(self.likelihood.sample(params))

    @torch.no_grad()
    def figures(self, samples: torch.Tensor, *, nrow: int | None = None) -> dict[str, Any]:
        """The sample grid; `sample`'s default labels cycle 0..K-1, so K columns show one class each."""
        return super().figures(samples, nrow=nrow or self.config.num_classes)

    # -- evaluation ---------------------------------------------------------------------------------
    def baseline_classifier(self) -> nn.Module:
        """The labels-only classifier (`train_labels_only` on the labelled set, seed label_seed), trained once."""
        if not self._baseline:
            labelled, targets = self._labelled()
            self._baseline = (train_labels_only(self.config, self._to_images(labelled), targets,
                                                seed=self.config.label_seed),)
        return self._baseline[0]

    @torch.no_grad()
    def evaluate(self, dataset, *, max_items: int | None = None, batch_size: int = 256) -> dict[str, float]:
        """{"accuracy": of q(y | x), "baseline_accuracy": of the labels-only classifier of the same
        architecture, "elbo_bpd": the unlabelled bound U in bits/dim} on a labelled held-out dataset."""
        from genkernels.metrics import bits_per_dim

        count = evaluation_count(dataset, max_items, batch_size)
        device = self.labelled_images.device
        baseline = self.baseline_classifier()
        correct = correct_baseline = 0
        bounds = []
        for start in range(0, count, batch_size):
            items = [dataset[i] for i in range(start, min(count, start + batch_size))]
            levels = self._levels(torch.stack([item[0] for item in items]).to(device))
            labels = torch.stack([torch.as_tensor(item[1]) for item in items]).to(device)
            u, logits = self._unlabelled(levels)
            bounds.append(u)
            correct += int((logits.argmax(-1) == labels).sum())
            correct_baseline += int((baseline(self._inputs(levels)).argmax(-1) == labels).sum())
        return {"accuracy": correct / count, "baseline_accuracy": correct_baseline / count,
                "elbo_bpd": bits_per_dim(torch.cat(bounds), self.num_dims)}


def _dataset_labels(dataset) -> torch.Tensor:
    """(N,) int64 labels of a dataset of (item, label) pairs."""
    labels = getattr(dataset, "labels", None)
    if isinstance(labels, torch.Tensor) and labels.ndim == 1 and len(labels) == len(dataset):
        return labels.long()
    first = dataset[0]
    if not isinstance(first, (tuple, list)) or len(first) < 2:
        raise ValueError("M2 needs a labelled dataset of (image, label) items to choose its labelled set, "
                         "e.g. --data digits")
    return torch.stack([torch.as_tensor(dataset[i][1]).long() for i in range(len(dataset))])
