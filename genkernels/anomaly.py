"""Anomaly detection with the generative families, on a held-out-classes protocol.

A model trained on "normal" data scores new items; higher means more anomalous. Per family:

    VAE          "elbo": -ELBO (mean over `num_samples` draws of z), or "iwae": -IWAE_k (k = num_samples)
    flows        "nll": -log p(x) (the dequantised bound, mean over `num_samples` dequantisation draws)
    PixelCNN     "nll": -log p(x), exact
    M2           "elbo": U(x) = sum_y q(y|x) L(x, y) - H(q(y|x)) (the unlabelled bound)
    diffusion    "denoising": the denoiser's squared error on its own target (v, eps or x0), unweighted,
                 averaged over a fixed set of timesteps (fractions of T) and `num_samples` noise seeds

All scores are per item; likelihood scores are in nats. Every score is computed under a fixed seed
(the global RNG is restored afterwards), so a table is reproducible.

The protocol (`held_out_classes_split`): train on the digits of some classes (train split), then
score the val + test digits of every class; the held-out classes are the anomalies. `anomaly_table`
reports the ROC AUC (sklearn roc_auc_score; 0.5 is chance) and the average precision per family.
`train_on_normal` trains a model briefly on the normal images (AdamW, cosine decay, fixed seed).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Sequence

import torch
from torch import nn

METHODS = ("elbo", "iwae", "nll", "denoising")
DEFAULT_TIMESTEP_FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.5)


# -- scores ----------------------------------------------------------------------------------------
def default_method(model) -> str:
    """The score of a family: "elbo" (VAE, M2), "denoising" (diffusion), else "nll"."""
    name = getattr(model, "name", "")
    if name in ("vae", "m2"):
        return "elbo"
    if name == "diffusion":
        return "denoising"
    return "nll"


def _diffusion_denoising_error(model, x: torch.Tensor, timestep_fractions: Sequence[float],
                               num_samples: int) -> torch.Tensor:
    """(N,) mean over t in round(fraction * (T - 1)) and `num_samples` noise draws of
    mean_i (f(x_t, t) - target)_i^2, with a class-conditional model given the null class."""
    from genkernels.diffusion import diffusion_loss, q_sample

    config = model.config
    if config.conditioning not in ("none", "class"):
        raise ValueError(f"denoising scores need an unconditional or class-conditional diffusion model, "
                         f"got conditioning={config.conditioning!r}")
    x0, _ = model._split_batch(x.to(model.device).float())  # images -> [-1, 1]
    n = x0.shape[0]
    kwargs = {}
    if config.conditioning == "class":  # the null class: the unconditional model p(x)
        kwargs["labels"] = torch.full((n,), config.num_classes, device=x0.device, dtype=torch.long)
    errors = torch.zeros(n, device=x0.device)
    for fraction in timestep_fractions:
        t = torch.full((n,), int(round(fraction * (config.num_steps - 1))), device=x0.device, dtype=torch.long)
        for _ in range(num_samples):
            noise = torch.randn_like(x0)
            x_t, _ = q_sample(x0, noise, t, model.schedule, prediction=model.op_prediction)
            output = model.denoiser(x_t, t, **kwargs).to(x0.dtype)
            errors += diffusion_loss(output, x0, noise, t, model.schedule, prediction=model.op_prediction,
                                     reduction="none")
    return errors / (len(timestep_fractions) * num_samples)


@torch.no_grad()
def anomaly_scores(model, x: torch.Tensor, method: str | None = None, *, num_samples: int = 4,
                   batch_size: int = 256, seed: int = 0,
                   timestep_fractions: Sequence[float] = DEFAULT_TIMESTEP_FRACTIONS) -> torch.Tensor:
    """Anomaly scores (N,) float32 on the CPU for items x (N, ...), higher = more anomalous.

    method        "elbo", "iwae", "nll" or "denoising" (module docstring); None: the family's own
    num_samples   draws per score: of z (elbo; iwae's k), of the dequantisation (flows), of the
                  noise per timestep (denoising); ignored by exact likelihoods
    seed          every random draw comes from this seed; the global RNG is left as it was
    """
    from genkernels.models._validate import check_choice, check_int

    method = default_method(model) if method is None else check_choice("method", method, METHODS)
    num_samples = check_int("num_samples", num_samples, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise TypeError(f"x must be a tensor of items (N, ...), got "
                        f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    name = getattr(model, "name", type(model).__name__)
    if method in ("elbo", "iwae") and name not in ("vae", "m2") or method == "iwae" and name != "vae":
        raise ValueError(f"method {method!r} needs a VAE{' or M2' if method == 'elbo' else ''}, got {name}")
    if method == "denoising" and name != "diffusion":
        raise ValueError(f"method 'denoising' needs a diffusion model, got {name}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores = []
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for start in range(0, x.shape[0], batch_size):
                chunk = x[start:start + batch_size].to(device)
                if method == "elbo" and name == "vae":
                    score = -model.elbo(chunk, num_samples)
                elif method == "elbo":
                    score = model.unlabelled_loss(chunk)
                elif method == "iwae":
                    score = -model.iwae(chunk, num_samples)
                elif method == "denoising":
                    score = _diffusion_denoising_error(model, chunk, timestep_fractions, num_samples)
                elif getattr(model, "is_discrete", False):  # flows on levels: a dequantised bound
                    score = -torch.stack([model.log_prob(chunk) for _ in range(num_samples)]).mean(0)
                else:
                    score = -model.log_prob(chunk)
                scores.append(score.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(scores)


# -- the held-out-classes protocol -----------------------------------------------------------------
@dataclasses.dataclass
class AnomalySplit:
    """train_images   (N, 1, 8, 8) float in [0, 1]: the train-split digits of the normal classes
    test_images    (M, 1, 8, 8): the val + test digits of every class
    test_labels    (M,) their classes; is_anomaly (M,) bool: in a held-out class
    """

    normal_classes: tuple[int, ...]
    anomalous_classes: tuple[int, ...]
    train_images: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    is_anomaly: torch.Tensor


def held_out_classes_split(normal_classes: Sequence[int] | None = None, held_out: Sequence[int] | None = None, *,
                           num_normal: int = 5, seed: int = 0) -> AnomalySplit:
    """The digits split into normal and held-out (anomalous) classes.

    Give normal_classes or held_out (the other is the rest of 0..9); with neither, `num_normal`
    classes are drawn at random with `seed`.
    """
    from genkernels.data import load_digits_tensors

    everything = set(range(10))
    if normal_classes is not None and held_out is not None:
        raise ValueError("give normal_classes or held_out, not both")
    if normal_classes is None and held_out is None:
        order = torch.randperm(10, generator=torch.Generator().manual_seed(seed)).tolist()
        normal_classes = order[:num_normal]
    if normal_classes is None:
        normal = everything - {int(c) for c in held_out}
    else:
        normal = {int(c) for c in normal_classes}
    if not normal or not normal < everything:
        raise ValueError(f"the normal classes must be a non-empty proper subset of 0..9, got {sorted(normal)}")
    normal_t = torch.tensor(sorted(normal))
    train_images, train_labels = load_digits_tensors("train")
    held = [load_digits_tensors(split) for split in ("val", "test")]
    test_images, test_labels = torch.cat([h[0] for h in held]), torch.cat([h[1] for h in held])
    return AnomalySplit(tuple(sorted(normal)), tuple(sorted(everything - normal)),
                        train_images[torch.isin(train_labels, normal_t)], test_images, test_labels,
                        ~torch.isin(test_labels, normal_t))


# -- training --------------------------------------------------------------------------------------
def train_on_normal(model: nn.Module, images: torch.Tensor, steps: int, *, batch_size: int = 64,
                    lr: float | None = None, seed: int = 0, grad_clip: float = 5.0) -> nn.Module:
    """Train `model` on `images` (N, ...) with its own `loss`: AdamW (lr: the family's
    train_defaults["lr"], else 1e-3; no weight decay), cosine decay to 5% of lr, gradient clipping,
    random batches drawn with `seed`. Returns the model in eval mode."""
    from genkernels.models._validate import check_int

    steps = check_int("steps", steps, 0)
    lr = float(getattr(model, "train_defaults", {}).get("lr", 1e-3)) if lr is None else lr
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1))))
    model.train()
    for _ in range(steps):
        batch = images[torch.randint(0, len(images), (batch_size,), generator=generator)].to(device)
        loss = model.loss(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
    return model.eval()


def digits_families(size: str = "modest") -> dict[str, Callable[[], nn.Module]]:
    """Factories of untrained VAE, flow (RealNVP), PixelCNN and diffusion models for the 8x8 digits
    (unconditional: the models see the normal images alone). size "tiny" (tests, seconds) or
    "modest" (the example)."""
    from genkernels.models.diffusion import Diffusion, DiffusionConfig
    from genkernels.models.pixelcnn import PixelCNN, PixelCNNConfig
    from genkernels.models.realnvp import RealNVP, RealNVPConfig
    from genkernels.models.vae import VAE, VAEConfig

    if size not in ("tiny", "modest"):
        raise ValueError(f"size must be 'tiny' or 'modest', got {size!r}")
    tiny = size == "tiny"
    return {
        "vae": lambda: VAE(VAEConfig(latent_dim=8 if tiny else 16, hidden=32 if tiny else 256)),
        "realnvp": lambda: RealNVP(RealNVPConfig(hidden_channels=8, checkerboard_couplings=1, channel_couplings=1,
                                                 final_couplings=1) if tiny else RealNVPConfig(hidden_channels=32)),
        "pixelcnn": lambda: PixelCNN(PixelCNNConfig(channels=8, num_layers=2, head_channels=8) if tiny
                                     else PixelCNNConfig(channels=32, num_layers=5)),
        "diffusion": lambda: Diffusion(DiffusionConfig(base_channels=8 if tiny else 32, num_groups=4 if tiny else 8,
                                                       attention_resolutions=(4,))),
    }


# -- the table -------------------------------------------------------------------------------------
def anomaly_table(families: dict[str, nn.Module | Callable[[], nn.Module]], split: AnomalySplit | None = None, *,
                  train_steps: int = 0, batch_size: int = 64, methods: dict[str, str] | None = None,
                  num_samples: int = 4, seed: int = 0) -> list[dict]:
    """One row per family: {"family", "method", "roc_auc", "average_precision", "normal_score",
    "anomalous_score" (mean scores), "train_s", "score_s"}.

    families     name -> a model, or a zero-argument factory of one (called under torch.manual_seed(seed))
    split        the protocol (default held_out_classes_split(normal 0-4))
    train_steps  > 0: first train each model on split.train_images (`train_on_normal`, seed `seed`);
                 0: the models are used as given (already trained)
    methods      name -> score method (default: each family's own)
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    split = split if split is not None else held_out_classes_split(normal_classes=(0, 1, 2, 3, 4))
    labels = split.is_anomaly.numpy()
    rows = []
    for name, entry in families.items():
        if isinstance(entry, nn.Module):
            model = entry
        else:
            torch.manual_seed(seed)
            model = entry()
        start = time.perf_counter()
        if train_steps:
            train_on_normal(model, split.train_images, train_steps, batch_size=batch_size, seed=seed)
        trained = time.perf_counter()
        method = (methods or {}).get(name) or default_method(model)
        scores = anomaly_scores(model, split.test_images, method, num_samples=num_samples, seed=seed)
        if not torch.isfinite(scores).all():
            raise ValueError(f"{name}: anomaly scores are not all finite")
        rows.append({"family": name, "method": method,
                     "roc_auc": float(roc_auc_score(labels, scores.numpy())),
                     "average_precision": float(average_precision_score(labels, scores.numpy())),
                     "normal_score": float(scores[~split.is_anomaly].mean()),
                     "anomalous_score": float(scores[split.is_anomaly].mean()),
                     "train_s": trained - start, "score_s": time.perf_counter() - trained})
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows of `anomaly_table` as a fixed-width text table."""
    lines = [f"{'family':<12}{'score':<11}{'ROC AUC':>8}{'avg prec':>10}{'normal':>11}{'anomalous':>11}"
             f"{'train s':>9}{'score s':>9}"]
    for row in rows:
        lines.append(f"{row['family']:<12}{row['method']:<11}{row['roc_auc']:>8.3f}{row['average_precision']:>10.3f}"
                     f"{row['normal_score']:>11.4g}{row['anomalous_score']:>11.4g}{row['train_s']:>9.1f}"
                     f"{row['score_s']:>9.1f}")
    return "\n".join(lines)


__all__ = ["METHODS", "AnomalySplit", "anomaly_scores", "anomaly_table", "default_method", "digits_families",
           "format_table", "held_out_classes_split", "train_on_normal"]
