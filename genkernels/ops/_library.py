"""Where every genkernels op is registered, and the one place that decides how a call reaches it.

An op file defines its op once with `define(schema, impl=, fake=, setup_context=, backward=)` (or,
for an op registered another way such as `torch.library.triton_op`, wraps it with `register`) and
then calls the returned `Op` like a function. Each call takes the cheapest route that gives the
same result as the registered op:

  1. no autograd graph is needed and nothing traces -> `impl(*args)` directly;
  2. a gradient is needed and nothing traces        -> an `autograd.Function` built once from
     impl / setup_context / backward (the registered op's autograd formula, minus the dispatcher);
  3. anything traces (torch.compile, make_fx, opcheck, functorch transforms, torch-function or
     dispatch modes, tensor subclasses) -> the registered op `torch.ops.<ns>.<name>.default`.

Why: on a 16-element CPU tensor (2-core CI machine, torch 2.13, bench/bench_overhead.py) the
dispatcher hop of a `Library.define` op costs about 3 us, `register_autograd`'s Python autograd
kernel about 6 us more and `torch.library.custom_op` more than both; ops called once per sampler
step or per generated sample cannot pay that. Routes 1 and 2 run the same impl and the same backward
as route 3, so they give bit-identical values and gradients (tests/ops/test_library.py).

Backward functions call other `Op`s (e.g. the op's `*_backward` op): inside an eager backward grad
mode is off and nothing traces, so those take route 1; under torch.compile they take route 3.
"""
from __future__ import annotations

import torch

NAMESPACE = "genkernels"
lib = torch.library.Library(NAMESPACE, "DEF")

# Tensor types whose calls may skip the dispatcher: no __torch_dispatch__ / __torch_function__ of
# their own (Parameter disables torch-function handling and dispatches as a plain tensor).
_PLAIN = frozenset((torch.Tensor, torch.nn.Parameter))
_is_compiling = torch.compiler.is_compiling
_function_modes = torch._C._len_torch_function_stack
_dispatch_modes = torch._C._len_torch_dispatch_stack
_functorch_level = torch._C._functorch.peek_interpreter_stack
_grad_enabled = torch.is_grad_enabled


def untraced(*tensors: torch.Tensor | None) -> bool:
    """Nothing traces or transforms a call on these tensors: no torch.compile or make_fx, no
    torch-function/dispatch mode, no functorch transform, and plain tensors (no subclasses)."""
    # is_compiling first: under dynamo it is constant True and the other checks are never traced.
    if _is_compiling() or _function_modes() or _dispatch_modes() or _functorch_level() is not None:
        return False
    for t in tensors:
        if t is not None and type(t) not in _PLAIN:
            return False
    return True


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    """An autograd graph must be recorded for a call on these tensors."""
    if not _grad_enabled():
        return False
    for t in tensors:
        if t is not None and t.requires_grad:
            return True
    return False


class Op:
    """A registered op plus its routes; call it with the schema's arguments, positionally."""

    __slots__ = ("name", "registered", "impl", "_tensors", "_lists", "_function", "__weakref__")

    def __init__(self, registered: torch._ops.OpOverload, impl, setup_context=None, backward=None):
        self.registered = registered
        self.name = registered._schema.name
        self.impl = impl
        # Argument positions that may hold tensors, read once from the schema.
        self._tensors, self._lists = [], []
        for i, arg in enumerate(registered._schema.arguments):
            if arg.kwarg_only:
                raise ValueError(f"{self.name}: routed ops take positional arguments only, got "
                                 f"keyword-only {arg.name!r}")
            kind = arg.type.getElementType() if isinstance(arg.type, torch.OptionalType) else arg.type
            if isinstance(kind, torch.TensorType):
                self._tensors.append(i)
            elif isinstance(kind, torch.ListType) and "Tensor" in str(kind):
                self._lists.append(i)
        self._function = None
        if backward is not None:
            self._function = _autograd_function(self.name, impl, setup_context, backward)
            if self._lists or any("Tensor[]" in str(r.type) or "List[Tensor]" in str(r.type)
                                  for r in registered._schema.returns):
                # autograd.Function takes tensor lists only through this wrapper, as
                # register_autograd's own Function does (torch/_library/autograd.py).
                from torch._library.autograd import supports_tensorlist

                self._function = supports_tensorlist(self._function)

    def __call__(self, *args):
        # untraced() and needs_grad() over the schema's tensor arguments, inlined: this runs on
        # every call, and the route check must stay well under a microsecond.
        if _is_compiling() or _function_modes() or _dispatch_modes() or _functorch_level() is not None:
            return self.registered(*args)
        grad = False
        for i in self._tensors:
            t = args[i]
            if t is not None:
                if type(t) not in _PLAIN:
                    return self.registered(*args)
                if t.requires_grad:
                    grad = True
        for i in self._lists:
            for t in args[i]:
                if t is not None:
                    if type(t) not in _PLAIN:
                        return self.registered(*args)
                    if t.requires_grad:
                        grad = True
        if not (grad and _grad_enabled()):
            return self.impl(*args)
        if self._function is None:  # no autograd formula: let the dispatcher say so
            return self.registered(*args)
        return self._function.apply(*args)

    def __repr__(self) -> str:
        return f"<genkernels op {self.registered}>"


def _autograd_function(name: str, impl, setup_context, backward):
    """Route 2: the autograd.Function torch.library.register_autograd would build, without the
    dispatcher (same forward body, same setup_context, same backward)."""

    def forward(ctx, *inputs):
        output = impl(*inputs)
        if setup_context is not None:
            setup_context(ctx, inputs, output)
        return output

    def backward_(ctx, *grads):
        return backward(ctx, *grads)

    return type(f"Eager_{name.replace('::', '_')}", (torch.autograd.Function,),
                {"forward": staticmethod(forward), "backward": staticmethod(backward_)})


def define(schema: str, *, impl, fake=None, setup_context=None, backward=None, tags=()) -> Op:
    """Define `genkernels::<schema>` with `impl` as its CPU and CUDA kernel, `fake` as its fake
    (meta) kernel and, with `backward`, the autograd formula (torch.library.register_autograd
    signatures); returns the routed `Op`."""
    name = schema.split("(", 1)[0]
    lib.define(schema, tags=tags)
    lib.impl(name, impl, "CPU")
    lib.impl(name, impl, "CUDA")
    qualname = f"{NAMESPACE}::{name}"
    if fake is not None:
        torch.library.register_fake(qualname, fake, lib=lib)
    if backward is not None:
        torch.library.register_autograd(qualname, backward, setup_context=setup_context, lib=lib)
    return Op(getattr(torch.ops.genkernels, name).default, impl, setup_context, backward)


def register(op, *, impl, setup_context=None, backward=None) -> Op:
    """Route calls of an op registered another way (torch.library.triton_op / custom_op, or a
    Library op) through the same three routes. `op`: its OpOverload (or packet: `.default`) or
    the object triton_op/custom_op returned. `impl` is the eager body the op runs; with `backward`,
    the autograd formula is registered on the op as well (replacing any registered before)."""
    overload = _overload(op)
    if backward is not None:
        torch.library.register_autograd(overload.name(), backward, setup_context=setup_context)
    return Op(overload, impl, setup_context, backward)


def _overload(op) -> torch._ops.OpOverload:
    if isinstance(op, torch._ops.OpOverload):
        return op
    if isinstance(op, torch._ops.OpOverloadPacket):
        return op.default
    inner = getattr(op, "_opoverload", None)  # torch.library.CustomOpDef (custom_op, triton_op)
    if isinstance(inner, torch._ops.OpOverload):
        return inner
    raise TypeError(f"register() takes an OpOverload, OpOverloadPacket or custom_op/triton_op, got {type(op).__name__}")
