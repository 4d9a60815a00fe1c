"""Counter-based normal noise: Philox4x32-10 + Box-Muller, identical to csrc/common/philox.h.

The sampler steps draw their noise inside the kernel from (seed, offset, sample, element), so no
noise tensor is written or read and the same seed gives the same samples on CPU and GPU. This file
holds the pure-PyTorch twin of that generator (the reference the tests and the CPU fallback use),
and `philox_normal`, which materialises the noise when a caller wants it as a tensor.

Layout: element i of sample n belongs to group g = i // 4 and lane i % 4. Each group is one Philox
call with counter (g lo, g hi, offset lo, offset hi) and key (seed lo, seed hi ^ n lo); its four
32-bit outputs give two Box-Muller pairs, using 24 bits each for uniforms in (0, 1).
"""
from __future__ import annotations

import math

import torch

from genkernels import _backend, _ext

_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK32 = 0xFFFFFFFF
_TWO_PI = 6.283185307179586


# ---- reference --------------------------------------------------------------------------------
def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of a * b for 32-bit a and int64 tensor b, without int64 overflow."""
    p_hi = (b >> 16) * a  # < 2^48
    q = ((p_hi & 0xFFFF) << 16) + (b & 0xFFFF) * a  # < 2^49
    return (p_hi >> 16) + (q >> 32), q & _MASK32


def _philox4x32_10(c0, c1, c2, c3, k0, k1):
    for round_ in range(10):
        if round_ > 0:
            k0 = (k0 + _W0) & _MASK32
            k1 = (k1 + _W1) & _MASK32
        hi0, lo0 = _mulhilo(_M0, c0)
        hi1, lo1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def _uniform24(bits: torch.Tensor) -> torch.Tensor:
    return (bits >> 8).to(torch.float32) * 5.9604644775390625e-08 + 2.98023223876953125e-08


def philox_normal_ref(num_samples: int, numel: int, seed: int, offset: int = 0, device=None) -> torch.Tensor:
    """(num_samples, numel) float32 standard normals, bit-for-bit the kernel's bit stream."""
    groups = (numel + 3) // 4
    g = torch.arange(groups, device=device, dtype=torch.int64).unsqueeze(0)
    n = torch.arange(num_samples, device=device, dtype=torch.int64).unsqueeze(1)
    zeros = torch.zeros_like(g)
    k0 = seed & _MASK32
    k1 = ((seed >> 32) & _MASK32) ^ (n & _MASK32)
    r0, r1, r2, r3 = _philox4x32_10(
        g & _MASK32, (g >> 32) & _MASK32, zeros + (offset & _MASK32), zeros + ((offset >> 32) & _MASK32), k0, k1
    )
    rad0 = torch.sqrt(-2.0 * torch.log(_uniform24(r0)))
    rad1 = torch.sqrt(-2.0 * torch.log(_uniform24(r2)))
    th0, th1 = _TWO_PI * _uniform24(r1), _TWO_PI * _uniform24(r3)
    z = torch.stack([rad0 * torch.cos(th0), rad0 * torch.sin(th0), rad1 * torch.cos(th1), rad1 * torch.sin(th1)], -1)
    return z.reshape(num_samples, groups * 4)[:, :numel]


# ---- public function --------------------------------------------------------------------------
def philox_normal(shape, seed: int, offset: int = 0, *, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of `shape` = (N, ...) as the fused sampler steps draw it.

    Sample n's elements (flattened) come from stream (seed, offset, n). seed and offset are
    integers in [0, 2^63). Returns a tensor of `dtype` (float32, float16, bfloat16, or float64:
    the float32 draws, exactly, from the reference) on `device`.
    """
    shape = tuple(int(s) for s in shape)
    _check_seed(seed, offset)
    if len(shape) == 0:
        raise ValueError("shape must have a leading sample dimension, got ()")
    if dtype not in _ext.DTYPE_CODES and dtype is not torch.float64:
        raise TypeError(f"dtype must be torch.float32, float16, bfloat16 or float64, got {dtype!r}")
    device = torch.device(device)
    num_samples, numel = shape[0], math.prod(shape[1:])
    backend = _backend.select("philox_normal", device, ("torch", "cpu", "cuda"))
    if backend == "torch" or num_samples * numel == 0 or dtype is torch.float64:
        return philox_normal_ref(num_samples, numel, seed, offset, device).to(dtype).reshape(shape)
    out = torch.empty(shape, device=device, dtype=dtype)
    if backend == "cpu":
        _ext._C.philox_normal(out=out.data_ptr(), N=num_samples, D=numel, seed=seed, offset=offset,
                              dtype=_ext.dtype_code(out))
    else:
        _ext._cuda.philox_normal(out=out.data_ptr(), N=num_samples, D=numel, seed=seed, offset=offset,
                                 dtype=_ext.dtype_code(out),
                                 device=device.index if device.index is not None else torch.cuda.current_device(),
                                 stream=_ext.stream_of(out))
    return out


def _check_seed(seed, offset):
    for name, value in (("seed", seed), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if not 0 <= value < 2**63:
            raise ValueError(f"{name} must be in [0, 2**63), got {value}")
