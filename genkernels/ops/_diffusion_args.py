"""Argument handling specific to the diffusion ops: parameterisations and timesteps."""
from __future__ import annotations

import torch

from genkernels.ops._args import (  # noqa: F401  (re-exported for the diffusion op files)
    CHUNK, _ext, check_tensor, choose_backend, dense, kernel, num_chunks, partial_sums, ptr, rows, sum_partials,
)


PREDICTIONS = {"epsilon": 0, "sample": 1, "v": 2}


def prediction_code(prediction: str) -> int:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {tuple(PREDICTIONS)}, got {prediction!r}")
    return PREDICTIONS[prediction]


_INTEGER_DTYPES = frozenset((torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8))


def timesteps(name: str, t, batch: int, device: torch.device, num_steps: int, *, allow_final: bool = False):
    """Normalise a timestep argument to (tensor or None, scalar) as the kernels take it.

    t may be a Python int (one step for the whole batch) or an integer tensor of shape (batch,)
    (one step per sample), or of shape () / (1,). Valid steps are 0..num_steps-1 (and -1, "past
    the last step", where allow_final). CPU tensors are range-checked here; CUDA tensors are not
    (that would synchronise): an out-of-range step there yields NaN outputs.
    """
    low = -1 if allow_final else 0
    # Fast paths (a sampling loop calls this every step): an in-range int, or a one-element CPU
    # integer tensor read as an int. Anything else takes the checks below.
    if type(t) is int:
        if low <= t < num_steps:
            return None, t
    elif (type(t) is torch.Tensor and t.is_cpu and t.dtype in _INTEGER_DTYPES and t.ndim <= 1 and t.numel() == 1
          and not torch.compiler.is_compiling()):
        step = t.item()
        if low <= step < num_steps:
            return None, step
    if isinstance(t, bool):
        raise TypeError(f"{name} must be an int or an integer tensor, got bool")
    if isinstance(t, int):
        if not low <= t < num_steps:
            raise ValueError(f"{name} must be in [{low}, {num_steps}) for this schedule, got {t}")
        return None, int(t)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be an int or an integer tensor, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype, got {t.dtype}")
    compiling = torch.compiler.is_compiling()
    if t.numel() == 1 and t.dim() <= 1 and (t.device.type == "cpu" or batch != 1):
        if t.device.type == "cpu" and not compiling:
            return timesteps(name, int(t.item()), batch, device, num_steps, allow_final=allow_final)
        t = t.reshape(1).expand(batch)
    if t.dim() != 1 or t.shape[0] != batch:
        raise ValueError(f"{name} must have shape ({batch},) (one step per sample) or be an int, got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} must be on the inputs' device {device}, got {t.device}")
    if t.device.type == "cpu" and t.numel() > 0 and not compiling:  # data-dependent: eager only
        lo, hi = (int(v) for v in t.aminmax())
        if lo < low or hi >= num_steps:
            raise ValueError(f"{name} must be in [{low}, {num_steps}) for this schedule, got values in [{lo}, {hi}]")
    return t.to(torch.int64).contiguous(), 0


def gather_steps(table: torch.Tensor, t: torch.Tensor | None, t_scalar: int, batch: int, dtype=torch.float64):
    """(alpha-bar, 1 - alpha-bar) per sample as (batch, 1) tensors; step -1 maps to (1, 0)."""
    if t is None:
        t = torch.full((batch,), t_scalar, dtype=torch.int64, device=table.device)
    final = t < 0
    rows = table[t.clamp(min=0)]
    ac = torch.where(final, torch.ones_like(rows[:, 0]), rows[:, 0])
    om = torch.where(final, torch.zeros_like(rows[:, 1]), rows[:, 1])
    return ac.to(dtype).unsqueeze(1), om.to(dtype).unsqueeze(1)


def per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,) or (N, 1) per-sample values in like's dtype, shaped to broadcast over like (N, ...)."""
    return values.to(like.dtype).view((like.shape[0],) + (1,) * (like.dim() - 1))


def alpha_scales(table: torch.Tensor, t, t_scalar: int, like: torch.Tensor):
    """(sqrt(alpha-bar_t), sqrt(1 - alpha-bar_t)) per sample, broadcastable over like, in its dtype
    (the reference twin of alpha_scales in csrc/diffusion/diffusion.h)."""
    ac, om = gather_steps(table, t, t_scalar, like.shape[0])
    return per_sample(ac.sqrt(), like), per_sample(om.sqrt(), like)
