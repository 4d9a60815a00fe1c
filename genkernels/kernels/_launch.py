"""How genkernels launches its Triton kernels: shared by every Triton-backed op (attention today,
the masked-convolution kernels next).

An op body (the function registered with torch.library.triton_op) launches through
`launch = launcher(*tensors)` inside `with device_scope(first_tensor, launch):`, and the config
lists of each kernel module ask `capability()` which GPU generation they tune for.
"""
from __future__ import annotations

import contextlib
import functools

import torch
from torch.library import wrap_triton

from genkernels._backend import triton_interpret
from genkernels.ops._library import untraced


def identity(kernel):
    """The launcher for direct launches: the kernel itself."""
    return kernel


def launcher(*tensors):
    """How an op body launches Triton kernels: wrap_triton records launches for torch.compile and
    fake-tensor tracing, but in eager mode outside the dispatcher's fast path it cost about 0.6 ms
    per launch on an H100 (bench/attention_overhead.py); with plain tensors and nothing tracing the
    kernels are launched directly."""
    return identity if untraced(*tensors) else wrap_triton


def device_scope(tensor: torch.Tensor, launch):
    """Triton launches on the current CUDA device and its current stream: make that `tensor`'s
    device for direct launches (tensors on cuda:1 while cuda:0 is current). Traced launches get
    their device guards from the compiler."""
    if launch is identity and tensor.is_cuda:
        return torch.cuda.device(tensor.device)
    return contextlib.nullcontext()


def capability() -> tuple[int, int]:
    """(major, minor) compute capability the config lists tune for; (0, 0) in the interpreter or
    without a GPU (the config functions then pick their smallest, safest tiles)."""
    if triton_interpret() or not torch.cuda.is_available():
        return (0, 0)
    return device_capability(torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def device_capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)  # queried once per device, not per launch


@functools.lru_cache(maxsize=None)
def multiprocessor_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _tma_scratch(size: int, alignment: int, stream):
    return torch.empty(size, dtype=torch.int8, device="cpu" if triton_interpret() else "cuda")


def set_tma_allocator():
    """Device-side tensor descriptors (TMA) need scratch memory from triton's allocator, which it
    keeps in a ContextVar: each thread (autograd's included) needs it set, so set it per launch."""
    import triton  # here, not at the top: the ops import this module on machines without triton

    triton.set_allocator(_tma_scratch)


__all__ = ["identity", "launcher", "device_scope", "capability", "device_capability", "multiprocessor_count",
           "set_tma_allocator"]
