"""Sample-quality metrics for the 8x8 digits, from a small CNN trained on the digits train split.

The classifier is the digits' stand-in for the Inception network of FID: it is trained once with
a fixed seed (a few seconds on a CPU), then cached as safetensors plus a JSON of its config and
test accuracy under the user's cache folder: $GENKERNELS_CACHE, else $XDG_CACHE_HOME/genkernels,
else ~/.cache/genkernels. A cached copy is used only if its config matches and it reproduces its
recorded test accuracy; otherwise it is retrained and rewritten.

All functions take images (N, 1, 8, 8) (or (N, 8, 8)) in [0, 1], i.e. digit level / 16, the
form="float" data. Values slightly outside [0, 1] are clamped; a range clearly not [0, 1]
(below -0.5 or above 1.5, e.g. [-1, 1] or 0..16 data) raises ValueError.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genkernels._cache import cache_dir
from genkernels.data.digits import load_digits_tensors

_FILE_STEM = "digits_classifier"
_lock = threading.Lock()
_loaded: dict[str, "DigitsClassifier"] = {}


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    version: int = 1  # bump when the architecture or training recipe changes
    channels: int = 32
    feature_dim: int = 128
    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    max_shift: int = 1  # random translation by up to this many pixels (augmentation)
    seed: int = 0


class DigitsClassifier(nn.Module):
    """conv3x3 -> conv3x3 -> maxpool -> conv3x3 -> global mean -> linear features -> linear logits."""

    def __init__(self, config: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        c = config.channels
        self.conv1 = nn.Conv2d(1, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.conv3 = nn.Conv2d(c, 2 * c, 3, padding=1)
        self.features = nn.Linear(2 * c * 16, config.feature_dim)
        self.head = nn.Linear(config.feature_dim, 10)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, 8, 8) in [0, 1] -> penultimate features (N, feature_dim) (after ReLU)."""
        h = F.relu(self.conv1(images))  # (N, c, 8, 8)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (N, c, 4, 4)
        h = F.relu(self.conv3(h))  # (N, 2c, 4, 4)
        return F.relu(self.features(h.flatten(1)))  # (N, feature_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(images))  # (N, 10) logits


# -- training and caching --------------------------------------------------------------------
def _random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by its own random offset of up to max_shift pixels (zero fill)."""
    n = images.shape[0]
    padded = F.pad(images[:, 0], (max_shift,) * 4)  # (N, 8 + 2s, 8 + 2s)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n, 1), generator=generator)
    rows = offsets[0] + torch.arange(8)  # (N, 8)
    cols = offsets[1] + torch.arange(8)  # (N, 8)
    return padded[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]].unsqueeze(1)


@torch.no_grad()
def _accuracy(model: DigitsClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    return (model(images).argmax(dim=1) == labels).double().mean().item()


def _train(config: ClassifierConfig) -> DigitsClassifier:
    # Batches of 64 8x8 images are too small for intra-op threads to pay: on a busy machine
    # their synchronisation made training 10-20x slower than on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # Metrics are often asked for under no_grad / inference_mode (a model's evaluate):
        # training needs autograd whatever the caller's mode.
        with torch.inference_mode(False), torch.enable_grad():
            return _train_single_thread(config)
    finally:
        torch.set_num_threads(threads)


def _train_single_thread(config: ClassifierConfig) -> DigitsClassifier:
    images, labels = load_digits_tensors("train", "float")
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's RNG
        torch.manual_seed(config.seed)
        model = DigitsClassifier(config)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(labels) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, config.learning_rate, total_steps=config.epochs * steps_per_epoch)
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), config.batch_size):
            batch = order[start:start + config.batch_size]
            inputs = _random_shift(images[batch], config.max_shift, generator)
            loss = F.cross_entropy(model(inputs), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def _paths(folder: Path) -> tuple[Path, Path]:
    return folder / f"{_FILE_STEM}.safetensors", folder / f"{_FILE_STEM}.json"


def _load_cached(folder: Path, config: ClassifierConfig) -> DigitsClassifier | None:
    """The cached classifier if it is complete, matches `config` and reproduces its accuracy."""
    from safetensors.torch import load_file

    weights_path, meta_path = _paths(folder)
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("config") != dataclasses.asdict(config):
            return None
        model = DigitsClassifier(config)
        model.load_state_dict(load_file(str(weights_path)))
    except Exception:  # missing, truncated or foreign files all mean "retrain"
        return None
    model.eval()
    test_images, test_labels = load_digits_tensors("test", "float")
    # Corrupt weights score far off; a different thread count may flip at most an image or two.
    accuracy = _accuracy(model, test_images, test_labels)
    if not math.isclose(accuracy, meta.get("test_accuracy", -1.0), abs_tol=0.005):
        return None
    return model


def _save(folder: Path, model: DigitsClassifier, config: ClassifierConfig, test_accuracy: float) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    weights_path, meta_path = _paths(folder)
    meta = {"config": dataclasses.asdict(config), "test_accuracy": test_accuracy,
            "train_split": "digits train (1000 images)", "test_split": "digits test (447 images)"}
    # Write to temporary names and rename, so a concurrent reader never sees half a file.
    suffix = f".tmp{os.getpid()}"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights_path) + suffix)
    Path(str(meta_path) + suffix).write_text(json.dumps(meta, indent=2))
    os.replace(str(weights_path) + suffix, weights_path)
    os.replace(str(meta_path) + suffix, meta_path)


def digits_classifier(retrain: bool = False) -> DigitsClassifier:
    """The digits classifier in eval mode, on the CPU: from this process, the cache, or trained.

    retrain=True ignores the cache and trains afresh (then rewrites the cache).
    """
    config = ClassifierConfig()
    folder = cache_dir()
    with _lock:
        if not retrain and str(folder) in _loaded:
            return _loaded[str(folder)]
        model = None if retrain else _load_cached(folder, config)
        if model is None:
            model = _train(config)
            test_images, test_labels = load_digits_tensors("test", "float")
            try:
                _save(folder, model, config, _accuracy(model, test_images, test_labels))
            except OSError as error:  # a read-only cache costs a retrain per process, not a crash
                warnings.warn(f"could not cache the digits classifier in {str(folder)!r}: {error}")
        model.requires_grad_(False)
        _loaded[str(folder)] = model
        return model


# -- metrics ---------------------------------------------------------------------------------
def _as_images(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    if not torch.is_tensor(images):
        raise TypeError(f"{name} must be a tensor (N, 1, 8, 8), got {type(images).__name__}")
    if images.dim() == 3 and images.shape[1:] == (8, 8):
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[1:] != (1, 8, 8) or images.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, 1, 8, 8) with N >= 1, got {tuple(images.shape)}")
    images = images.detach().to("cpu", torch.float32)
    low, high = images.min().item(), images.max().item()
    if not (low >= -0.5 and high <= 1.5):  # also catches NaN
        raise ValueError(
            f"{name} must be in [0, 1] (digit level / 16), got values in [{low:.3g}, {high:.3g}]")
    return images.clamp(0.0, 1.0)


@torch.no_grad()
def digits_features(images: torch.Tensor) -> torch.Tensor:
    """Penultimate-layer classifier features: images (N, 1, 8, 8) in [0, 1] -> float32 (N, 128)."""
    return digits_classifier().embed(_as_images(images))


@torch.no_grad()
def class_accuracy(samples: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of class-conditional samples the classifier assigns to the class asked for.

    samples (N, 1, 8, 8) in [0, 1]; labels (N,) int classes 0..9 the samples were conditioned on.
    Real test digits score about 0.97; a conditional model that ignores its label ~0.1.
    """
    samples = _as_images(samples, "samples")
    labels = torch.as_tensor(labels).to("cpu").long().reshape(-1)
    if labels.shape[0] != samples.shape[0]:
        raise ValueError(f"labels must have one entry per sample: {samples.shape[0]} samples, "
                         f"{labels.shape[0]} labels")
    return _accuracy(digits_classifier(), samples, labels)


def _mean_and_covariance(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    array = features.double().numpy()
    return array.mean(axis=0), np.cov(array, rowvar=False)  # (F,), (F, F) unbiased


def _sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(images_a: torch.Tensor, images_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to classifier features of two image sets.

    images_a (N, 1, 8, 8), images_b (M, 1, 8, 8) in [0, 1], N, M >= 2. With feature means mu and
    unbiased covariances S,
        FD = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))
    (the FID formula, Heusel et al., 2017, in this classifier's 128-d feature space). The trace of
    the matrix square root is computed as tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)) by symmetric
    eigendecompositions: the matrices are PSD, so this is real and stable even when they are
    singular, which scipy.linalg.sqrtm handles poorly. FD is biased upwards for small sets:
    compare values computed with the same number of images.
    """
    images_a, images_b = _as_images(images_a, "images_a"), _as_images(images_b, "images_b")
    if images_a.shape[0] < 2 or images_b.shape[0] < 2:
        raise ValueError(f"frechet_distance needs >= 2 images per set, "
                         f"got {images_a.shape[0]} and {images_b.shape[0]}")
    mean_a, cov_a = _mean_and_covariance(digits_features(images_a))
    mean_b, cov_b = _mean_and_covariance(digits_features(images_b))
    root_a = _sqrtm_psd(cov_a)
    cross_eigenvalues = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_sqrt = np.sqrt(np.clip(cross_eigenvalues, 0.0, None)).sum()
    distance = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt
    return float(max(distance, 0.0))


def digits_sample_metrics(samples: torch.Tensor, labels: torch.Tensor | None = None,
                          reference: str | torch.Tensor = "test") -> dict[str, float]:
    """Sample metrics for generated digits.

    samples    (N, 1, 8, 8) in [0, 1]
    labels     (N,) classes the samples were conditioned on, or None for unconditional samples
    reference  a digits split name ("train", "val", "test") or an image tensor (M, 1, 8, 8)
    Returns {"frechet_distance": FD vs the reference, "num_samples": N} plus "class_accuracy"
    when labels are given.
    """
    if isinstance(reference, str):
        reference = load_digits_tensors(reference, "float")[0]
    metrics = {"frechet_distance": frechet_distance(samples, reference), "num_samples": int(samples.shape[0])}
    if labels is not None:
        metrics["class_accuracy"] = class_accuracy(samples, labels)
    return metrics
