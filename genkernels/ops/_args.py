"""Argument checks and launch helpers shared by the C++/CUDA-backed ops (validated once, at the boundary).

The checks run on every public call, so each has a fast path for valid input (a few attribute
reads) and builds its detailed message only on failure.
"""
from __future__ import annotations

import functools

import torch

from genkernels import _backend, _ext
from genkernels._ext import ptr  # noqa: F401  (0 for an absent optional tensor)

FAST_DTYPES = tuple(_ext.DTYPE_CODES)
# Elements per partial sum of the deterministic reductions (diffusion_sse, reparam_kl's KL): one
# partial per (sample, chunk), summed in a fixed order, so results do not depend on thread count.
# Must match gk::kChunk (csrc/common/macros.h).
CHUNK = 4096
_BACKENDS = ("torch", "cpu", "cuda")
_COMMON_FLOATS = frozenset((torch.float32, torch.float16, torch.bfloat16, torch.float64))


def num_chunks(numel: int) -> int:
    """Partial sums per sample of `numel` elements (see CHUNK)."""
    return (numel + CHUNK - 1) // CHUNK


def partial_sums(n: int, chunks: int, like: torch.Tensor) -> torch.Tensor:
    """The flat float32 buffer a reduction kernel writes one partial per (sample, chunk) into."""
    return torch.empty(n * chunks, dtype=torch.float32, device=like.device)


def sum_partials(partials: torch.Tensor, n: int, chunks: int) -> torch.Tensor:
    """(N,) per-sample sums of a partial_sums buffer, each sample's chunks added in order."""
    return partials if chunks == 1 else partials.view(n, chunks).sum(1)


def check_tensor(name: str, x, *, like: torch.Tensor | None = None, like_name: str = "x") -> torch.Tensor:
    """x must be a floating tensor with at least one dim; with `like`, same shape/dtype/device."""
    if (isinstance(x, torch.Tensor) and x.dtype in _COMMON_FLOATS and x.ndim
            and (like is None or (x.dtype is like.dtype and x.shape == like.shape and x.device == like.device))):
        return x
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() == 0:
        raise ValueError(f"{name} must have a leading batch dimension, got a 0-dim tensor")
    if like is not None:
        if x.shape != like.shape:
            raise ValueError(f"{name} must have the shape of {like_name} {tuple(like.shape)}, got {tuple(x.shape)}")
        if x.dtype != like.dtype:
            raise TypeError(f"{name} must have the dtype of {like_name} ({like.dtype}), got {x.dtype}")
        if x.device != like.device:
            raise ValueError(f"{name} must be on {like_name}'s device {like.device}, got {x.device}")
    return x


def choose_backend(op: str, x: torch.Tensor) -> str:
    """Backend for a C++/CUDA-backed op on x: the fast kernels store fp32/fp16/bf16; others use torch."""
    backend = _backend.select_for(op, "cpu" if x.is_cpu else x.device.type, _BACKENDS)
    if backend != "torch" and x.dtype not in FAST_DTYPES:
        if _backend.forced_backend() == backend:
            raise ValueError(f"{op}: the {backend} backend stores float32/float16/bfloat16, got {x.dtype}")
        return "torch"
    return backend


def kernel(backend: str, name: str, *, like: torch.Tensor):
    """Entry point `name` of the C++ (cpu) or CUDA module, to be called with keyword arguments only,
    named as in csrc/<family>/<family>_args.h; the CUDA one is bound to the device and current
    stream of `like`. Usage: kernel(backend, "q_sample", like=x0)(x0=..., noise=..., ...).

    Returning the function (rather than forwarding **kwargs) keeps a CPU launch a single vectorcall
    with no keyword dict built on the way: this is on the path of every no-grad op call."""
    if backend == "cpu":
        return getattr(_ext._C, name)
    return functools.partial(getattr(_ext._cuda, name), device=device_index(like), stream=_ext.stream_of(like))


def rows(x: torch.Tensor) -> tuple[int, int]:
    """(N, D) of an (N, ...) tensor as the kernels index it (n * D + i), without building a view."""
    n = x.shape[0]
    if n:
        return n, x.numel() // n
    per_sample = 1
    for size in x.shape[1:]:
        per_sample *= size
    return n, per_sample


def device_index(x: torch.Tensor) -> int:
    return x.device.index if x.device.index is not None else torch.cuda.current_device()


def dense(t: torch.Tensor | None) -> torch.Tensor | None:
    """Tensors laid out densely as the kernels index them (no copy when already so)."""
    return None if t is None else t.contiguous()
