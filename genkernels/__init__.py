"""genkernels: fused GPU kernels for generative models, and a model zoo that runs everywhere.

Ops pick the fastest backend for their tensors' device (C++ on CPU, CUDA/Triton on GPU) and fall
back to a pure-PyTorch reference; `use_backend(name)` or GENKERNELS_BACKEND forces one.
Importing genkernels has no side effects: nothing is compiled, tuned or printed, and the op
modules load on first use.

    genkernels.attention(q, k, v, causal=True)          fused flash attention (Triton on GPU)
    genkernels.attention_varlen(...), attention_decode(...)
    genkernels.diffusion                                schedules, fused steps, samplers
    genkernels.nn / genkernels.models / genkernels.train / genkernels.data / genkernels.metrics
"""
import importlib

from genkernels._backend import BACKENDS, available_backends, use_backend

__version__ = "0.1.0"

_LAZY = {
    "attention": "genkernels.ops.attention",
    "attention_varlen": "genkernels.ops.attention",
    "attention_decode": "genkernels.ops.attention_decode",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'genkernels' has no attribute {name!r}")


__all__ = ["BACKENDS", "available_backends", "use_backend", "attention", "attention_varlen", "attention_decode",
           "__version__"]
