"""genkernels: fused GPU kernels for generative models, and a model zoo that runs everywhere.

Ops pick the fastest backend for their tensors' device (C++ on CPU, CUDA/Triton on GPU) and fall
back to a pure-PyTorch reference; `use_backend(name)` or GENKERNELS_BACKEND forces one.
Importing genkernels has no side effects: nothing is compiled, tuned or printed.
"""
from genkernels._backend import BACKENDS, available_backends, use_backend

__version__ = "0.1.0"

__all__ = ["BACKENDS", "available_backends", "use_backend", "__version__"]
