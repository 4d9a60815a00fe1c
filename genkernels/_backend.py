"""Which backends exist, which one an op uses, and how a user overrides the choice.

Backends:
  torch   the pure-PyTorch reference (always available; the CPU fallback of every model)
  cpu     C++ kernels in genkernels._C (OpenMP), for CPU tensors
  cuda    CUDA kernels in genkernels._cuda, for CUDA tensors
  triton  Triton kernels, for CUDA tensors (on CPU only under TRITON_INTERPRET=1, for tests)

The default for an op is the fastest backend it has for its tensors' device. The environment
variable GENKERNELS_BACKEND or the context manager `use_backend(name)` forces one; forcing one that
cannot run the op raises a ValueError that says why. GENKERNELS_BACKEND is read once, when
genkernels is imported (every op call asks for its backend, and reading os.environ costs more than
the rest of the choice); after changing it in a running process call `reload_environment()`.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import os

import torch

from genkernels import _ext

BACKENDS = ("torch", "cpu", "cuda", "triton")
_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("genkernels_backend", default=None)
_environment: str | None = None  # GENKERNELS_BACKEND as read by reload_environment (validated on use)


def reload_environment() -> None:
    """Re-read GENKERNELS_BACKEND (it is read once at import)."""
    global _environment
    _environment = os.environ.get("GENKERNELS_BACKEND", "").strip() or None


reload_environment()


def _check_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


@contextlib.contextmanager
def use_backend(name: str | None):
    """Force every genkernels op inside the block to use backend `name` (None: automatic)."""
    token = _override.set(None if name is None else _check_name(name))
    try:
        yield
    finally:
        _override.reset(token)


def forced_backend() -> str | None:
    name = _override.get()
    if name is not None:
        return name
    return None if _environment is None else _check_name(_environment)


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def _triton_importable() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton)"
    return None


def backend_status(name: str, device_type: str) -> str | None:
    """None if backend `name` can run on tensors of `device_type`, else the reason it cannot."""
    _check_name(name)
    if name == "torch":
        return None
    if name == "cpu":
        if device_type != "cpu":
            return f"the cpu backend runs on CPU tensors, got {device_type} tensors"
        return _ext.C_ERROR
    if name == "cuda":
        if device_type != "cuda":
            return f"the cuda backend runs on CUDA tensors, got {device_type} tensors"
        if _ext._cuda is None:
            return _ext.CUDA_ERROR
        count, err = _ext.cuda_device_count()
        if count == 0:
            return err or "genkernels._cuda sees no CUDA device (no GPU or no driver)"
        return None
    # triton
    reason = _triton_importable()
    if reason:
        return reason
    if device_type == "cpu" and not triton_interpret():
        return "triton runs on CUDA tensors (on CPU only with TRITON_INTERPRET=1 set before import)"
    if device_type not in ("cpu", "cuda"):
        return f"triton does not run on {device_type} tensors"
    if device_type == "cuda" and not torch.cuda.is_available():
        return "no CUDA device is available to torch"
    return None


_default_choice: dict[tuple[str, tuple[str, ...]], str] = {}


def select(op: str, device: torch.device, supported: tuple[str, ...]) -> str:
    """The backend op `op` uses for tensors on `device`, given the backends it implements."""
    return select_for(op, torch.device(device).type, supported)


def select_for(op: str, device_type: str, supported: tuple[str, ...]) -> str:
    """select() for a device type ("cpu", "cuda", ...): the per-call fast path of the ops."""
    if _override.get() is None and _environment is None:
        choice = _default_choice.get((device_type, supported))
        if choice is not None:
            return choice
    forced = forced_backend()
    if forced is not None:
        if forced not in supported:
            raise ValueError(
                f"genkernels backend {forced!r} was requested but {op} implements only {supported}"
            )
        reason = backend_status(forced, device_type)
        if reason is not None:
            raise ValueError(f"genkernels backend {forced!r} cannot run {op}: {reason}")
        return forced
    # Availability is fixed for the process, so the automatic choice is cached.
    preference = ("cuda", "triton") if device_type == "cuda" else ("cpu",)
    choice = next((n for n in preference if n in supported and backend_status(n, device_type) is None), "torch")
    _default_choice[(device_type, supported)] = choice
    return choice


def available_backends() -> dict[str, dict[str, str | None]]:
    """{backend: {device_type: None if usable else reason}} for cpu and cuda tensors."""
    return {name: {dev: backend_status(name, dev) for dev in ("cpu", "cuda")} for name in BACKENDS}
