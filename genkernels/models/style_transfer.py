"""Neural style transfer: Gatys et al.'s optimisation (2016) and Johnson et al.'s fast feed-forward
network (2016), over the Gram-matrix style loss (genkernels.ops.gram_style_loss).

The objective, over the layers l of a feature extractor phi (genkernels.nn.style):

    content  = sum_{l in content_layers} mean (phi_l(x) - phi_l(c))^2 / mean phi_l(c)^2
    style    = sum_{l in style_layers}  mean (G(phi_l(x)) - G(phi_l(s)))^2 / mean G(phi_l(s))^2 / L
    tv       = mean |x_{i+1,j} - x_{i,j}| + mean |x_{i,j+1} - x_{i,j}|
    loss     = content_weight content + style_weight style + tv_weight tv

(x the image, c the content image, s the style image, G(F) = F F^T / (C H W)). Each term is divided
by its target's mean square, so the weights mean the same for any extractor (random filters or a
pretrained VGG, whose activations differ in scale by orders of magnitude).

  stylize(content, style, steps=..., size=...)   optimise the pixels of x from c (L-BFGS or Adam),
                                                 returns the image and the loss history
  StyleTransfer (registry "style")               the fast network: a TransformerNet trained on a
                                                 folder of content photos for one style image
                                                 (`genkernels train style --data FOLDER
                                                 --set style_image=STYLE.jpg`); sample() / stylize_batch()
                                                 apply it. StyleTransfer.stylize runs Gatys with its extractor.

Images are float tensors in [0, 1], (3, H, W) or (N, 3, H, W); image files are read with Pillow.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from genkernels.models.base import ImageGenerativeModel
from genkernels.nn.style import RandomFeatureExtractor, TransformerNet
from genkernels.ops.gram_style_loss import gram_matrix, gram_style_loss

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
CONTENT_LAYERS = ("relu3_1",)
_TINY = 1e-12  # keeps a term's normaliser positive when its target is all zeros


# ---- images ------------------------------------------------------------------------------------
def load_image(source, size: int | None = None, *, name: str = "image") -> torch.Tensor:
    """An image as (1, 3, H, W) float32 in [0, 1].

    source  a path (str / PathLike) Pillow can read, a PIL image, or a tensor (3, H, W) / (1, 3, H, W)
    size    resize (bicubic) so the longer side is `size`, keeping the aspect ratio; None: as is
    name    the argument's name in error messages
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ValueError(f"{name}: no image file at {str(path)!r}")
        try:
            with Image.open(path) as opened:
                source = opened.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise ValueError(f"{name}: cannot read {str(path)!r} as an image ({error})") from None
    if isinstance(source, Image.Image):
        import numpy as np

        pixels = np.asarray(source.convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
        image = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None]  # (1, 3, H, W)
    elif isinstance(source, torch.Tensor):
        image = source[None] if source.dim() == 3 else source
        if image.dim() != 4 or image.shape[:2] != (1, 3) or not image.is_floating_point():
            raise ValueError(f"{name}: a tensor image must be floating (3, H, W) or (1, 3, H, W) in [0, 1], "
                             f"got {source.dtype} {tuple(source.shape)}")
        image = image.detach().float()
    else:
        raise TypeError(f"{name}: expected a path, a PIL image or a tensor, got {type(source).__name__}")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 8:
            raise ValueError(f"size must be an int >= 8, got {size!r}")
        h, w = image.shape[-2:]
        scale = size / max(h, w)
        shape = (max(1, round(h * scale)), max(1, round(w * scale)))
        if shape != (h, w):
            image = F.interpolate(image, size=shape, mode="bicubic", align_corners=False, antialias=True)
    return image.clamp(0, 1).contiguous()


def save_image(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write a (3, H, W) or (1, 3, H, W) image in [0, 1] as an 8-bit PNG/JPEG (by extension)."""
    from PIL import Image

    pixels = image.detach().float().cpu().reshape(-1, *image.shape[-3:])[0].clamp(0, 1)
    array = (pixels.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def sample_photos(size: int | None = None) -> dict[str, torch.Tensor]:
    """scikit-learn's two bundled photographs (no download), {"china": temple, "flower": flower},
    each (1, 3, H, W) in [0, 1] (427 x 640, or the longer side resized to `size`)."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    return {Path(name).stem: load_image(torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255.0, size)
            for name, pixels in zip(photos.filenames, photos.images)}


# ---- the objective ------------------------------------------------------------------------------
def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of vertically and of horizontally adjacent pixels (anisotropic TV), 0-d."""
    return ((images[..., 1:, :] - images[..., :-1, :]).abs().mean()
            + (images[..., :, 1:] - images[..., :, :-1]).abs().mean())


def style_targets(extractor: nn.Module, style: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """The style image's Gram matrix at each layer, {layer: (C_l, C_l)} (float32, no grad)."""
    with torch.no_grad():
        features = extractor(style)
        missing = [layer for layer in layers if layer not in features]
        if missing:
            raise ValueError(f"layers {missing} are not among the extractor's outputs {list(features)}")
        return {layer: gram_matrix(features[layer]).mean(0).float() for layer in layers}


def style_term(features: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over layers of the Gram loss relative to the target's mean square (0-d)."""
    terms = [gram_style_loss(features[layer], target) / target.square().mean().clamp_min(_TINY)
             for layer, target in targets.items()]
    return torch.stack(terms).sum() / len(terms)


def content_term(features: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over layers of the features' MSE relative to the target's mean square (0-d)."""
    return sum(F.mse_loss(features[layer].float(), target.float()) / target.float().square().mean().clamp_min(_TINY)
               for layer, target in targets.items())


@dataclasses.dataclass
class StylizeResult:
    """image (3, H, W) float32 in [0, 1] on the CPU; history: one dict per step and one after the
    last, {"step", "loss", "content", "style", "tv"} (the unweighted terms and the weighted total)."""

    image: torch.Tensor
    history: list[dict[str, float]]


def stylize(content, style, *, steps: int = 100, size: int | None = 256, extractor: nn.Module | None = None,
            content_weight: float = 1.0, style_weight: float = 10.0, tv_weight: float = 0.05,
            style_layers: Sequence[str] = STYLE_LAYERS, content_layers: Sequence[str] = CONTENT_LAYERS,
            optimizer: str = "adam", lr: float | None = None, init: str = "content", seed: int = 0,
            device: str | torch.device | None = None, progress: bool = False) -> StylizeResult:
    """Gatys et al.'s style transfer: optimise the pixels of an image (clamped to [0, 1]) to match
    the content image's features and the style image's Gram matrices (the module docstring's loss).

    content, style  paths, PIL images or tensors (3, H, W) / (1, 3, H, W) in [0, 1]
    steps           optimiser steps (one loss and gradient evaluation each)
    size            longer side of the result (and of the style image); None: the content's size
    extractor       feature extractor (images -> {layer: features}); default RandomFeatureExtractor()
    optimizer       "adam" (lr 0.02) or "lbfgs" (lr 1, strong-Wolfe line search: several loss
                    evaluations per step); lr overrides
    init            "content" (start from the content image) or "noise" (uniform noise, seeded)
    progress        show a tqdm progress bar on stderr
    Returns a StylizeResult (image, loss history).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if optimizer not in ("lbfgs", "adam"):
        raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")
    if init not in ("content", "noise"):
        raise ValueError(f"init must be 'content' or 'noise', got {init!r}")
    for key, value in (("content_weight", content_weight), ("style_weight", style_weight), ("tv_weight", tv_weight)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{key} must be a float >= 0, got {value!r}")
    content_image = load_image(content, size, name="content")
    style_image = load_image(style, size, name="style")
    device = torch.device(device) if device is not None else torch.device("cpu")
    if extractor is None:
        extractor = RandomFeatureExtractor(layers=sorted(set(style_layers) | set(content_layers)))
    extractor = extractor.to(device)
    content_image, style_image = content_image.to(device), style_image.to(device)
    style_grams = style_targets(extractor, style_image, style_layers)
    with torch.no_grad():
        content_features = {layer: extractor(content_image)[layer] for layer in content_layers}

    if init == "content":
        start = content_image.clone()
    else:
        start = torch.rand(content_image.shape, generator=torch.Generator().manual_seed(seed)).to(device)
    image = start.requires_grad_(True)  # (1, 3, H, W)
    if optimizer == "lbfgs":
        # without a line search L-BFGS's unit steps in pixel space diverge (tried: the loss grows)
        opt = torch.optim.LBFGS([image], lr=lr or 1.0, max_iter=1, history_size=20, line_search_fn="strong_wolfe")
    else:
        opt = torch.optim.Adam([image], lr=lr or 0.02)

    def evaluate():
        features = extractor(image)
        terms = {"content": content_term(features, content_features), "style": style_term(features, style_grams),
                 "tv": total_variation(image)}
        loss = content_weight * terms["content"] + style_weight * terms["style"] + tv_weight * terms["tv"]
        return loss, terms

    history: list[dict[str, float]] = []
    last: dict[str, float] = {}

    def record(loss, terms):
        last.update(loss=float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()})

    def closure():
        opt.zero_grad(set_to_none=True)
        loss, terms = evaluate()
        loss.backward()
        if not last:  # the step's first evaluation: the loss at the image the step starts from
            record(loss, terms)
        return loss

    from tqdm.auto import tqdm

    bar = tqdm(range(steps), desc="stylize", unit="step", disable=not progress, leave=False)
    for _ in bar:
        last.clear()
        opt.step(closure)  # L-BFGS evaluates more points in its line search: only the first is recorded
        history.append({"step": len(history), **last})
        with torch.no_grad():
            image.clamp_(0, 1)
        bar.set_postfix(loss=f"{last['loss']:.4g}", refresh=False)
    bar.close()
    with torch.no_grad():
        record(*evaluate())
    history.append({"step": len(history), **last})
    return StylizeResult(image.detach()[0].float().cpu(), history)


def stylize_files(content: str | os.PathLike, style: str | os.PathLike, out: str | os.PathLike,
                  **options: Any) -> StylizeResult:
    """stylize() on two image files, writing the result to `out` (PNG/JPEG by extension); what
    `genkernels stylize` runs. Bad paths and unreadable images raise ValueError naming the argument."""
    from PIL import Image

    suffix = Path(out).suffix.lower()
    if suffix not in {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}:
        raise ValueError(f"--out: cannot write images with extension {suffix!r} (use .png or .jpg), got {str(out)!r}")
    result = stylize(content, style, **options)
    save_image(result.image, out)
    return result


# ---- the fast feed-forward network ---------------------------------------------------------------
@dataclasses.dataclass
class StyleTransferConfig:
    """image_shape: training crops (3, H, W), from the data; style_image: path of the style (read
    when the model is built; the checkpoint keeps its Gram matrices); style_size: its longer side."""

    image_shape: tuple = (3, 256, 256)
    style_image: str = ""
    style_size: int = 256
    style_layers: tuple = STYLE_LAYERS
    content_layers: tuple = CONTENT_LAYERS
    content_weight: float = 1.0
    style_weight: float = 10.0
    tv_weight: float = 0.05
    extractor_channels: tuple = (32, 64, 128, 256)
    extractor_seed: int = 0
    net_channels: int = 32
    residual_blocks: int = 5

    def __post_init__(self):
        self.image_shape = tuple(int(s) for s in self.image_shape)
        if len(self.image_shape) != 3 or self.image_shape[0] != 3 or min(self.image_shape[1:]) < 8:
            raise ValueError(f"image_shape must be (3, H, W) with H, W >= 8 (RGB), got {self.image_shape}")
        self.style_layers, self.content_layers = tuple(self.style_layers), tuple(self.content_layers)
        self.extractor_channels = tuple(int(c) for c in self.extractor_channels)
        if not isinstance(self.style_image, str):
            raise TypeError(f"style_image must be a path string, got {type(self.style_image).__name__}")
        for key in ("content_weight", "style_weight", "tv_weight"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{key} must be a float >= 0, got {value!r}")


class StyleTransfer(ImageGenerativeModel):
    """A TransformerNet trained for one style, plus the extractor and style Gram targets it trains
    against (buffers: a checkpoint needs no style file). `extractor` may be any module mapping
    images to {layer: features} (genkernels.nn.style.HookedFeatureExtractor for a user network);
    the registry model uses the random-filter default."""

    name: ClassVar[str] = "style"
    config_class: ClassVar[type] = StyleTransferConfig
    data_hint: ClassVar[str] = "pass --data FOLDER of RGB photos (one size, >= 20 images) and --set style_image=PATH"
    train_defaults: ClassVar[dict[str, Any]] = {"steps": 2000, "batch_size": 4, "lr": 1e-3, "weight_decay": 0.0,
                                                "warmup_steps": 50, "ema_decay": 0.0, "eval_every": 500,
                                                "eval_max_items": 16, "num_samples": 2, "grad_clip": 0.0}

    def __init__(self, config: StyleTransferConfig | None = None, extractor: nn.Module | None = None,
                 *, load_style: bool = True):
        super().__init__(config if config is not None else StyleTransferConfig())
        cfg = self.config
        layers = tuple(dict.fromkeys(cfg.style_layers + cfg.content_layers))
        self.extractor = extractor if extractor is not None else RandomFeatureExtractor(
            cfg.extractor_channels, cfg.extractor_seed, layers)
        self.net = TransformerNet(cfg.net_channels, cfg.residual_blocks)
        if extractor is None:  # the Gram shapes are known: buffers a checkpoint fills without the file
            channels = dict(zip(self.extractor.all_layers, cfg.extractor_channels))
            for i, layer in enumerate(cfg.style_layers):
                self.register_buffer(f"style_gram_{i}", torch.zeros(channels[layer], channels[layer]))
        if load_style and cfg.style_image:
            self.set_style(cfg.style_image)

    @classmethod
    def from_config_dict(cls, values: dict[str, Any]) -> "StyleTransfer":
        return cls(cls.config_class(**values), load_style=False)  # the Gram targets come from the checkpoint

    @classmethod
    def check_data(cls, dataset, data_name: str | None = None) -> None:
        super().check_data(dataset, data_name)
        channels = int(cls._first_image(dataset).shape[0])
        if channels != 3:
            name = f"data {str(data_name)!r}" if data_name is not None else "the data"
            raise ValueError(f"style trains on RGB photos, but {name} has {channels}-channel images; {cls.data_hint}")

    @classmethod
    def config_for_data(cls, dataset, overrides: dict[str, Any] | None = None, *, data_name: str | None = None):
        if not (overrides or {}).get("style_image"):
            raise ValueError(f"style needs a style image: {cls.data_hint}")
        return super().config_for_data(dataset, overrides, data_name=data_name)

    # -- style targets ------------------------------------------------------------------------
    @torch.no_grad()
    def set_style(self, style) -> None:
        """Read the style image (path, PIL image or tensor), resize its longer side to
        config.style_size and store its Gram matrix at every style layer."""
        device = next(self.net.parameters()).device
        image = load_image(style, self.config.style_size, name="style_image").to(device)
        for i, gram in enumerate(style_targets(self.extractor, image, self.config.style_layers).values()):
            name = f"style_gram_{i}"
            if hasattr(self, name):
                getattr(self, name).copy_(gram)
            else:
                self.register_buffer(name, gram)

    def style_grams(self) -> dict[str, torch.Tensor]:
        return {layer: getattr(self, f"style_gram_{i}") for i, layer in enumerate(self.config.style_layers)}

    # -- training -----------------------------------------------------------------------------
    def objective(self, images: torch.Tensor, contents: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted loss of stylised `images` against `contents` (both (N, 3, H, W)) and its terms."""
        cfg = self.config
        features = self.extractor(images)
        with torch.no_grad():
            content_features = self.extractor(contents)
        terms = {"content": content_term(features, {k: content_features[k] for k in cfg.content_layers}),
                 "style": style_term(features, self.style_grams()),
                 "tv": total_variation(images)}
        loss = cfg.content_weight * terms["content"] + cfg.style_weight * terms["style"] + cfg.tv_weight * terms["tv"]
        return {"loss": loss, **terms}

    def loss(self, batch) -> dict[str, torch.Tensor]:
        contents = batch[0] if isinstance(batch, (tuple, list)) else batch  # (N, 3, H, W) in [0, 1]
        return self.objective(self.net(contents), contents)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The stylised images (N, 3, H, W), unclamped."""
        return self.net(images)

    # -- generation ---------------------------------------------------------------------------
    @torch.no_grad()
    def stylize_batch(self, images: torch.Tensor) -> torch.Tensor:
        """Apply the trained network: (N, 3, H, W) in [0, 1] (any H, W >= 8) -> (N, 3, H, W) in [0, 1]."""
        return self.net(images).clamp(0, 1)

    @torch.no_grad()
    def sample(self, n: int, content=None) -> torch.Tensor:
        """n stylised images (n, 3, H, W) in [0, 1]: of `content` (a path, a PIL image or a tensor
        (3, H, W) / (N, 3, H, W)), else of scikit-learn's two photographs, at config.image_shape,
        repeated to n."""
        device = next(self.net.parameters()).device
        if content is None:
            images = torch.cat(list(sample_photos().values()))  # (2, 3, 427, 640)
            images = F.interpolate(images, size=self.config.image_shape[1:], mode="bilinear", antialias=True,
                                   align_corners=False)
        elif isinstance(content, torch.Tensor) and content.dim() == 4:
            images = content
        else:
            images = load_image(content, max(self.config.image_shape[1:]), name="content")
        images = images.to(device)
        images = images[torch.arange(n, device=device) % len(images)]  # (n, 3, H, W)
        return self.stylize_batch(images)

    def stylize(self, content, style=None, **options: Any) -> StylizeResult:
        """Gatys optimisation (module-level `stylize`) with this model's extractor, layers and weights;
        `style` defaults to the model's style image file."""
        cfg = self.config
        if style is None:
            if not cfg.style_image:
                raise ValueError("style: pass a style image (this model has no config.style_image)")
            style = cfg.style_image
        values = {"extractor": self.extractor, "style_layers": cfg.style_layers,
                  "content_layers": cfg.content_layers, "content_weight": cfg.content_weight,
                  "style_weight": cfg.style_weight, "tv_weight": cfg.tv_weight,
                  "device": next(self.net.parameters()).device, **options}
        return stylize(content, style, **values)
