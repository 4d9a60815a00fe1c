"""`genkernels info`: versions, devices, and which backends are built and usable (and why not)."""
from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def report() -> str:
    import torch

    import genkernels
    from genkernels import _backend, _ext

    lines = [
        f"genkernels {genkernels.__version__}",
        f"python     {platform.python_version()} ({sys.executable})",
        f"torch      {torch.__version__} (CUDA runtime {torch.version.cuda or 'none'})",
        f"triton     {_version('triton')}",
        f"numpy      {_version('numpy')}",
        "",
        "devices:",
        f"  cpu: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}",
    ]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"  cuda:{i}: {p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.1f} GiB")
    else:
        lines.append("  cuda: none visible to torch")
    lines += ["", "extensions:"]
    lines.append(f"  genkernels._C    {'built, OpenMP threads ' + str(_ext._C.num_threads()) if _ext._C else _ext.C_ERROR}")
    if _ext._cuda is not None:
        count, err = _ext.cuda_device_count()
        lines.append(f"  genkernels._cuda built, sees {count} device(s)" + (f" ({err})" if err else ""))
    else:
        lines.append(f"  genkernels._cuda {_ext.CUDA_ERROR}")
    lines += ["", "backends (usable for CPU tensors / CUDA tensors):"]
    for name, per_device in _backend.available_backends().items():
        cells = [f"{dev}: {'yes' if reason is None else 'no - ' + reason}" for dev, reason in per_device.items()]
        lines.append(f"  {name:7s} " + "; ".join(cells))
    forced = _backend.forced_backend()
    lines.append(f"\nforced backend: {forced or 'none (automatic: fastest available per op and device)'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    argparse.ArgumentParser(prog="genkernels info", description=__doc__).parse_args(argv)
    print(report())
    return 0
