"""The single torch.library namespace every genkernels op is defined in.

Route choice, measured with bench/bench_overhead.py on a 16-element CPU tensor (2-core CI machine,
torch 2.13): a bare `Library.define`/`impl` op costs about 3 us of dispatch, `register_autograd`
adds about 6 us (its Python autograd kernel), and `torch.library.custom_op` costs more than both
together. Ops therefore use `Library.define` + `impl` per dispatch key, `register_fake` and
`register_autograd`; and the public functions skip the dispatcher altogether (calling the kernel
directly) when no autograd graph, tracing or mode is involved - see ops/_args.direct_call_ok.
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
