"""Networks of neural style transfer: feature extractors whose Gram matrices describe a style, and
the feed-forward stylisation network of Johnson et al. (2016).

RandomFeatureExtractor(channels=(32, 64, 128, 256), seed=0, layers=None):
    a VGG-shaped CNN whose 3x3 filters are FIXED RANDOM (He-normal, drawn from `seed`): stage i is
    conv -> ReLU (named "relu{i}_1"), stages joined by 2x2 average pooling, so the stages see the
    image at 1, 1/2, 1/4 and 1/8 scale. No pretrained network can be downloaded here, and Gram
    statistics of random-weight networks already capture texture and style (Ustyuzhaninov et al.
    2017, "What does it take to generate natural textures?"; He et al. 2016 for style transfer):
    the default gives colour, local texture and brush-stroke scale; a pretrained VGG gives
    stronger, more semantic style (object parts, long strokes).
    forward(images (N, 3, H, W) in [0, 1]) -> {layer name: (N, C_l, H_l, W_l)}.
HookedFeatureExtractor(module, layers, mean=None, std=None, freeze=True):
    any user nn.Module (e.g. a torchvision VGG19 loaded from weights on disk:
    `HookedFeatureExtractor(vgg.features, ["1", "6", "11", "20", "22"], mean=IMAGENET_MEAN,
    std=IMAGENET_STD)` gives relu1_1, relu2_1, relu3_1, relu4_1 and relu4_2): forward hooks collect
    the named submodules' outputs, and the forward stops after the last one (a VGG's classifier
    never runs). Same forward contract as above.
TransformerNet(channels=32, residual_blocks=5):
    Johnson et al.'s image transformation network with instance norm (Ulyanov et al. 2016): 9x9
    conv, two stride-2 convs, residual blocks, two nearest-upsample convs, 9x9 conv to RGB. One
    change: the output is images + gate * that last conv, the scalar gate zero-initialised, so the
    untrained network is the identity and a short CPU training starts from the content image, not
    from noise.
    forward(images (N, 3, H, W) in [0, 1]) -> (N, 3, H, W) (unclamped; clamp to [0, 1] to show).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _normalizer(module: nn.Module, mean, std) -> None:
    """Register (1, 3, 1, 1) mean / std buffers on `module` (identity when None)."""
    for name, value, default in (("mean", mean, 0.0), ("std", std, 1.0)):
        values = tuple(float(v) for v in (value if value is not None else (default,) * 3))
        if len(values) != 3:
            raise ValueError(f"{name} must be 3 per-channel values (RGB), got {value!r}")
        module.register_buffer(name, torch.tensor(values).view(1, 3, 1, 1), persistent=False)


def _check_images(images, who: str) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{who}: images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"{who}: images must be floating (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")


# ---- feature extractors ------------------------------------------------------------------------
class RandomFeatureExtractor(nn.Module):
    """Multi-scale CNN with fixed random filters (buffers, never trained); see the module docstring."""

    def __init__(self, channels: Sequence[int] = (32, 64, 128, 256), seed: int = 0,
                 layers: Sequence[str] | None = None):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels must be positive ints, one per stage, got {channels!r}")
        self.all_layers = tuple(f"relu{i + 1}_1" for i in range(len(channels)))
        self.layer_names = tuple(layers) if layers is not None else self.all_layers
        unknown = [name for name in self.layer_names if name not in self.all_layers]
        if unknown or not self.layer_names:
            raise ValueError(f"layers must be names among {self.all_layers}, got {list(self.layer_names)}")
        self.depth = max(self.all_layers.index(name) for name in self.layer_names) + 1
        generator = torch.Generator().manual_seed(int(seed))
        fan_in = 3
        for i, c in enumerate(channels):
            weight = torch.randn(c, fan_in, 3, 3, generator=generator) * (2.0 / (fan_in * 9)) ** 0.5  # He
            if i == 0:  # zero-mean first-layer filters: edges and colour contrasts, not brightness
                weight -= weight.mean(dim=(1, 2, 3), keepdim=True)
            self.register_buffer(f"weight{i}", weight)
            fan_in = c
        _normalizer(self, IMAGENET_MEAN, IMAGENET_STD)  # inputs in [0, 1] -> about zero mean, unit variance

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_images(images, "RandomFeatureExtractor")
        h = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)  # (N, 3, H, W)
        features = {}
        for i in range(self.depth):
            if i:
                h = F.avg_pool2d(h, 2, ceil_mode=True)  # (N, C, ceil(H / 2), ceil(W / 2))
            weight = getattr(self, f"weight{i}").to(h.dtype)
            h = F.relu(F.conv2d(F.pad(h, (1, 1, 1, 1), mode="replicate"), weight))  # (N, C_i, H_i, W_i)
            name = self.all_layers[i]
            if name in self.layer_names:
                features[name] = h
        return features


class _StopForward(Exception):
    """Raised by the last hook: the rest of the user's network is not needed."""


class HookedFeatureExtractor(nn.Module):
    """Features of named submodules of any user network, by forward hooks.

    module  the network; called as module(normalized images)
    layers  names of its submodules (as in module.named_modules()) whose outputs are the features
    mean, std  per-channel normalisation applied to images in [0, 1] first (e.g. IMAGENET_MEAN /
            IMAGENET_STD for torchvision weights); None: none
    freeze  put the module in eval mode, stop gradients to its parameters and turn off in-place
            activations (an in-place ReLU after a hooked layer would overwrite its saved output)
    """

    def __init__(self, module: nn.Module, layers: Sequence[str], mean=None, std=None, freeze: bool = True):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if isinstance(layers, str):
            layers = [layers]
        self.layer_names = tuple(layers)
        names = dict(module.named_modules())
        unknown = [name for name in self.layer_names if name not in names or name == ""]
        if unknown or not self.layer_names:
            available = [n for n in names if n][:12]
            raise ValueError(f"layers must name submodules of the module, got {unknown or list(layers)}; "
                             f"available: {', '.join(available)}{', ...' if len(names) > 13 else ''}")
        self.module = module
        _normalizer(self, mean, std)
        if freeze:
            module.eval()
            module.requires_grad_(False)
            for sub in module.modules():
                if getattr(sub, "inplace", False) is True:
                    sub.inplace = False

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_images(images, "HookedFeatureExtractor")
        features: dict[str, torch.Tensor] = {}
        wanted = set(self.layer_names)

        def hook(name):
            def collect(_module, _inputs, output):
                features[name] = output
                if wanted <= features.keys():
                    raise _StopForward
            return collect

        handles = [self.module.get_submodule(name).register_forward_hook(hook(name)) for name in wanted]
        try:
            self.module((images - self.mean.to(images.dtype)) / self.std.to(images.dtype))
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        missing = wanted - features.keys()
        if missing:
            raise ValueError(f"HookedFeatureExtractor: layers {sorted(missing)} did not run in the module's forward")
        return {name: features[name] for name in self.layer_names}


# ---- Johnson et al.'s transformation network ---------------------------------------------------
class _ConvNormAct(nn.Sequential):
    """Reflection-padded conv -> instance norm (affine) -> ReLU (or neither, for the last layer)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, norm_act: bool = True):
        layers = [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride)]
        if norm_act:
            layers += [nn.InstanceNorm2d(cout, affine=True), nn.ReLU()]
        super().__init__(*layers)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_ConvNormAct(channels, channels, 3),
                                  nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3),
                                  nn.InstanceNorm2d(channels, affine=True))

    def forward(self, x):
        return x + self.body(x)


class _UpConv(nn.Module):
    """Nearest 2x upsampling then a conv: no checkerboard artefacts of transposed convs (Odena et al. 2016)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = _ConvNormAct(cin, cout, 3)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TransformerNet(nn.Module):
    """Johnson et al. (2016) feed-forward stylisation network with instance norm; see the module docstring."""

    def __init__(self, channels: int = 32, residual_blocks: int = 5):
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        if isinstance(residual_blocks, bool) or not isinstance(residual_blocks, int) or residual_blocks < 0:
            raise ValueError(f"residual_blocks must be a non-negative int, got {residual_blocks!r}")
        c = channels
        self.down = nn.Sequential(_ConvNormAct(3, c, 9), _ConvNormAct(c, 2 * c, 3, 2), _ConvNormAct(2 * c, 4 * c, 3, 2))
        self.residual = nn.Sequential(*(_ResidualBlock(4 * c) for _ in range(residual_blocks)))
        self.up = nn.Sequential(_UpConv(4 * c, 2 * c), _UpConv(2 * c, c), _ConvNormAct(c, 3, 9, norm_act=False))
        # the residual's scale, zero so the untrained network is the identity (ReZero, Bachlechner
        # et al. 2020): a zero last conv instead would take Adam's first steps of lr per weight
        # over its 32 x 81 inputs at once and jump the output by whole units (tried: the loss grew 8x)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images, "TransformerNet")
        h = self.down(images)  # (N, 4c, ceil(H / 4), ceil(W / 4))
        h = self.residual(h)
        delta = self.up(h)  # (N, 3, 4 ceil(H / 4), 4 ceil(W / 4))
        if delta.shape[-2:] != images.shape[-2:]:  # sides not divisible by 4
            delta = F.interpolate(delta, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return images + self.gate * delta
