"""Latent-space tools across the families: encode/decode, interpolation, attribute vectors
(latent arithmetic) and class-conditional synthetic data sets with their measured gain.

Latent spaces, per family (`encode` / `decode`):

  VAE        z = the posterior mean mu(x); decode gives the decoder's mean image. decode(encode(x))
             is the model's reconstruction (`VAE.reconstruct`), not x.
  RealNVP, Glow, MAF
             z = f(v), the exact flow of the dequantised image at the centre of its level bin,
             v = preprocess((level + 0.5) / L); decode inverts the flow and maps the continuous
             level back to [0, 1] as (y L - 0.5) / (L - 1), so decode(encode(x)) = x up to float
             rounding (measured <= 3e-7 for RealNVP, Glow and MAF on 8x8 digits in float32).
             Points (num_levels = 0): z = f(x).
  Diffusion  z = x_T by DDIM inversion (eta = 0) over `steps` model calls (Diffusion.encode);
             decode runs deterministic DDIM from x_T. The round trip is approximate: its error
             comes from evaluating the model at the neighbouring noise level at every step and
             shrinks with more steps: mean |error| 0.035 at 10 steps, 0.009 at 50 (max 0.17 /
             0.05) for a random-weight UNet with T = 200 (tests/test_latent.py).
  GAN        no encoder. Interpolate between latent codes (`from_latents=True`), or invert an image
             by latent optimisation: z minimising mean (G(z) - x)^2 by Adam from a seeded N(0, I)
             start (`gan_steps`, `gan_lr`); the result is approximate (the generator may not be
             able to produce x at all). decode(z) = G(z) in [0, 1] (batch norm in eval mode).
  VQ-VAE     z = the encoder's continuous output z_e (N, D, h, w), before quantisation; decode snaps
             each position to its nearest code and decodes, so interpolating z_e walks through the
             discrete code maps (decode also takes the integer code maps (N, h, w) `VQVAE.encode` gives).
  other      any object with its own `encode(x)` and `decode(z)` (a user autoencoder).

Class-conditional models take `labels` in encode/decode (flows and GANs require them, class
diffusion models encode with the null class when none are given). PixelCNN (and other models
without a latent space) raise TypeError.

`class_interpolation(model, a, b)` moves the class instead of the latent: the class embedding row
is mixed, (1 - t) E[a] + t E[b], with the latent held fixed (one GAN z, one diffusion x_T decoded by
deterministic DDIM), for class-conditional GANs and class diffusion models.

Attribute vectors (White 2016; Larsen et al. 2016): v = mean_{attribute == a} z - mean_{attribute == b} z
over a labelled set; `apply_attribute` decodes z(x) + s v for several scales s. On an unconditional
model the attribute may be the class itself ("a 1 minus a 7"). On a class-conditional model every
image is encoded with its own class label, which is held fixed when decoding: the latent then
carries what the label does not (style: thickness, slant), so attribute vectors there are for
attributes other than the class (e.g. `ink_attribute`), and changing the class is done by
changing the label.

`augment` draws a class-balanced synthetic set from a class-conditional model (GAN, flows or
PixelCNN with num_classes > 0, Diffusion with conditioning="class"); `augmentation_gain` measures
what it adds to the digits classifier trained on a few real images per class.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

LATENT_FAMILIES = ("VAE", "GAN", "RealNVP", "Glow", "MAF", "Diffusion", "VQVAE")
CONDITIONAL_FAMILIES = ("GAN", "RealNVP", "Glow", "MAF", "PixelCNN", "Diffusion (conditioning='class')")
METHODS = ("slerp", "linear")


# -- family dispatch ------------------------------------------------------------------------------
def _family(model) -> str:
    """"vae", "flow", "diffusion", "gan", "vqvae" or "custom"; TypeError for models without a latent space."""
    from genkernels.models.diffusion import Diffusion
    from genkernels.models.flow_base import FlowModel
    from genkernels.models.gan import GAN
    from genkernels.models.vae import VAE
    from genkernels.models.vqvae import VQVAE

    if isinstance(model, VAE):
        return "vae"
    if isinstance(model, VQVAE):
        return "vqvae"
    if isinstance(model, FlowModel):
        return "flow"
    if isinstance(model, Diffusion):
        return "diffusion"
    if isinstance(model, GAN):
        return "gan"
    from genkernels.models.base import GenerativeModel

    if (not isinstance(model, GenerativeModel) and callable(getattr(model, "encode", None))
            and callable(getattr(model, "decode", None))):
        return "custom"
    raise TypeError(f"{type(model).__name__} has no latent space to encode to: latent tools work on "
                    f"{', '.join(LATENT_FAMILIES)} models, or any object with encode(x) and decode(z)")


def num_classes(model) -> int:
    """Classes a model is conditioned on (0: unconditional)."""
    config = getattr(model, "config", None)
    if config is None:
        return 0
    if hasattr(config, "conditioning"):  # Diffusion: only class conditioning counts
        return int(config.num_classes) if config.conditioning == "class" else 0
    return int(getattr(config, "num_classes", 0) or 0)


@contextlib.contextmanager
def _eval_mode(model):
    """model.eval() for the block (batch norm, dropout), then the previous mode back."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def _check_tensor(name: str, x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not (x.is_floating_point() or x.dtype == torch.int64):
        raise TypeError(f"{name} must be a float tensor (N, ...), got "
                        f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"{name} must have a batch dimension (N, ...), got shape {tuple(x.shape)}")
    return x


def _labels(model, labels, n: int) -> torch.Tensor | None:
    """(n,) int64 labels on the model's device for a conditional model; None for unconditional."""
    k = num_classes(model)
    if labels is None:
        return None
    if not k:
        raise ValueError(f"labels were given, but this {type(model).__name__} is not class-conditional")
    from genkernels.models._validate import class_labels

    return class_labels(labels, n, k, model=type(model).__name__, device=_device(model))


def _flow_labels(model, labels, n: int) -> torch.Tensor | None:
    labels = _labels(model, labels, n)
    if num_classes(model) and labels is None:
        raise ValueError(f"this {type(model).__name__} is class-conditional (num_classes={num_classes(model)}): "
                         "pass labels")
    return labels


@torch.no_grad()
def encode(model, x: torch.Tensor, *, labels=None, steps: int = 50, gan_steps: int = 300, gan_lr: float = 0.05,
           seed: int = 0) -> torch.Tensor:
    """Latent codes of x (N, *item shape; images float in [0, 1]) for `model` (module docstring).

    labels     class-conditional models: an int or (N,) ints (flows and GANs need them)
    steps      diffusion: DDIM inversion steps
    gan_steps, gan_lr, seed
               GAN: Adam steps, learning rate and the seed of the start of the latent optimisation
    Returns (N, D) latents for VAE, flows and GAN, (N, *item shape) for diffusion, (N, D, h, w) for
    a VQ-VAE (the encoder output before quantisation).
    """
    family = _family(model)
    x = _check_tensor("x", x)
    n = x.shape[0]
    with _eval_mode(model):
        if family == "custom":
            return model.encode(x) if labels is None else model.encode(x, labels=labels)
        if family == "vqvae":
            _labels(model, labels, n)
            return model.encode_continuous(x).float()
        if family == "vae":
            _labels(model, labels, n)
            levels = model._levels(x)
            mu, _ = model.latent.posterior(model._encode_features(levels))
            return mu.float()
        if family == "diffusion":
            return model.encode(x, steps=steps, labels=labels)
        if family == "flow":
            labels = _flow_labels(model, labels, n)
            x = model._check_items(x).to(model.device)
            if model.is_discrete:
                levels = model._levels(x).to(model.dtype)
                v, _ = model._preprocess((levels + 0.5) / model.config.num_levels)  # centre of the level bin
            else:
                v = x.to(model.dtype)
            z, _ = model.transform(v, labels)
            return z.reshape(n, -1)
        return _invert_gan(model, x, _labels(model, labels, n), gan_steps, gan_lr, seed)


def _invert_gan(model, x: torch.Tensor, labels, steps: int, lr: float, seed: int) -> torch.Tensor:
    """Latent optimisation: argmin_z mean (G(z, y) - x)^2 by Adam from a seeded N(0, I) start."""
    from genkernels.models._validate import check_int, check_real

    steps = check_int("gan_steps", steps, 1)
    lr = check_real("gan_lr", lr, 0.0)
    if num_classes(model) and labels is None:
        raise ValueError("this GAN is class-conditional: pass labels to encode (the class of each image)")
    device = model.device
    target = x.to(device).float() * 2 - 1
    if tuple(target.shape[1:]) != tuple(model.config.image_shape):
        raise ValueError(f"x must have shape (N, *{model.config.image_shape}), got {tuple(x.shape)}")
    generator = torch.Generator(device="cpu").manual_seed(check_int("seed", seed, 0))
    z = torch.randn(x.shape[0], model.config.latent_dim, generator=generator).to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            loss = (model.generator(z, labels) - target).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return z.detach()


@torch.no_grad()
def decode(model, z: torch.Tensor, *, labels=None, steps: int = 50) -> torch.Tensor:
    """Items (N, *item shape) from latents z as `encode` returns them; images float32 in [0, 1]."""
    family = _family(model)
    if family == "vqvae" and isinstance(z, torch.Tensor) and not z.is_floating_point() and z.ndim == 3:
        with _eval_mode(model):
            return model.decode_codes(z)  # integer code maps (N, h, w)
    if not isinstance(z, torch.Tensor) or not z.is_floating_point() or z.ndim < 2:
        raise TypeError(f"z must be a float tensor (N, ...), got "
                        f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
    n = z.shape[0]
    with _eval_mode(model):
        if family == "custom":
            return model.decode(z) if labels is None else model.decode(z, labels=labels)
        if family == "vae":
            _labels(model, labels, n)
            return model.decoded_images(model.decode(z.to(_device(model))))
        if family == "vqvae":
            _labels(model, labels, n)
            expected = (model.config.code_dim, *model.config.code_shape)
            if z.ndim != 4 or tuple(z.shape[1:]) != expected:
                raise ValueError(f"z must have shape (N, *{expected}) (or be code maps (N, "
                                 f"*{model.config.code_shape}) of int64), got {tuple(z.shape)}")
            return model.decode_codes(model.quantizer.nearest(z.to(model.device)))
        if family == "diffusion":
            return model.decode(z, steps=steps, labels=labels)
        if family == "flow":
            labels = _flow_labels(model, labels, n)
            if z.ndim != 2 or z.shape[1] != model.num_dims:
                raise ValueError(f"z must have shape (N, {model.num_dims}), got {tuple(z.shape)}")
            v, _ = model.inverse_transform(z.to(model.device, model.dtype), labels)
            v = v.reshape(n, *model.data_shape)
            if not model.is_discrete:
                return v
            top = model.config.num_levels - 1
            y = model._postprocess(v)  # in [0, 1]; level bin k is [k / L, (k + 1) / L)
            return ((y * model.config.num_levels - 0.5) / top).clamp(0, 1).float()
        labels = _labels(model, labels, n)
        if num_classes(model) and labels is None:
            raise ValueError("this GAN is class-conditional: pass labels to decode")
        if z.ndim != 2 or z.shape[1] != model.config.latent_dim:
            raise ValueError(f"z must have shape (N, {model.config.latent_dim}), got {tuple(z.shape)}")
        return ((model.generator(z.to(model.device), labels).float() + 1) / 2).clamp(0, 1)


# -- interpolation --------------------------------------------------------------------------------
def slerp(a: torch.Tensor, b: torch.Tensor, t) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016) between a and b (same shape), treating
    each as one flattened vector: sin((1 - t) W) / sin W a + sin(t W) / sin W b, W the angle
    between them. t: a float or a 1-D tensor of T weights -> (T, *a.shape). For |a| = |b| the norm
    stays |a| along the path; t = 0 gives a, t = 1 gives b. Falls back to linear when the vectors
    are (anti)parallel within 1e-6 (the arc is then undefined or the plain line)."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
        raise ValueError(f"a and b must be tensors of one shape, got "
                         f"{tuple(getattr(a, 'shape', ()))} and {tuple(getattr(b, 'shape', ()))}")
    scalar = not isinstance(t, torch.Tensor) or t.ndim == 0
    weights = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    a64, b64 = a.double().reshape(-1), b.double().reshape(-1)
    cos = (a64 @ b64) / (a64.norm() * b64.norm()).clamp_min(1e-300)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    so = torch.sin(omega)
    if so.abs() < 1e-6:
        out = (1 - weights)[:, None] * a64 + weights[:, None] * b64
    else:
        out = (torch.sin((1 - weights) * omega) / so)[:, None] * a64 + (torch.sin(weights * omega) / so)[:, None] * b64
    out = out.to(a.dtype).reshape(-1, *a.shape)
    return out[0] if scalar else out


def lerp(a: torch.Tensor, b: torch.Tensor, t) -> torch.Tensor:
    """Linear interpolation (1 - t) a + t b; t a float or a 1-D tensor of T weights -> (T, *a.shape)."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
        raise ValueError("a and b must be tensors of one shape")
    scalar = not isinstance(t, torch.Tensor) or t.ndim == 0
    weights = torch.as_tensor(t, dtype=a.dtype, device=a.device).reshape(-1, *([1] * a.ndim))
    out = (1 - weights) * a + weights * b
    out[weights.reshape(-1) == 1] = b  # exact endpoint
    return out[0] if scalar else out


def _as_item(model, name: str, x) -> torch.Tensor:
    """One item as a batch of one: (1, *shape)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor (one item, or a batch of one), got {type(x).__name__}")
    shape = _item_shape(model)
    if shape is not None and tuple(x.shape) == shape:
        return x.unsqueeze(0)
    if x.ndim >= 2 and x.shape[0] == 1:
        return x
    raise ValueError(f"{name} must be one item {shape if shape else ''} or a batch of one, got {tuple(x.shape)}")


def _item_shape(model) -> tuple[int, ...] | None:
    config = getattr(model, "config", None)
    for field in ("image_shape", "data_shape"):
        if config is not None and hasattr(config, field):
            return tuple(getattr(config, field))
    return None


@torch.no_grad()
def interpolate(model, a: torch.Tensor, b: torch.Tensor, steps: int = 8, method: str = "slerp",
                from_latents: bool = False, *, labels=None, ddim_steps: int = 50, **encode_kw) -> torch.Tensor:
    """Decodings along the path from a to b: (steps, *item shape), images in [0, 1].

    a, b          two items (images (C, H, W) in [0, 1], or batches of one), or with
                  from_latents=True two latent codes as `encode` returns them, without or with a
                  batch dimension of one (for a GAN, e.g. torch.randn(latent_dim))
    method        "slerp" (spherical, the default: Gaussian latents concentrate on a shell, and the
                  straight line between two of them runs through its low-norm inside) or "linear"
    labels        class-conditional models: one class held fixed along the path
    ddim_steps    diffusion: DDIM steps of the inversion and of the decoding
    encode_kw     other `encode` options (gan_steps, gan_lr, seed for GAN inversion)

    The first and last images are decode(encode(a)) and decode(encode(b)): a and b exactly for
    flows (up to float rounding), the VAE's reconstructions, DDIM's round trip for diffusion.
    """
    from genkernels.models._validate import check_choice, check_int

    steps = check_int("steps", steps, 2)
    method = check_choice("method", method, METHODS)
    family = _family(model)
    coder_kw = {"steps": check_int("ddim_steps", ddim_steps, 1)} if family == "diffusion" else {}
    if from_latents:
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
            raise ValueError("from_latents=True: a and b must be latent tensors of one shape")
        if not a.is_floating_point():
            raise TypeError(f"from_latents=True: a and b must be float latents, got {a.dtype}")
        za, zb = (a[0], b[0]) if a.ndim >= 2 and a.shape[0] == 1 else (a, b)
    else:
        pair = torch.cat([_as_item(model, "a", a), _as_item(model, "b", b)])
        z = encode(model, pair, labels=labels, **coder_kw, **encode_kw)
        za, zb = z[0], z[1]
    weights = torch.linspace(0, 1, steps, dtype=torch.float64)
    path = slerp(za, zb, weights) if method == "slerp" else lerp(za, zb, weights.to(za.dtype))  # (steps, *z)
    return decode(model, path, labels=labels, **coder_kw)


def interpolation_figure(models, a: torch.Tensor, b: torch.Tensor, steps: int = 8, method: str = "slerp", *,
                         labels=None, options: Mapping[str, dict] | None = None):
    """One PIL image: a row per family, `steps` columns from a to b (`interpolate` of each model).

    models   a model or {name: model}; labels: one class for the class-conditional ones;
             options: {name: extra keyword arguments of `interpolate`} (e.g. {"gan": {"gan_steps": 500}}).
    """
    from genkernels.figures import image_grid

    if not isinstance(models, Mapping):
        models = {type(models).__name__: models}
    if not models:
        raise ValueError("models must hold at least one model")
    rows, names = [], []
    for name, model in models.items():
        kw = dict((options or {}).get(name, {}))
        if num_classes(model) and labels is not None:
            kw.setdefault("labels", labels)
        rows.append(interpolate(model, a, b, steps, method, **kw).float().cpu().clamp(0, 1))
        names.append(str(name))
    return image_grid(torch.cat(rows), steps, row_labels=names)


class _MixedRows(torch.nn.Module):
    """Stands in for a class embedding: row i of `rows` for label i (the class-interpolation path)."""

    def __init__(self, rows: torch.Tensor):
        super().__init__()
        self.rows = rows

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.rows[labels]


@contextlib.contextmanager
def _swapped(owner, name: str, module):
    original = getattr(owner, name)
    setattr(owner, name, module)
    try:
        yield
    finally:
        setattr(owner, name, original)


@torch.no_grad()
def class_interpolation(model, a: int, b: int, steps: int = 8, *, z: torch.Tensor | None = None, seed: int = 0,
                        ddim_steps: int = 50) -> torch.Tensor:
    """Images (steps, C, H, W) in [0, 1] moving from class a to class b with the latent held fixed.

    The class embedding row becomes (1 - t) E[a] + t E[b] for t = 0 .. 1 (linear: the embeddings
    are learned vectors, not Gaussian draws), so the first image is class a and the last class b
    for the same z. Class-conditional GANs (z: one latent (latent_dim,), default seeded N(0, I))
    and class diffusion models (z: one x_T (*data_shape), default seeded N(0, I), decoded by
    deterministic DDIM over ddim_steps model calls, no guidance).
    """
    from genkernels.models._validate import check_int

    steps = check_int("steps", steps, 2)
    family = _family(model)
    k = num_classes(model)
    if family not in ("gan", "diffusion") or k == 0:
        raise TypeError(f"class_interpolation needs a class-conditional GAN or class diffusion model, got "
                        f"{'an unconditional ' if k == 0 else ''}{type(model).__name__}")
    a, b = check_int("a", a, 0), check_int("b", b, 0)
    for name, value in (("a", a), ("b", b)):
        if value >= k:
            raise ValueError(f"{name} must be a class in [0, {k}), got {value}")
    device = _device(model)
    shape = (model.config.latent_dim,) if family == "gan" else tuple(model.config.data_shape)
    if z is None:
        z = torch.randn(shape, generator=torch.Generator(device="cpu").manual_seed(check_int("seed", seed, 0)))
    if not isinstance(z, torch.Tensor) or not z.is_floating_point():
        raise TypeError(f"z must be a float tensor of shape {shape}, got "
                        f"{z.dtype if isinstance(z, torch.Tensor) else type(z).__name__}")
    if z.ndim == len(shape) + 1 and z.shape[0] == 1:
        z = z[0]
    if tuple(z.shape) != shape:
        raise ValueError(f"z must have shape {shape}, got {tuple(z.shape)}")
    t = torch.linspace(0, 1, steps, device=device)[:, None]
    with _eval_mode(model):
        if family == "gan":
            table = model.generator.embed.weight
            rows = (1 - t) * table[a] + t * table[b]  # (steps, embed_dim)
            with _swapped(model.generator, "embed", _MixedRows(rows)):
                out = model.generator(z.to(device).expand(steps, -1), torch.arange(steps, device=device))
            return ((out.float() + 1) / 2).clamp(0, 1)
        embedding = model.denoiser.embed
        table = embedding.label.weight
        rows = (1 - t) * table[a] + t * table[b]
        images = []
        for start in range(0, steps, k):  # labels must be valid class ids: at most k rows per pass
            chunk = rows[start:start + k]
            with _swapped(embedding, "label", _MixedRows(chunk)):
                x_T = z.to(device).float().expand(len(chunk), *shape)
                images.append(model.decode(x_T, steps=check_int("ddim_steps", ddim_steps, 1),
                                           labels=list(range(len(chunk)))))
        return torch.cat(images)


# -- attribute vectors ----------------------------------------------------------------------------
def _dataset_tensors(data, max_items: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images (N, ...), labels (N,) or None) from a tensor, an (images, labels) pair or a Dataset."""
    if isinstance(data, torch.Tensor):
        images, labels = data, None
    elif isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        images, labels = data[0], torch.as_tensor(data[1]).long()
    elif hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        count = len(data) if max_items is None else min(len(data), max_items)
        items = [data[i] for i in range(count)]
        if not items:
            raise ValueError("the dataset is empty")
        paired = isinstance(items[0], (tuple, list))
        images = torch.stack([i[0] if paired else i for i in items])
        labels = torch.stack([torch.as_tensor(i[1]) for i in items]).long() if paired else None
    else:
        raise TypeError(f"data must be an images tensor, an (images, labels) pair or a Dataset of (image, label), "
                        f"got {type(data).__name__}")
    if max_items is not None:
        images, labels = images[:max_items], None if labels is None else labels[:max_items]
    if labels is not None and labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels must have one entry per image: {images.shape[0]} images, {labels.shape[0]} labels")
    return images, labels


def ink_attribute(images: torch.Tensor) -> torch.Tensor:
    """A label-free attribute: 1 for images with more ink (mean intensity) than the set's median
    ("thick"), else 0 ("thin")."""
    ink = images.float().flatten(1).mean(1)
    return (ink > ink.median()).long()


@torch.no_grad()
def attribute_vector(model, data, attribute=None, a=1, b=0, *, max_items: int | None = None,
                     batch_size: int = 256, **encode_kw) -> torch.Tensor:
    """mean latent of the items whose attribute is a minus that of those whose attribute is b.

    data       images (N, ...), an (images, labels) pair, or a Dataset of (image, label)
    attribute  None: the data's class labels; a tensor/sequence (N,) of attribute values; or a
               callable images -> (N,) values (e.g. `ink_attribute`)
    a, b       the two attribute values compared
    Class-conditional models encode every image with its own class label (held fixed; module
    docstring), so the data must be labelled. Returns one latent (the shape of encode's rows).
    """
    images, labels = _dataset_tensors(data, max_items)
    if attribute is None:
        if labels is None:
            raise ValueError("attribute=None uses the data's class labels, but the data has none")
        values = labels
    elif callable(attribute):
        values = torch.as_tensor(attribute(images))
    else:
        values = torch.as_tensor(attribute)
    values = values.reshape(-1)
    if values.shape[0] != images.shape[0]:
        raise ValueError(f"attribute must give one value per item ({images.shape[0]}), got {values.shape[0]}")
    in_a, in_b = values == a, values == b
    if not in_a.any() or not in_b.any():
        raise ValueError(f"attribute values a={a!r} and b={b!r} must both occur in the data "
                         f"(counts {int(in_a.sum())}, {int(in_b.sum())})")
    conditional = num_classes(model) > 0
    if conditional and labels is None:
        raise ValueError(f"{type(model).__name__} is class-conditional: the data must carry class labels "
                         "(each image is encoded with its own class)")
    keep = in_a | in_b
    images = images[keep]
    labels = labels[keep] if labels is not None else None
    codes = []
    for start in range(0, images.shape[0], batch_size):
        kw = dict(encode_kw)
        if conditional:
            kw["labels"] = labels[start:start + batch_size]
        codes.append(encode(model, images[start:start + batch_size], **kw).cpu())
    z = torch.cat(codes).double()
    sel_a, sel_b = in_a[keep], in_b[keep]
    return (z[sel_a].mean(0) - z[sel_b].mean(0)).float()


@torch.no_grad()
def apply_attribute(model, x: torch.Tensor, vector: torch.Tensor, scales: Sequence[float] = (-1.0, 0.0, 1.0, 2.0),
                    *, labels=None, **encode_kw) -> torch.Tensor:
    """decode(encode(x) + s * vector) for each scale s: (N, len(scales), *item shape).

    labels: class-conditional models need the class of each x; it is held fixed (the vector then
    moves the style; change the class through the label). Scale 0 is the round trip of x.
    """
    x = _check_tensor("x", x)
    if not isinstance(vector, torch.Tensor):
        raise TypeError(f"vector must be a tensor (a latent from attribute_vector), got {type(vector).__name__}")
    scales = [float(s) for s in scales]
    if not scales:
        raise ValueError("scales must hold at least one scale")
    family = _family(model)
    decode_kw = {"steps": encode_kw["steps"]} if family == "diffusion" and "steps" in encode_kw else {}
    z = encode(model, x, labels=labels, **encode_kw)
    if tuple(vector.shape) != tuple(z.shape[1:]):
        raise ValueError(f"vector must have the latent shape {tuple(z.shape[1:])}, got {tuple(vector.shape)}")
    n, s = z.shape[0], len(scales)
    shifted = z.unsqueeze(1) + torch.tensor(scales, dtype=z.dtype, device=z.device).view(1, s, *[1] * (z.ndim - 1)) \
        * vector.to(z.device, z.dtype)
    rep_labels = None
    if labels is not None:
        lab = _labels(model, labels, n) if family != "custom" else torch.as_tensor(labels)
        rep_labels = lab.repeat_interleave(s)
    out = decode(model, shifted.reshape(n * s, *z.shape[1:]), labels=rep_labels, **decode_kw)
    return out.reshape(n, s, *out.shape[1:])


# -- class-conditional synthetic data -------------------------------------------------------------
def _sample_kwargs(model, seed: int, extra: dict) -> dict:
    params = inspect.signature(model.sample).parameters
    kw = {k: v for k, v in extra.items()}
    if "seed" in params:
        kw["seed"] = seed
    return kw


@torch.no_grad()
def augment(model, n_per_class: int, *, seed: int = 0, batch_size: int = 500,
            **sample_kw) -> tuple[torch.Tensor, torch.Tensor]:
    """A class-balanced synthetic set from a class-conditional model: (images (K n, ...) float32 on
    the CPU, labels (K n,) int64), class-major (n of class 0, then n of class 1, ...), K the model's
    classes. `seed` fixes the draws (the model's own seed argument where it has one, else the torch
    RNG, restored afterwards); `sample_kw` go to model.sample (e.g. steps=, guidance_scale=,
    temperature=)."""
    from genkernels.models._validate import check_int

    n_per_class = check_int("n_per_class", n_per_class, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    seed = check_int("seed", seed, 0)
    k = num_classes(model)
    if not k or not callable(getattr(model, "sample", None)):
        raise TypeError(f"augment needs a class-conditional model ({', '.join(CONDITIONAL_FAMILIES)} with "
                        f"num_classes > 0), got {type(model).__name__} with no classes")
    labels = torch.arange(k).repeat_interleave(n_per_class)
    chunks = []
    with _eval_mode(model), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i, start in enumerate(range(0, labels.shape[0], batch_size)):
            part = labels[start:start + batch_size]
            kw = _sample_kwargs(model, seed * 100_003 + i, sample_kw)
            chunks.append(model.sample(part.shape[0], labels=part.to(_device(model)), **kw).float().cpu())
    return torch.cat(chunks), labels


# -- measured gain ----------------------------------------------------------------------------------
def _few_per_class(images: torch.Tensor, labels: torch.Tensor, k: int, seed: int):
    """k images per class drawn without replacement (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    picks = []
    for c in labels.unique().tolist():
        index = (labels == c).nonzero().reshape(-1)
        if index.numel() < k:
            raise ValueError(f"real_per_class={k} but class {c} has only {index.numel()} training images")
        picks.append(index[torch.randperm(index.numel(), generator=generator)[:k]])
    picks = torch.cat(picks)
    return images[picks], labels[picks]


def train_digits_classifier(images: torch.Tensor, labels: torch.Tensor, *, steps: int = 600, batch_size: int = 64,
                            seed: int = 0):
    """The bundled digits classifier (genkernels.metrics.digits_classifier: architecture, AdamW,
    one-cycle schedule, random 1-pixel shifts) trained from scratch on the given images for a fixed
    number of steps (so small and augmented sets get the same optimisation budget). Single thread,
    seeded; returns the model in eval mode."""
    from genkernels.metrics.digits_classifier import ClassifierConfig, DigitsClassifier, _random_shift

    config = ClassifierConfig()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DigitsClassifier(config)
            generator = torch.Generator().manual_seed(seed)
            optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                          weight_decay=config.weight_decay)
            schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate, total_steps=steps)
            images, labels = images.float().clamp(0, 1), labels.long()
            model.train()
            for _ in range(steps):
                batch = torch.randint(0, labels.shape[0], (min(batch_size, labels.shape[0]),), generator=generator)
                loss = F.cross_entropy(model(_random_shift(images[batch], config.max_shift, generator)), labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval().requires_grad_(False)


def augmentation_gain(models: Mapping[str, Any], real_per_class: Sequence[int] = (10, 50),
                      seeds: Sequence[int] = (0, 1, 2), synth_per_class: int = 100, *, steps: int = 600,
                      test_split: str = "test", sample_kw: Mapping[str, dict] | None = None,
                      progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Held-out accuracy of the digits classifier trained on k real train digits per class, alone
    and with `synth_per_class` synthetic digits per class from each model (`augment`).

    For each k and seed: the k real images per class are drawn from the digits train split with
    that seed; the classifier (fixed recipe, `steps` steps, seeded) trains on them alone, then on
    them plus each model's synthetic set (drawn with the same seed); accuracy on the 447 test
    digits. Note the generative models' own training data: ones trained on the full labelled train
    split have seen more labels than the k per class (the table then shows what a generator's
    knowledge adds, not a few-label method).

    models      {name: class-conditional 8x8 digits model}; {} gives the real-only rows
    sample_kw   {name: keyword arguments of that model's sample} (e.g. {"diffusion": {"steps": 20}})
    Returns rows {"real_per_class", "source" ("real only" or the name), "synthetic_per_class",
    "accuracy_mean", "accuracy_std" (sample std over seeds; 0 for one seed), "accuracies"}.
    """
    from genkernels.data.digits import load_digits_tensors
    from genkernels.models._validate import check_int

    if not isinstance(models, Mapping):
        raise TypeError(f"models must be a dict {{name: model}}, got {type(models).__name__}")
    real_per_class = [check_int("real_per_class", k, 1) for k in real_per_class]
    seeds = [check_int("seeds", s, 0) for s in seeds]
    if not real_per_class or not seeds:
        raise ValueError("real_per_class and seeds must not be empty")
    synth_per_class = check_int("synth_per_class", synth_per_class, 1)
    steps = check_int("steps", steps, 1)
    for name, model in models.items():
        if num_classes(model) != 10:
            raise TypeError(f"models[{name!r}] must be a class-conditional digits model with 10 classes "
                            f"({', '.join(CONDITIONAL_FAMILIES)}), got {type(model).__name__} with "
                            f"{num_classes(model)} classes")
        shape = _item_shape(model)
        if shape is not None and shape != (1, 8, 8):
            raise ValueError(f"models[{name!r}] makes items of shape {shape}, the digits classifier needs (1, 8, 8)")
    train_x, train_y = load_digits_tensors("train", "float")
    test_x, test_y = load_digits_tensors(test_split, "float")
    synthetic: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
    for name, model in models.items():
        for seed in seeds:
            if progress:
                progress(f"sampling {synth_per_class}/class from {name} (seed {seed})")
            synthetic[name, seed] = augment(model, synth_per_class, seed=seed, **dict((sample_kw or {}).get(name, {})))

    def accuracy(images, labels, seed):
        classifier = train_digits_classifier(images, labels, steps=steps, seed=seed)
        with torch.no_grad():
            return (classifier(test_x).argmax(1) == test_y).double().mean().item()

    rows = []
    for k in real_per_class:
        results: dict[str, list[float]] = {"real only": []}
        for seed in seeds:
            real_x, real_y = _few_per_class(train_x, train_y, k, seed)
            results["real only"].append(accuracy(real_x, real_y, seed))
            for name in models:
                syn_x, syn_y = synthetic[name, seed]
                results.setdefault(name, []).append(
                    accuracy(torch.cat([real_x, syn_x.clamp(0, 1)]), torch.cat([real_y, syn_y]), seed))
            if progress:
                progress(f"k={k} seed {seed}: " + ", ".join(f"{n} {v[-1]:.3f}" for n, v in results.items()))
        for source, values in results.items():
            t = torch.tensor(values, dtype=torch.float64)
            rows.append({"real_per_class": k, "source": source,
                         "synthetic_per_class": 0 if source == "real only" else synth_per_class,
                         "accuracy_mean": t.mean().item(),
                         "accuracy_std": t.std().item() if len(values) > 1 else 0.0,
                         "accuracies": values})
    return rows


def format_gain_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows of `augmentation_gain` as a Markdown table (accuracy mean ± std over seeds)."""
    lines = ["| real/class | training data | synthetic/class | test accuracy (mean ± std) | seeds |",
             "|---:|---|---:|---|---:|"]
    for row in rows:
        lines.append(f"| {row['real_per_class']} | {row['source']} | {row['synthetic_per_class']} | "
                     f"{row['accuracy_mean']:.3f} ± {row['accuracy_std']:.3f} | {len(row['accuracies'])} |")
    return "\n".join(lines)


__all__ = ["encode", "decode", "slerp", "lerp", "interpolate", "interpolation_figure", "class_interpolation",
           "attribute_vector",
           "apply_attribute", "ink_attribute", "augment", "augmentation_gain", "train_digits_classifier",
           "format_gain_table", "num_classes", "LATENT_FAMILIES", "CONDITIONAL_FAMILIES", "METHODS"]
