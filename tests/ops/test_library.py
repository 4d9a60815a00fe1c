"""ops/_library.py: the three routes of a call give the same values and gradients, bit for bit, and
each call takes the route it should (direct kernel, eager autograd.Function, registered op)."""
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from genkernels.diffusion import make_schedule
from genkernels.ops._library import Op, define, register
from genkernels.ops.diffusion_loss import diffusion_sse_op
from genkernels.ops.q_sample import q_sample_op
from genkernels.ops.reparam_kl import reparam_kl_op
from genkernels.ops.sampler_step import DDIM, DDPM, sampler_step_op

TABLE = make_schedule("cosine", 50).table("cpu")
T = torch.tensor([3, 49, 0])


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# (op, args builder, positions of the differentiable inputs)
CASES = {
    "q_sample": (q_sample_op, lambda: (_x(3, 2, 5), _x(3, 2, 5, seed=1), T, 0, TABLE, False), (0, 1)),
    "q_sample_v": (q_sample_op, lambda: (_x(3, 7), _x(3, 7, seed=1), None, 17, TABLE, True), (0, 1)),
    **{f"diffusion_sse_{p}": (diffusion_sse_op, lambda p=p: (_x(3, 9), _x(3, 9, seed=1), _x(3, 9, seed=2), T, 0,
                                                             TABLE, p), (0, 1, 2)) for p in range(3)},
    "ddpm_step": (sampler_step_op, lambda: (_x(3, 6), None, _x(3, 6, seed=1), T, 0, None, 0, TABLE, DDPM, 0, 1.0,
                                            math.inf, 0.0, False, 7, 1), (0, 2)),
    "ddim_step_guided_clipped": (sampler_step_op, lambda: (_x(3, 6), _x(3, 6, seed=2), _x(3, 6, seed=1), None, 30,
                                                           torch.tensor([-1, 4, 20]), 0, TABLE, DDIM, 2, 3.0, 1.0,
                                                           0.5, False, 7, 1), (0, 1, 2)),
    "reparam_kl": (reparam_kl_op, lambda: (_x(3, 5000), _x(3, 5000, seed=1) * 0.1, 11, 2), (0, 1)),
}


def _outputs(out):
    return out if isinstance(out, tuple) else (out,)


def _run(call, make, grad_at):
    """(outputs, gradients of every differentiable input, grad_fn name) for one route."""
    args = list(make())
    for i in grad_at:
        args[i] = args[i].requires_grad_()
    outs = [o for o in _outputs(call(*args)) if o.numel()]
    upstream = [_x(*o.shape, seed=9).to(o.dtype) for o in outs]
    grads = torch.autograd.grad(outs, [args[i] for i in grad_at], upstream)
    return [o.detach() for o in outs], grads, type(outs[0].grad_fn).__name__


def _equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert torch.equal(x, y), (x - y).abs().max()


@pytest.mark.parametrize("case", list(CASES))
def test_eager_autograd_route_matches_registered_op_bit_for_bit(case):
    op, make, grad_at = CASES[case]
    out2, grads2, fn2 = _run(op, make, grad_at)                 # route 2: eager autograd.Function
    out3, grads3, fn3 = _run(op.registered, make, grad_at)      # route 3: the dispatcher
    assert fn2.startswith("Eager_") and fn3.startswith("GeneratedBackwardFor_"), (fn2, fn3)
    _equal(out2, out3)
    _equal(grads2, grads3)


@pytest.mark.parametrize("case", list(CASES))
def test_direct_route_matches_registered_op_bit_for_bit(case):
    op, make, _ = CASES[case]
    args = make()
    direct = _outputs(op(*args))                                  # route 1: no graph needed
    assert all(o.grad_fn is None for o in direct)
    _equal(direct, _outputs(op.registered(*args)))


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func)
        return func(*args, **(kwargs or {}))


def test_route_choice():
    calls = []
    op = Op(q_sample_op.registered, lambda *a: calls.append("impl") or q_sample_op.impl(*a))
    x, e = _x(2, 3), _x(2, 3, seed=1)
    op(x, e, None, 1, TABLE, False)
    assert calls == ["impl"]
    with torch.no_grad():
        op(x.requires_grad_(), e, None, 1, TABLE, False)
    assert calls == ["impl", "impl"]
    # an optional tensor argument counts too: only the unconditional output needs a gradient here
    uncond = _x(2, 3, seed=2).requires_grad_()
    out = sampler_step_op(e, uncond, x.detach(), None, 5, None, 0, TABLE, DDPM, 0, 2.0, math.inf, 0.0, False, 1, 1)
    assert type(out.grad_fn).__name__.startswith("Eager_")
    with _Recorder() as mode:  # a dispatch mode sees the registered op, not its insides
        op(x.detach(), e, None, 1, TABLE, False)
    assert torch.ops.genkernels.q_sample.default in mode.ops and calls == ["impl", "impl"]


def test_tensor_subclass_takes_the_registered_op():
    class Marked(torch.Tensor):
        pass

    seen = []

    class Spy(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            seen.append(func)
            return super().__torch_function__(func, types, args, kwargs or {})

    x = _x(2, 3).as_subclass(Spy)
    q_sample_op(x, _x(2, 3), None, 1, TABLE, False)
    assert torch.ops.genkernels.q_sample.default in seen


def test_compile_fullgraph_and_make_fx_see_the_op():
    from torch.fx.experimental.proxy_tensor import make_fx

    def f(x, e):
        x_t, v = q_sample_op(x, e, T, 0, TABLE, True)
        return diffusion_sse_op(x_t, x, v, T, 0, TABLE, 2)

    x, e = _x(3, 4), _x(3, 4, seed=1)
    graph = make_fx(f)(x, e)
    targets = {n.target for n in graph.graph.nodes}
    assert {torch.ops.genkernels.q_sample.default, torch.ops.genkernels.diffusion_sse.default} <= targets
    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    xg = x.clone().requires_grad_()
    (grad_c,) = torch.autograd.grad(compiled(xg, e).sum(), xg)
    (grad_e,) = torch.autograd.grad(f(xg, e).sum(), xg)
    torch.testing.assert_close(compiled(x, e), f(x, e), rtol=0, atol=0)
    torch.testing.assert_close(grad_c, grad_e, rtol=0, atol=0)


def test_opcheck_on_defined_op():
    x, e = _x(3, 4), _x(3, 4, seed=1)
    torch.library.opcheck(q_sample_op.registered, (x.requires_grad_(), e, T, 0, TABLE, True),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


# ---- register(): ops registered another way -------------------------------------------------------
def _scale_impl(x, w, extra):
    return x * w + sum(extra)


def _scale_setup(ctx, inputs, output):
    ctx.w, ctx.n = inputs[1], len(inputs[2])


def _scale_backward(ctx, grad):
    return grad * ctx.w, None, [grad] * ctx.n


@torch.library.custom_op("genkernels_test::scale", mutates_args=())
def _scale_op(x: torch.Tensor, w: float, extra: list[torch.Tensor]) -> torch.Tensor:
    return _scale_impl(x, w, extra)


_scale_op.register_fake(lambda x, w, extra: torch.empty_like(x))
scale = register(_scale_op, impl=_scale_impl, setup_context=_scale_setup, backward=_scale_backward)


def test_register_wraps_a_custom_op():
    assert scale.registered is torch.ops.genkernels_test.scale.default
    x, extra = _x(4), [_x(4, seed=1)]
    assert scale(x, 3.0, extra).grad_fn is None
    for call, prefix in ((scale, "Eager_"), (scale.registered, "GeneratedBackwardFor_")):
        xg, eg = x.clone().requires_grad_(), extra[0].clone().requires_grad_()
        out = call(xg, 3.0, [eg])
        assert type(out.grad_fn).__name__.startswith(prefix)
        gx, ge = torch.autograd.grad(out, (xg, eg), torch.ones(4))
        assert torch.equal(gx, torch.full((4,), 3.0)) and torch.equal(ge, torch.ones(4))
    # a tensor list position is read from the schema: requires_grad inside it needs the graph
    out = scale(x, 3.0, [extra[0].clone().requires_grad_()])
    assert type(out.grad_fn).__name__.startswith("Eager_")
    with _Recorder() as mode:
        scale(x, 3.0, extra)
    assert torch.ops.genkernels_test.scale.default in mode.ops
    torch.library.opcheck(scale.registered, (x.requires_grad_(), 2.0, extra),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


def test_register_wraps_a_triton_op():
    pytest.importorskip("triton")
    from torch.library import triton_op

    @triton_op("genkernels_test::twice", mutates_args=())
    def twice_op(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    twice = register(twice_op, impl=lambda x: x * 2, setup_context=lambda ctx, inputs, output: None,
                     backward=lambda ctx, grad: grad * 2)
    x = _x(5).requires_grad_()
    out = twice(x)
    assert type(out.grad_fn).__name__.startswith("Eager_")
    (g,) = torch.autograd.grad(out, x, torch.ones(5))
    (g3,) = torch.autograd.grad(twice.registered(x), x, torch.ones(5))
    assert torch.equal(g, g3) and torch.equal(g, torch.full((5,), 2.0))


def test_define_validates_its_arguments():
    with pytest.raises(TypeError, match="register"):
        register(lambda x: x, impl=lambda x: x)
    with pytest.raises(ValueError, match="positional"):
        define("routing_kwonly(Tensor x, *, int k) -> Tensor", impl=lambda x, k: x.clone())
