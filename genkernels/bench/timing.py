"""Timing helpers shared by `genkernels bench` and the pytest-benchmark cases in bench/."""
from __future__ import annotations

import statistics
import time

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, device, *, warmup: int = 3, repeat: int = 15, min_time: float = 0.02) -> float:
    """Median seconds per call. Each sample runs enough calls to last about `min_time`.

    The warm-up calls are excluded, so first-call costs (torch.compile, Triton JIT, caches) are not timed.
    """
    return measure_interleaved({"fn": fn}, torch.device(device), warmup=warmup, repeat=repeat,
                               min_time=min_time)["fn"]


def measure_interleaved(fns: dict, device, *, warmup: int = 3, repeat: int = 15, min_time: float = 0.02) -> dict:
    """Median seconds per call of each function, the samples taken in turns (one sample of each
    function per round), so that a load change on a shared machine hits every provider alike and
    the ratios stay meaningful. Warm-up calls (torch.compile's compilation included) are excluded."""
    inner = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        inner[name] = max(1, int(min_time / max(time.perf_counter() - start, 1e-7)))
    samples = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            synchronize(device)
            samples[name].append((time.perf_counter() - start) / inner[name])
    return {name: statistics.median(v) for name, v in samples.items()}


def copy_bandwidth(device, numel: int = 1 << 26) -> float:
    """Measured device copy bandwidth in bytes/s (bytes read + bytes written), the memory roofline."""
    device = torch.device(device)
    src = torch.empty(numel, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    seconds = measure(lambda: dst.copy_(src), device, repeat=10)
    return 2 * src.numel() * src.element_size() / seconds


def matmul_peak(device, dtype=torch.bfloat16, size: int = 8192) -> float:
    """Measured dense matmul rate in FLOP/s (the compute roofline for attention), via torch.matmul."""
    device = torch.device(device)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = measure(lambda: a @ b, device, repeat=10)
    return 2.0 * size**3 / seconds


def environment(device) -> dict:
    """Device and versions, recorded beside every result."""
    import platform

    import genkernels

    device = torch.device(device)
    env = {
        "genkernels": genkernels.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    else:
        env["device_name"] = platform.processor() or platform.machine()
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        pass
    return env
