"""Denoising diffusion model (Ho et al. 2020) over images or vectors, with classifier-free guidance.

    x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps,   t ~ U{0..T-1},  eps ~ N(0, I)
    loss = w(t) * mean (f(x_t, t, c) - target)^2,   target = v | eps | x_0,   w = min-SNR-gamma

x_t and the target come from the fused op `q_sample`, the weighted loss from the fused
`diffusion_loss` (Hang et al. 2023 min-SNR weights); sampling runs the samplers of
genkernels.diffusion (DDPM, DDIM, DPM-Solver++(2M), Euler) over their fused step ops, with the
noise drawn inside the kernels from a seed. The denoiser f (the "backbone") is one of
genkernels.models.UNet (images), DiT (images) or MLPDenoiser (vectors, the 2D toys).

Conditioning (config.conditioning):
  none      unconditional
  class     a class label; during training it is replaced by the null class (index num_classes)
            with probability label_dropout, so one network is both p(x | y) and p(x), and
            sampling applies classifier-free guidance (Ho & Salimans 2022)
                f_guided = f(x, null) + w (f(x, y) - f(x, null))
            with the conditional and unconditional rows batched in ONE forward
  caption   a caption ("a handwritten seven", "7", "seven"; genkernels.data.captions) through a
            byte-level text encoder (genkernels.nn.ByteTextEncoder, trained jointly) and the UNet's
            cross-attention; the caption is dropped to "" with probability label_dropout
  superres  the low-resolution image (average-pooled by superres_factor, upsampled back) is
            concatenated to x_t at the input; sampling needs `low_res`

Data: images (C, H, W) float in [0, 1] are scaled to [-1, 1] for the network and back for the
samples; vectors (D,) are used as they are. Labels come from (image, label) items.
Units: `loss` is the min-SNR-weighted mean squared error of the prediction per element.
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
from genkernels.models.base import GenerativeModel

BACKBONES = ("unet", "dit", "mlp")
PREDICTIONS = ("v", "epsilon", "x0")
CONDITIONINGS = ("none", "class", "caption", "superres")
SAMPLER_NAMES = ("ddpm", "ddim", "dpm_solver", "euler", "euler_ancestral")
_OP_PREDICTION = {"v": "v", "epsilon": "epsilon", "x0": "sample"}  # the fused ops' names


@dataclasses.dataclass
class DiffusionConfig:
    """data_shape        (C, H, W) of images or (D,) of vectors; taken from the data by the CLI
    backbone          "unet" or "dit" (images), "mlp" (vectors)
    schedule          noise schedule name (genkernels.diffusion.SCHEDULES), num_steps T of it
    prediction        what the network predicts: "v", "epsilon" or "x0"
    min_snr_gamma     gamma of the min-SNR loss weights; 0: unweighted
    conditioning      "none", "class", "caption" or "superres" (see the module docstring)
    num_classes       classes of a class-conditional model (the null class is one more)
    label_dropout     probability of training a row with the null class / empty caption
    superres_factor   low-res side = high-res side / factor (superres)
    superres_upsample "bicubic" or "nearest": how the low-res image is brought back to full size
    UNet widths       base_channels, channel_mults, num_res_blocks, attention_resolutions,
                      num_heads, num_groups, dropout (genkernels.models.UNetConfig)
    DiT widths        patch_size, dim, depth, num_heads, mlp_ratio (genkernels.models.DiTConfig)
    MLP widths        hidden, depth (hidden layers), for vectors
    text_dim, text_depth, text_max_len
                      the caption encoder (genkernels.nn.ByteTextEncoder) and the context width
    sampler           default sampler: "dpm_solver", "ddim", "ddpm", "euler" or "euler_ancestral"
    sample_steps      default model evaluations per sample (ddpm always runs all T)
    guidance_scale    default classifier-free guidance scale w (1: none) of conditional models
    eval_samples      samples drawn by `evaluate` (at most; max_items lowers it)
    """

    data_shape: tuple[int, ...] = (1, 8, 8)
    backbone: str = "unet"
    schedule: str = "cosine"
    num_steps: int = 1000
    prediction: str = "v"
    min_snr_gamma: float = 5.0
    conditioning: str = "none"
    num_classes: int = 0
    label_dropout: float = 0.1
    superres_factor: int = 2
    superres_upsample: str = "bicubic"
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (4,)
    num_heads: int = 4
    num_groups: int = 8
    dropout: float = 0.0
    patch_size: int = 2
    dim: int = 128
    depth: int = 4
    mlp_ratio: float = 4.0
    hidden: int = 128
    text_dim: int = 64
    text_depth: int = 2
    text_max_len: int = 32
    sampler: str = "dpm_solver"
    sample_steps: int = 20
    guidance_scale: float = 3.0
    eval_samples: int = 200

    def __post_init__(self):
        self.data_shape = check_int_tuple("DiffusionConfig.data_shape", self.data_shape)
        if len(self.data_shape) not in (1, 3):
            raise ValueError(f"DiffusionConfig.data_shape must be (C, H, W) or (D,), got {self.data_shape}")
        self.backbone = check_choice("DiffusionConfig.backbone", self.backbone, BACKBONES)
        from genkernels.diffusion import SCHEDULES

        self.schedule = check_choice("DiffusionConfig.schedule", self.schedule, SCHEDULES)
        self.prediction = check_choice("DiffusionConfig.prediction", self.prediction, PREDICTIONS)
        self.conditioning = check_choice("DiffusionConfig.conditioning", self.conditioning, CONDITIONINGS)
        self.superres_upsample = check_choice("DiffusionConfig.superres_upsample", self.superres_upsample,
                                              ("bicubic", "nearest"))
        self.sampler = check_choice("DiffusionConfig.sampler", self.sampler, SAMPLER_NAMES)
        for name in ("num_steps", "superres_factor", "base_channels", "num_res_blocks", "num_heads", "num_groups",
                     "patch_size", "dim", "depth", "hidden", "text_dim", "text_depth", "text_max_len",
                     "sample_steps", "eval_samples"):
            setattr(self, name, check_int(f"DiffusionConfig.{name}", getattr(self, name), 1))
        self.num_classes = check_int("DiffusionConfig.num_classes", self.num_classes, 0)
        self.channel_mults = check_int_tuple("DiffusionConfig.channel_mults", self.channel_mults)
        self.attention_resolutions = tuple(self.attention_resolutions)
        if self.attention_resolutions:
            self.attention_resolutions = check_int_tuple("DiffusionConfig.attention_resolutions",
                                                         self.attention_resolutions)
        for name in ("min_snr_gamma", "label_dropout", "dropout", "mlp_ratio", "guidance_scale"):
            setattr(self, name, check_real(f"DiffusionConfig.{name}", getattr(self, name), 0.0))
        if self.label_dropout >= 1:
            raise ValueError(f"DiffusionConfig.label_dropout must be in [0, 1), got {self.label_dropout}")
        if self.sample_steps > self.num_steps:
            raise ValueError(f"DiffusionConfig.sample_steps ({self.sample_steps}) must be <= num_steps "
                             f"({self.num_steps})")
        images = len(self.data_shape) == 3
        if images and self.backbone == "mlp":
            raise ValueError(f"DiffusionConfig.backbone='mlp' is for vectors (D,), but data_shape is the image "
                             f"shape {self.data_shape}; use backbone='unet' or 'dit'")
        if not images and self.backbone != "mlp":
            raise ValueError(f"DiffusionConfig.backbone={self.backbone!r} is for images (C, H, W), but data_shape "
                             f"is {self.data_shape}; use backbone='mlp' for vectors")
        if self.conditioning == "class" and self.num_classes < 2:
            raise ValueError(f"DiffusionConfig.conditioning='class' needs num_classes >= 2, got {self.num_classes}")
        if self.conditioning != "class" and self.num_classes:
            raise ValueError(f"DiffusionConfig.num_classes={self.num_classes} needs conditioning='class', "
                             f"got conditioning={self.conditioning!r}")
        if self.conditioning in ("caption", "superres") and self.backbone == "mlp":
            raise ValueError(f"DiffusionConfig.conditioning={self.conditioning!r} needs an image backbone "
                             f"('unet' or 'dit'), got backbone='mlp'")
        if self.conditioning == "superres":
            _, h, w = self.data_shape
            if h % self.superres_factor or w % self.superres_factor:
                raise ValueError(f"DiffusionConfig.superres_factor ({self.superres_factor}) must divide the image "
                                 f"height and width {self.data_shape[1:]}")
        if images and self.data_shape[1] != self.data_shape[2]:
            raise ValueError(f"DiffusionConfig.data_shape: the UNet and DiT take square images, got "
                             f"{self.data_shape[1:]}")

    @property
    def images(self) -> bool:
        return len(self.data_shape) == 3

    @property
    def guided(self) -> bool:
        """Whether sampling applies classifier-free guidance (class or caption conditioning)."""
        return self.conditioning in ("class", "caption")


def _build_backbone(config: DiffusionConfig) -> nn.Module:
    """The denoiser network for the config: (x (N, *data_shape), t (N,), **conditioning) -> same shape."""
    if config.backbone == "mlp":
        from genkernels.models.mlp_denoiser import MLPDenoiser, MLPDenoiserConfig

        return MLPDenoiser(MLPDenoiserConfig(dim=config.data_shape[0], hidden=config.hidden, depth=config.depth,
                                             num_classes=config.num_classes))
    channels, size, _ = config.data_shape
    common = dict(in_channels=channels, image_size=size, num_heads=config.num_heads,
                  num_classes=config.num_classes,
                  context_dim=config.text_dim if config.conditioning == "caption" else 0,
                  cond_channels=channels if config.conditioning == "superres" else 0)
    if config.backbone == "unet":
        from genkernels.models.unet import UNet, UNetConfig

        return UNet(UNetConfig(base_channels=config.base_channels, channel_mults=config.channel_mults,
                               num_res_blocks=config.num_res_blocks,
                               attention_resolutions=config.attention_resolutions, dropout=config.dropout,
                               num_groups=config.num_groups, **common))
    from genkernels.models.dit import DiT, DiTConfig

    return DiT(DiTConfig(patch_size=config.patch_size, dim=config.dim, depth=config.depth,
                         mlp_ratio=config.mlp_ratio, **common))


class Diffusion(GenerativeModel):
    """A denoiser + a noise schedule; see the module docstring."""

    name = "diffusion"
    config_class = DiffusionConfig
    default_data = "digits"
    data_kinds = ("image", "points")
    metric_units = {"loss": "min-SNR-weighted MSE per element", "class_accuracy": "fraction of samples",
                    "frechet_distance": "classifier features, lower is better",
                    "class_accuracy_guidance1": "fraction of samples",
                    "frechet_distance_guidance1": "classifier features, lower is better",
                    "caption_accuracy": "fraction of samples", "mmd": "MMD^2, lower is better",
                    "psnr_db": "dB", "bicubic_psnr_db": "dB"}
    # AdamW at 2e-3 (100 warm-up steps, cosine to 2e-4), batch 64, no weight decay, the weight EMA for
    # sampling and evaluation. The default 8x8 digits UNet (base 32, 0.76 M parameters) reaches class
    # accuracy 1.0 at guidance 3 (0.92 unguided) after 300 such steps, and after 700 (2.6 min of CPU
    # time) 1.0 / 0.99 with Frechet distance 70 / 27 on the 447 test digits (real train vs test: 40).
    train_defaults = {"lr": 2e-3, "batch_size": 64, "steps": 1000, "weight_decay": 0.0, "ema_decay": 0.999,
                      "eval_every": 500}

    def __init__(self, config: DiffusionConfig | None = None):
        super().__init__(config if config is not None else DiffusionConfig())
        from genkernels.diffusion import make_schedule

        config = self.config
        self.schedule = make_schedule(config.schedule, config.num_steps)
        self.denoiser = _build_backbone(config)
        self.text_encoder = None
        if config.conditioning == "caption":
            from genkernels.nn import ByteTextEncoder

            self.text_encoder = ByteTextEncoder(dim=config.text_dim, depth=config.text_depth,
                                                num_heads=config.num_heads, max_len=config.text_max_len)
        self._figure_images: torch.Tensor | None = None  # held-out images in [0, 1] kept by evaluate()
        self._figure_labels: torch.Tensor | None = None

    # -- fitting to data ---------------------------------------------------------------------------
    @staticmethod
    def _first_item(dataset):
        if len(dataset) == 0:
            raise ValueError("the dataset is empty")
        item = dataset[0]
        return (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, None)

    @classmethod
    def config_for_data(cls, dataset, overrides: dict[str, Any] | None = None, *, data_name: str | None = None):
        """data_shape from the data; backbone "mlp" for vectors; on labelled data (the digits) class
        conditioning with the dataset's num_classes, unless the overrides say otherwise."""
        cls.check_data(dataset, data_name)
        values = dict(overrides or {})
        x, label = cls._first_item(dataset)
        values.setdefault("data_shape", tuple(int(s) for s in x.shape))
        if x.ndim == 1:
            values.setdefault("backbone", "mlp")
        else:  # self-attention at the UNet's lowest resolution, whatever the image size
            mults = values.get("channel_mults", DiffusionConfig.channel_mults)
            values.setdefault("attention_resolutions", (int(x.shape[-1]) // 2 ** (len(mults) - 1),))
        num_classes = getattr(dataset, "num_classes", None)
        if label is not None and num_classes and values.get("backbone", "unet") != "mlp":
            values.setdefault("conditioning", "class")
        if values.get("conditioning") == "class" and label is not None and num_classes:
            values.setdefault("num_classes", int(num_classes))
        return cls.config_class(**values)

    def check_dataset(self, dataset, data_name: str | None = None) -> None:
        self.check_data(dataset, data_name)
        x, label = self._first_item(dataset)
        name = f"data {str(data_name)!r}" if data_name is not None else "the data"
        if tuple(x.shape) != tuple(self.config.data_shape):
            raise ValueError(f"{name} has items of shape {tuple(x.shape)}, but this diffusion model was built for "
                             f"{tuple(self.config.data_shape)}")
        if self.config.conditioning in ("class", "caption") and label is None:
            raise ValueError(f"a {self.config.conditioning}-conditional diffusion model needs labelled (item, label) "
                             f"data, but {name} has no labels")

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def op_prediction(self) -> str:
        return _OP_PREDICTION[self.config.prediction]

    def _split_batch(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x0 in network scale: images in [-1, 1], vectors as is; labels or None)."""
        x, labels = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"batch items must be float tensors (N, *{self.config.data_shape}), got "
                            f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
        if tuple(x.shape[1:]) != tuple(self.config.data_shape):
            raise ValueError(f"batch items must have shape (N, *{self.config.data_shape}), got {tuple(x.shape)}")
        if self.config.guided and labels is None:
            raise ValueError(f"a {self.config.conditioning}-conditional diffusion model needs (items, labels) batches")
        return (x * 2 - 1 if self.config.images else x), (labels.long() if labels is not None else None)

    def _to_output(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.float() + 1) / 2).clamp(0, 1) if self.config.images else x.float()

    def _low_res_cond(self, low: torch.Tensor) -> torch.Tensor:
        """Low-res images in [-1, 1] (N, C, h, w) -> the network's cond (N, C, H, W)."""
        mode = self.config.superres_upsample
        up = F.interpolate(low.float(), scale_factor=self.config.superres_factor, mode=mode,
                           **({"align_corners": False} if mode == "bicubic" else {}))
        return up.clamp(-1, 1).to(low.dtype)

    def downsample(self, images: torch.Tensor) -> torch.Tensor:
        """High-res images (N, C, H, W) -> low-res (N, C, H / f, W / f) by average pooling (f = superres_factor)."""
        return F.avg_pool2d(images, self.config.superres_factor)

    def _encode_text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text_encoder.encode(captions, device=self.device)

    # -- training ---------------------------------------------------------------------------------
    def loss(self, batch) -> dict[str, torch.Tensor]:
        """{"loss": min-SNR-weighted MSE of the prediction per element, batch mean}."""
        from genkernels.diffusion import diffusion_loss, min_snr_weights, q_sample

        config = self.config
        x0, labels = self._split_batch(batch)
        n = x0.shape[0]
        t = torch.randint(0, config.num_steps, (n,), device=x0.device)
        noise = torch.randn_like(x0)
        x_t, _ = q_sample(x0, noise, t, self.schedule, prediction=self.op_prediction)
        drop = torch.rand(n, device=x0.device) < config.label_dropout  # (N,) rows trained unconditionally
        kwargs: dict[str, Any] = {}
        if config.conditioning == "class":
            kwargs["labels"] = torch.where(drop, torch.full_like(labels, config.num_classes), labels)
        elif config.conditioning == "caption":
            from genkernels.data.captions import digit_captions

            captions = digit_captions(labels.cpu())
            captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
            kwargs["context"], kwargs["context_mask"] = self._encode_text(captions)
        elif config.conditioning == "superres":
            kwargs["cond"] = self._low_res_cond(self.downsample(x0))
        output = self.denoiser(x_t, t, **kwargs).to(x0.dtype)  # autocast gives bf16/fp16; the loss is fp32
        weights = (min_snr_weights(self.schedule, t, gamma=config.min_snr_gamma, prediction=self.op_prediction)
                   if config.min_snr_gamma > 0 else None)
        loss = diffusion_loss(output, x0, noise, t, self.schedule, prediction=self.op_prediction, weights=weights)
        return {"loss": loss}

    # -- the denoiser as a sampler callable -------------------------------------------------------
    def _labels(self, labels, n: int) -> torch.Tensor:
        """(n,) int64 class labels: None -> 0, 1, ..., 9, 0, ... cycling; an int -> that class for all;
        a shorter sequence is cycled to n."""
        k = self.config.num_classes
        if labels is None:
            return torch.arange(n, device=self.device) % k
        try:
            values = torch.as_tensor(labels, device=self.device)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"labels must be class indices (an int or a sequence/tensor of ints), got "
                            f"{labels!r:.60}") from error
        if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
            raise TypeError(f"labels must be integer class indices, got dtype {values.dtype}")
        values = values.long().reshape(-1)
        if values.numel() == 0 or values.numel() > n:
            raise ValueError(f"labels must have 1 to n={n} entries (cycled to n), got {values.numel()}")
        if values.min() < 0 or values.max() >= k:
            raise ValueError(f"labels must be in [0, {k}), got [{values.min().item()}, {values.max().item()}]")
        return values.repeat(-(-n // values.numel()))[:n]

    def _captions(self, caption, n: int) -> list[str]:
        if caption is None:
            from genkernels.data.captions import DIGIT_WORDS

            return [f"a handwritten {DIGIT_WORDS[i % 10]}" for i in range(n)]
        if isinstance(caption, str):
            return [caption] * n
        if not isinstance(caption, (list, tuple)) or not all(isinstance(c, str) for c in caption):
            raise TypeError(f"caption must be a str or a list of str, got {caption!r:.60}")
        if not 1 <= len(caption) <= n:
            raise ValueError(f"caption must have 1 to n={n} entries (cycled to n), got {len(caption)}")
        return [caption[i % len(caption)] for i in range(n)]

    def _low_res(self, low_res, n: int) -> torch.Tensor:
        """Low-res images in [-1, 1] (n, C, h, w) from a tensor in [0, 1], a dataset name (its test
        split, downsampled), or None (the held-out images kept by the last evaluate)."""
        c, h, w = self.config.data_shape
        f = self.config.superres_factor
        if isinstance(low_res, str):
            from genkernels.data import get_dataset

            dataset = get_dataset(low_res, "test")
            items = [dataset[i % len(dataset)] for i in range(n)]
            high = torch.stack([i[0] if isinstance(i, (tuple, list)) else i for i in items]).float()
            low_res = self.downsample(high)
        elif low_res is None:
            if self._figure_images is None:
                raise ValueError("a superres diffusion model samples from low-resolution images: pass low_res "
                                 f"(n, {c}, {h // f}, {w // f}) in [0, 1], or a dataset name such as 'digits'")
            kept = self._figure_images
            low_res = self.downsample(kept[torch.arange(n) % kept.shape[0]].float())
        if not isinstance(low_res, torch.Tensor):
            raise TypeError(f"low_res must be a tensor (n, {c}, {h // f}, {w // f}) in [0, 1] or a dataset name, "
                            f"got {type(low_res).__name__}")
        if low_res.ndim != 4 or tuple(low_res.shape[1:]) != (c, h // f, w // f):
            raise ValueError(f"low_res must have shape (n, {c}, {h // f}, {w // f}), got {tuple(low_res.shape)}")
        if low_res.shape[0] != n:
            raise ValueError(f"low_res must hold one image per sample: n={n}, got {low_res.shape[0]}")
        return low_res.float().to(self.device) * 2 - 1

    def _conditioning(self, n: int, labels=None, caption=None, low_res=None) -> tuple[dict, dict | None]:
        """(kwargs of the conditional forward, kwargs of the unconditional one or None) for n rows."""
        config = self.config
        given = {"labels": labels, "caption": caption, "low_res": low_res}
        allowed = {"none": (), "class": ("labels",), "caption": ("caption",), "superres": ("low_res",)}
        takes = allowed[config.conditioning]
        for key, value in given.items():
            if value is not None and key not in takes:
                raise ValueError(f"{key} was given, but this diffusion model's conditioning is "
                                 f"{config.conditioning!r} (it takes {', '.join(takes) or 'none'})")
        if config.conditioning == "class":
            cond = self._labels(labels, n)
            return {"labels": cond}, {"labels": torch.full_like(cond, config.num_classes)}
        if config.conditioning == "caption":
            context, mask = self._encode_text(self._captions(caption, n) + [""] * n)  # one L for both halves
            return ({"context": context[:n], "context_mask": mask[:n]},
                    {"context": context[n:], "context_mask": mask[n:]})
        if config.conditioning == "superres":
            return {"cond": self._low_res_cond(self._low_res(low_res, n))}, None
        return {}, None

    def _model_fn(self, cond: dict, uncond: dict | None, guidance_scale: float | None):
        """The callable (x, t) -> output the samplers take. With guidance it returns the pair
        (conditional, unconditional) from ONE batched forward of 2N rows."""
        denoiser = self.denoiser

        if guidance_scale is None:
            def model(x, t):
                return denoiser(x, t, **cond)
            return model
        both = {key: torch.cat([cond[key], uncond[key]]) for key in cond}

        def guided(x, t):
            out = denoiser(torch.cat([x, x]), torch.cat([t, t]), **both)
            return out.chunk(2)  # (cond, uncond)
        return guided

    def _guidance(self, guidance_scale) -> float | None:
        """The guidance scale to apply, or None (unguided models; scale 1 is no guidance either)."""
        if not self.config.guided:
            if guidance_scale is not None and guidance_scale != 1:
                raise ValueError(f"guidance_scale={guidance_scale!r} needs a class- or caption-conditional model, "
                                 f"but conditioning is {self.config.conditioning!r}")
            return None
        scale = self.config.guidance_scale if guidance_scale is None else check_real("guidance_scale",
                                                                                    guidance_scale)
        return None if scale == 1 else scale

    def _run_sampler(self, model, shape, *, sampler: str, steps: int, seed: int, eta: float = 0.0,
                     guidance_scale=None, x_T=None, callback=None) -> torch.Tensor:
        """genkernels.diffusion.SAMPLERS[sampler] over `model` (ddpm runs all T steps)."""
        from genkernels.diffusion.sampling import SAMPLERS

        kwargs = dict(prediction=self.op_prediction, seed=seed, device=self.device, guidance_scale=guidance_scale,
                      x_T=x_T, callback=callback)
        if sampler != "ddpm":
            kwargs["num_inference_steps"] = steps
        if sampler == "ddim":
            kwargs["eta"] = eta
        return SAMPLERS[sampler](model, shape, self.schedule, **kwargs)

    def _ddim_loop(self, model, shape, *, steps: int, eta: float, seed: int, guidance_scale=None,
                   callback=None, resample: int = 1) -> torch.Tensor:
        """Strided DDIM over the fused ddim_step (eta = 1 with all T steps is DDPM), with RePaint
        resampling: each step is repeated `resample` times, jumping back t_prev -> t with fresh
        forward noise between repeats. callback(x, t_prev) after every step may replace x."""
        from genkernels.diffusion import ddim_step, ddim_timesteps, philox_normal

        T = self.schedule.num_steps
        x = philox_normal(shape, seed, T, device=self.device)  # x_T, as the samplers draw it
        timesteps = ddim_timesteps(T, steps)
        alpha_bar = self.schedule.alphas_cumprod
        offset = T + 1
        for t, t_prev in zip(timesteps, timesteps[1:] + [-1]):
            t_vec = torch.full((shape[0],), t, dtype=torch.int64, device=self.device)
            for r in range(resample):
                out = model(x, t_vec)
                cond, uncond = out if guidance_scale is not None else (out, None)
                x = ddim_step(cond, x, t_vec, t_prev, self.schedule, eta=eta, prediction=self.op_prediction,
                              seed=seed, offset=offset, guidance_scale=guidance_scale, model_output_uncond=uncond)
                offset += 1
                if callback is not None:
                    replaced = callback(x, t_prev)
                    x = x if replaced is None else replaced
                if r < resample - 1 and t_prev >= 0:  # RePaint: back to t with forward noise
                    ratio = float(alpha_bar[t] / alpha_bar[t_prev])
                    noise = philox_normal(shape, seed + 2, offset, device=self.device)
                    x = math.sqrt(ratio) * x + math.sqrt(1 - ratio) * noise
                    offset += 1
        return x

    def _shape(self, n: int) -> tuple[int, ...]:
        return (n, *self.config.data_shape)

    @staticmethod
    def _seed(seed) -> int:
        if seed is None:
            return int(torch.randint(0, 2**62, ()).item())  # from the global RNG: `genkernels sample --seed`
        return check_int("seed", seed, 0)

    def _steps_and_sampler(self, steps, sampler) -> tuple[int, str]:
        sampler = self.config.sampler if sampler is None else check_choice("sampler", sampler, SAMPLER_NAMES)
        steps = self.config.sample_steps if steps is None else check_int("steps", steps, 1)
        if steps > self.config.num_steps:
            raise ValueError(f"steps must be <= num_steps ({self.config.num_steps}), got {steps}")
        return steps, sampler

    # -- generation -------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, sampler: str | None = None, guidance_scale: float | None = None,
               labels=None, caption=None, low_res=None, seed: int | None = None, eta: float = 0.0) -> torch.Tensor:
        """n samples: images (n, C, H, W) float32 in [0, 1], or vectors (n, D).

        steps           model evaluations (default config.sample_steps; "ddpm" always runs all T)
        sampler         "dpm_solver" (default config.sampler), "ddim", "ddpm", "euler", "euler_ancestral"
        guidance_scale  classifier-free guidance w (default config.guidance_scale; 1: none), class- and
                        caption-conditional models; the two passes run as one batched forward
        labels          class models: an int (all samples), or a sequence cycled to n (default 0..9 cycling)
        caption         caption models: a str (all samples) or a list cycled to n (default "a handwritten
                        zero", "... one", ... cycling)
        low_res         superres models: (n, C, H / f, W / f) in [0, 1], or a dataset name (its test split
                        downsampled); default: the held-out images kept by the last `evaluate`
        seed            seeds the Philox noise (same seed, same samples); None draws it from torch's RNG
        eta             DDIM's eta in [0, 1] (sampler "ddim" only)
        """
        check_int("n", n, 1)
        steps, sampler = self._steps_and_sampler(steps, sampler)
        seed = self._seed(seed)
        guidance = self._guidance(guidance_scale)
        cond, uncond = self._conditioning(n, labels, caption, low_res)
        model = self._model_fn(cond, uncond, guidance)
        x = self._run_sampler(model, self._shape(n), sampler=sampler, steps=steps, seed=seed, eta=eta,
                              guidance_scale=guidance)
        return self._to_output(x)

    @torch.no_grad()
    def inpaint(self, x: torch.Tensor, mask: torch.Tensor, *, steps: int | None = None, sampler: str = "ddim",
                resample: int = 1, seed: int | None = 0, labels=None, guidance_scale: float | None = None,
                eta: float = 0.0) -> torch.Tensor:
        """Fill in the unknown part of x: images (N, C, H, W) in [0, 1] (vectors (N, D) as is).

        mask: bool, broadcastable to x, True = known. After every step the known part is replaced
        by the input re-noised to the step just reached (q_sample, fresh Philox noise), through the
        sampler's callback; resample > 1 repeats each step that many times, going back one step
        with forward noise in between (RePaint, Lugmayr et al. 2022; DDIM/DDPM loop). The known
        part of the result equals x exactly. Class models take labels/guidance_scale as `sample`
        (default: unconditional, the null class); caption models inpaint unconditionally.
        """
        from genkernels.diffusion import philox_normal, q_sample

        if self.config.conditioning == "superres":
            raise ValueError("inpaint is not available for superres diffusion models (they need low_res)")
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a float tensor (N, *{self.config.data_shape}), got "
                            f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
        if x.ndim != len(self.config.data_shape) + 1 or tuple(x.shape[1:]) != tuple(self.config.data_shape):
            raise ValueError(f"x must have shape (N, *{self.config.data_shape}), got {tuple(x.shape)}")
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = known), got "
                            f"{mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__}")
        try:
            mask = torch.broadcast_to(mask.to(self.device), x.shape)
        except RuntimeError:
            raise ValueError(f"mask must broadcast to x's shape {tuple(x.shape)}, got {tuple(mask.shape)}") from None
        resample = check_int("resample", resample, 1)
        steps, sampler = self._steps_and_sampler(steps, sampler)
        seed = self._seed(seed)
        n = x.shape[0]
        original = x.to(self.device)
        x0 = (original.float() * 2 - 1) if self.config.images else original.float()
        if self.config.conditioning == "class" and labels is None:
            cond, uncond = {"labels": torch.full((n,), self.config.num_classes, device=self.device)}, None
            guidance = None
        elif self.config.conditioning == "caption":
            cond, uncond = self._conditioning(n, caption=[""])
            uncond, guidance = None, None
        else:
            guidance = self._guidance(guidance_scale)
            cond, uncond = self._conditioning(n, labels)
        model = self._model_fn(cond, uncond, guidance)
        T = self.config.num_steps

        def keep_known(x_now, t_next):
            t_next = int(t_next)
            if t_next < 0:
                known = x0
            else:
                noise = philox_normal(x0.shape, seed + 1, T + 1 + 2 * t_next, device=self.device)
                known, _ = q_sample(x0, noise, t_next, self.schedule)
            return torch.where(mask, known.to(x_now.dtype), x_now)

        if resample == 1:
            out = self._run_sampler(model, self._shape(n), sampler=sampler, steps=steps, seed=seed, eta=eta,
                                    guidance_scale=guidance, callback=keep_known)
        else:
            if sampler not in ("ddim", "ddpm"):
                raise ValueError(f"inpaint with resample > 1 runs a DDIM/DDPM loop: sampler must be 'ddim' or "
                                 f"'ddpm', got {sampler!r}")
            out = self._ddim_loop(model, self._shape(n), steps=steps if sampler == "ddim" else T,
                                  eta=eta if sampler == "ddim" else 1.0, seed=seed, guidance_scale=guidance,
                                  callback=keep_known, resample=resample)
        return torch.where(mask, original.float(), self._to_output(out))

    def _unconditional_fn(self, n: int, labels=None):
        """(model, guidance) for encode/decode: class models with labels (default the null class)."""
        if self.config.conditioning == "class":
            cond = ({"labels": self._labels(labels, n)} if labels is not None
                    else {"labels": torch.full((n,), self.config.num_classes, device=self.device)})
            return self._model_fn(cond, None, None)
        if self.config.conditioning == "caption":
            cond, _ = self._conditioning(n, caption=[""])
            return self._model_fn(cond, None, None)
        if self.config.conditioning == "superres":
            raise ValueError("encode/decode are not available for superres diffusion models")
        if labels is not None:
            raise ValueError("labels were given, but this diffusion model is not class-conditional")
        return self._model_fn({}, None, None)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, steps: int = 50, labels=None) -> torch.Tensor:
        """Deterministic latents x_T (N, *data_shape) of data x (images in [0, 1]) by DDIM inversion
        (eta = 0) over `steps` model calls; `decode` maps them back. Class models encode with labels
        (default: the null class, i.e. unconditionally)."""
        from genkernels.diffusion import sampling

        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != tuple(self.config.data_shape):
            raise ValueError(f"x must be a tensor (N, *{self.config.data_shape}), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        steps = check_int("steps", steps, 1)
        x0 = x.to(self.device).float()
        x0 = x0 * 2 - 1 if self.config.images else x0
        model = self._unconditional_fn(x.shape[0], labels)
        return sampling.ddim_invert(model, x0, self.schedule, num_inference_steps=steps,
                                    prediction=self.op_prediction)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, steps: int = 50, labels=None) -> torch.Tensor:
        """Data from latents z (N, *data_shape) by deterministic DDIM (eta = 0) over `steps` model
        calls: images in [0, 1] (vectors as is). decode(encode(x)) reconstructs x."""
        if not isinstance(z, torch.Tensor) or tuple(z.shape[1:]) != tuple(self.config.data_shape):
            raise ValueError(f"z must be a tensor (N, *{self.config.data_shape}), got "
                             f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
        steps = check_int("steps", steps, 1)
        model = self._unconditional_fn(z.shape[0], labels)
        x = self._run_sampler(model, tuple(z.shape), sampler="ddim", steps=steps, seed=0, eta=0.0,
                              x_T=z.to(self.device).float())
        return self._to_output(x)

    # -- evaluation and figures -------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, dataset, *, max_items: int | None = None) -> dict[str, float]:
        """Sample-quality metrics on held-out data, from min(len, max_items, config.eval_samples) samples
        (seed 0, the default sampler, steps and guidance):

        vectors (the 2D toys)   "mmd": MMD^2 of samples to the held-out points (genkernels.metrics.mmd)
        8x8 digits, class       "class_accuracy" (the digits classifier on samples drawn for the held-out
                                labels) and "frechet_distance" (classifier features vs the held-out
                                images), at the default guidance and again at guidance 1 ("..._guidance1")
        8x8 digits, caption     "caption_accuracy" of samples drawn from generated captions of the held-out
                                labels (class = caption_label(caption)), and "frechet_distance"
        8x8 digits, none        "frechet_distance"
        superres                "psnr_db" of samples vs the held-out high-res images, beside
                                "bicubic_psnr_db" of bicubic upsampling
        Other images get no metrics (the classifier knows the 8x8 digits only). Keeps 16 held-out
        images for `figures`.
        """
        from genkernels.metrics import class_accuracy, frechet_distance, mmd

        config = self.config
        count = min(evaluation_count(dataset, max_items, 1), config.eval_samples)
        if count < 2:
            raise ValueError(f"evaluate needs >= 2 items, got {count}")
        items = [dataset[i] for i in range(count)]
        real = torch.stack([i[0] if isinstance(i, (tuple, list)) else i for i in items]).float()
        labels = (torch.stack([torch.as_tensor(i[1]) for i in items]).long()
                  if isinstance(items[0], (tuple, list)) else None)
        if not config.images:
            return {"mmd": mmd(self.sample(count, seed=0).cpu(), real)}
        self._figure_images, self._figure_labels = real[:16].clone(), None if labels is None else labels[:16]
        if config.conditioning == "superres":
            from genkernels.metrics.image_quality import bicubic_upsample, psnr

            low = self.downsample(real)
            samples = self.sample(count, low_res=low, seed=0).cpu()
            return {"psnr_db": psnr(samples, real),
                    "bicubic_psnr_db": psnr(bicubic_upsample(low, config.superres_factor), real)}
        if tuple(config.data_shape) != (1, 8, 8):
            return {}
        if config.conditioning == "class":
            metrics = {}
            for suffix, scale in (("", None), ("_guidance1", 1.0)):
                samples = self.sample(count, labels=labels, guidance_scale=scale, seed=0).cpu()
                metrics[f"class_accuracy{suffix}"] = class_accuracy(samples, labels)
                metrics[f"frechet_distance{suffix}"] = frechet_distance(samples, real)
            return metrics
        if config.conditioning == "caption":
            from genkernels.data.captions import caption_label, digit_captions

            captions = digit_captions(labels, torch.Generator().manual_seed(0))
            samples = self.sample(count, caption=captions, seed=0).cpu()
            targets = torch.tensor([caption_label(c) for c in captions])
            return {"caption_accuracy": class_accuracy(samples, targets),
                    "frechet_distance": frechet_distance(samples, real)}
        return {"frechet_distance": frechet_distance(self.sample(count, seed=0).cpu(), real)}

    @torch.no_grad()
    def figures(self, samples: torch.Tensor, *, nrow: int | None = None) -> dict[str, Any]:
        """Images: {"samples": grid}; class/caption models also "guidance_1", "guidance_3",
        "guidance_5" (row k: 8 samples of class k, or of the caption "a handwritten <k>"); superres
        "superres" (rows: low-res, bicubic, sample, original); others "inpainting" (rows: given (top
        half; bottom blanked), inpainted (class models: guided by the held-out labels), original).
        The inputs are the held-out images kept by the last `evaluate`, else the samples.
        2D vectors: {"samples": scatter of the samples, "samples_2000": of 2000 more (seed 0)}."""
        from genkernels.figures import image_grid

        config = self.config
        if not config.images:
            if samples.ndim != 2 or samples.shape[1] != 2:
                return {}
            return {"samples": _scatter(samples), "samples_2000": _scatter(self.sample(2000, seed=0))}
        figures = {"samples": image_grid(samples.float().cpu().clamp(0, 1), nrow or 8)}
        columns = 8
        if config.guided:
            k = config.num_classes if config.conditioning == "class" else 10
            rows = torch.arange(k).repeat_interleave(columns)
            for scale in (1, 3, 5):
                if config.conditioning == "class":
                    grid = self.sample(k * columns, labels=rows, guidance_scale=float(scale), seed=0)
                    names = [f"class {c}" for c in range(k)]
                else:
                    captions = [f"a handwritten {_word(int(c))}" for c in rows]
                    grid = self.sample(k * columns, caption=captions, guidance_scale=float(scale), seed=0)
                    names = [_word(c) for c in range(k)]
                figures[f"guidance_{scale}"] = image_grid(grid.cpu(), columns, row_labels=names)
        inputs = self._figure_images if self._figure_images is not None else samples[:16].float().cpu()
        inputs = inputs[: inputs.shape[0] // columns * columns] if inputs.shape[0] >= columns else inputs
        shape = inputs.shape[1:]
        width = min(columns, inputs.shape[0])
        if config.conditioning == "superres":
            from genkernels.metrics.image_quality import bicubic_upsample

            low = self.downsample(inputs)
            up = self.sample(inputs.shape[0], low_res=low, seed=0).cpu()
            nearest = F.interpolate(low, scale_factor=config.superres_factor, mode="nearest")
            stacked = [nearest, bicubic_upsample(low, config.superres_factor), up, inputs]
            names = ["low-res", "bicubic", "sample", "original"]
        else:
            mask = torch.zeros(1, 1, *shape[1:], dtype=torch.bool)
            mask[:, :, : shape[1] // 2] = True  # the top half is known
            labels = self._figure_labels if self._figure_images is not None else None
            labels = labels[: inputs.shape[0]] if config.conditioning == "class" and labels is not None else None
            filled = self.inpaint(inputs, mask, seed=0, steps=min(50, config.num_steps), labels=labels).cpu()
            given = torch.where(mask, inputs, torch.full_like(inputs, 0.5))
            stacked, names = [given, filled, inputs], ["given", "inpainted", "original"]
        rows = torch.stack([t.reshape(-1, width, *shape) for t in stacked], 1)  # (R, len(stacked), width, ...)
        figures["superres" if config.conditioning == "superres" else "inpainting"] = image_grid(
            rows.reshape(-1, *shape).clamp(0, 1), width, row_labels=names * rows.shape[0])
        return figures


def _word(digit: int) -> str:
    from genkernels.data.captions import DIGIT_WORDS

    return DIGIT_WORDS[digit % 10]


def _scatter(points: torch.Tensor):
    """A matplotlib scatter plot of 2D points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4, 4), dpi=100)
    p = points.detach().float().cpu()
    axis.scatter(p[:, 0], p[:, 1], s=2, alpha=0.5)
    axis.set_aspect("equal")
    axis.set_title(f"{p.shape[0]} samples")
    figure.tight_layout()
    return figure


__all__ = ["Diffusion", "DiffusionConfig", "BACKBONES", "PREDICTIONS", "CONDITIONINGS", "SAMPLER_NAMES"]
