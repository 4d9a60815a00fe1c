"""Loads the compiled extensions and turns tensors into what they take (pointers, sizes, codes).

The extensions never link libtorch: every launcher receives data pointers, element counts, a dtype
code and, for CUDA, the device index and the raw stream of the tensor's device.
"""
from __future__ import annotations

import torch

try:
    from genkernels import _C  # type: ignore[attr-defined]

    C_ERROR = None
except ImportError as exc:  # a source tree used in place, or a failed build
    _C = None
    C_ERROR = f"genkernels._C is not built ({exc}); run `pip install -e .`"

try:
    from genkernels import _cuda  # type: ignore[attr-defined]

    CUDA_ERROR = None
except ImportError as exc:
    _cuda = None
    CUDA_ERROR = f"genkernels._cuda is not built ({exc}); install with nvcc on PATH"

# Must match csrc/common/dtype.h.
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def dtype_code(tensor: torch.Tensor) -> int:
    return DTYPE_CODES[tensor.dtype]


def ptr(tensor: torch.Tensor | None) -> int:
    """Data pointer, or 0 for an absent optional tensor."""
    return 0 if tensor is None else tensor.data_ptr()


def stream_of(tensor: torch.Tensor) -> int:
    return torch.cuda.current_stream(tensor.device).cuda_stream


def cuda_device_count() -> tuple[int, str | None]:
    """Devices the CUDA module itself sees (it carries its own static runtime)."""
    if _cuda is None:
        return 0, CUDA_ERROR
    try:
        return int(_cuda.device_count()), None
    except RuntimeError as exc:
        return 0, str(exc)
