"""Argument checks and normalisation shared by the diffusion ops (validated once, at the boundary)."""
from __future__ import annotations

import torch

from genkernels import _ext

PREDICTIONS = {"epsilon": 0, "sample": 1, "v": 2}
FAST_DTYPES = tuple(_ext.DTYPE_CODES)


def prediction_code(prediction: str) -> int:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {tuple(PREDICTIONS)}, got {prediction!r}")
    return PREDICTIONS[prediction]


def check_tensor(name: str, x, *, like: torch.Tensor | None = None, like_name: str = "x") -> torch.Tensor:
    """x must be a floating tensor with at least one dim; with `like`, same shape/dtype/device."""
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


def timesteps(name: str, t, batch: int, device: torch.device, num_steps: int, *, allow_final: bool = False):
    """Normalise a timestep argument to (tensor or None, scalar) as the kernels take it.

    t may be a Python int (one step for the whole batch) or an integer tensor of shape (batch,)
    (one step per sample), or of shape () / (1,). Valid steps are 0..num_steps-1 (and -1, "past
    the last step", where allow_final). CPU tensors are range-checked here; CUDA tensors are not
    (that would synchronise): an out-of-range step there yields NaN outputs.
    """
    low = -1 if allow_final else 0
    if isinstance(t, bool):
        raise TypeError(f"{name} must be an int or an integer tensor, got bool")
    if isinstance(t, int):
        if not low <= t < num_steps:
            raise ValueError(f"{name} must be in [{low}, {num_steps}) for this schedule, got {t}")
        return None, t
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
        lo, hi = int(t.min()), int(t.max())
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


def device_index(x: torch.Tensor) -> int:
    return x.device.index if x.device.index is not None else torch.cuda.current_device()


def choose_backend(op: str, x: torch.Tensor) -> str:
    """Backend for a diffusion op on x: the fast kernels store fp32/fp16/bf16; others use torch."""
    from genkernels import _backend

    backend = _backend.select(op, x.device, ("torch", "cpu", "cuda"))
    if backend != "torch" and x.dtype not in FAST_DTYPES:
        if _backend.forced_backend() == backend:
            raise ValueError(f"{op}: the {backend} backend stores float32/float16/bfloat16, got {x.dtype}")
        return "torch"
    return backend


def launch(backend: str, kernel: str, *args, like: torch.Tensor) -> None:
    """Call kernel `kernel` of the C++ (cpu) or CUDA module; CUDA gets device and current stream."""
    if backend == "cpu":
        getattr(_ext._C, kernel)(*args)
    else:
        getattr(_ext._cuda, kernel)(*args, device_index(like), _ext.stream_of(like))


def as_2d(x: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> contiguous (N, D) view the kernels index as n * D + i."""
    per_sample = 1
    for size in x.shape[1:]:
        per_sample *= size
    return x.contiguous().view(x.shape[0], per_sample)


def kernel_steps(t: torch.Tensor | None) -> int:
    """Pointer the kernels read per-sample steps from (0: the scalar applies to every sample)."""
    return 0 if t is None else t.data_ptr()


def dense(t: torch.Tensor | None) -> torch.Tensor | None:
    """int64 contiguous steps / tables as the kernels index them (no copy when already so)."""
    return None if t is None else t.contiguous()
