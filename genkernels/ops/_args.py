"""Argument checks and launch helpers shared by the C++/CUDA-backed ops (validated once, at the boundary)."""
from __future__ import annotations

import torch

from genkernels import _backend, _ext
from genkernels._ext import ptr  # noqa: F401  (0 for an absent optional tensor)

FAST_DTYPES = tuple(_ext.DTYPE_CODES)


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


def choose_backend(op: str, x: torch.Tensor) -> str:
    """Backend for a C++/CUDA-backed op on x: the fast kernels store fp32/fp16/bf16; others use torch."""
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


def untraced(*tensors: torch.Tensor | None) -> bool:
    """Nothing traces or transforms a call on these tensors: no torch.compile or make_fx, no
    torch-function/dispatch mode, no functorch transform, and plain tensors (no subclasses)."""
    if (torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() or torch._C._len_torch_function_stack()
            or torch._C._functorch.peek_interpreter_stack() is not None):
        return False
    return all(t is None or type(t) is torch.Tensor for t in tensors)


def direct_call_ok(*tensors: torch.Tensor | None) -> bool:
    """True when a public function may call an op's kernel directly instead of through the dispatcher.

    That is equivalent whenever no autograd graph is needed and nothing traces (see untraced); it
    saves the dispatcher and autograd-wrapper hops (tens of microseconds), which matters for ops
    called once per sampler step.
    """
    if not untraced(*tensors):
        return False
    return not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors))


def as_2d(x: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> contiguous (N, D) view the kernels index as n * D + i."""
    x = x.contiguous()
    if x.numel():
        return x.view(x.shape[0], -1)
    per_sample = 1
    for size in x.shape[1:]:
        per_sample *= size
    return x.view(x.shape[0], per_sample)


def device_index(x: torch.Tensor) -> int:
    return x.device.index if x.device.index is not None else torch.cuda.current_device()


def dense(t: torch.Tensor | None) -> torch.Tensor | None:
    """Steps / tables laid out densely as the kernels index them (no copy when already so)."""
    return None if t is None else t.contiguous()
