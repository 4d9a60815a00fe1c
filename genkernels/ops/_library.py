"""The single torch.library namespace every genkernels op is defined in.

Route choice (measured in bench/bench_overhead.py): ops defined with `Library.define` and given
per-dispatch-key kernels with `Library.impl` cost a few microseconds per call on top of the work,
about a third of `torch.library.custom_op`'s Python wrapper, which matters for ops called once per
sampler step. Fake kernels and autograd use `torch.library.register_fake` / `register_autograd`.
Triton-backed ops use `torch.library.triton_op` so torch.compile can see into them.
"""
import torch

NAMESPACE = "genkernels"
lib = torch.library.Library(NAMESPACE, "DEF")


def define(schema: str, *, cpu, cuda=None, fake=None, tags=()):
    """Define `genkernels::<schema>` with a CPU kernel, an optional CUDA kernel and a fake."""
    name = schema.split("(", 1)[0]
    lib.define(schema, tags=tags)
    lib.impl(name, cpu, "CPU")
    lib.impl(name, cuda if cuda is not None else cpu, "CUDA")
    if fake is not None:
        torch.library.register_fake(f"{NAMESPACE}::{name}", fake, lib=lib)
    return getattr(torch.ops.genkernels, name)
