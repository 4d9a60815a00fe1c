"""genkernels.nn.FlowSequential: chaining, inverse, and recompute-by-inverse training.

Recompute gradients (parameters, input, context) are held to the accuracy rule against the stored
path: truth = stored path in float64, torch's error = stored path in float32, the recompute path
in float32 may be off by at most 2x that (+ floor). Activation memory is counted with
torch.autograd.graph.saved_tensors_hooks (genkernels.bench.flow_memory.SavedTensorMeter)."""
import copy

import pytest
import torch

from genkernels.bench.flow_memory import SavedTensorMeter, negative_log_likelihood, realnvp_stack
from genkernels.nn import (ActNorm, AdditiveCoupling, AffineCoupling, FlowSequential, InvertibleConv1x1, Permute,
                           SplineCoupling, Squeeze)
from genkernels.testing import assert_close_2x
from tests.nn.flow_helpers import check_logdet, check_roundtrip, randomize


def _deep_stack(blocks=6, channels=4, context_channels=None, recompute=False):
    """Every layer kind, both masks and parities, a Squeeze halfway."""
    layers = []
    for i in range(blocks):
        if i == blocks // 2:
            layers.append(Squeeze())
            channels *= 4
        mask = "checkerboard" if i % 2 == 0 and i < blocks // 2 else "channel"
        coupling = (AffineCoupling, SplineCoupling, AdditiveCoupling)[i % 3]
        kwargs = dict(num_bins=4) if coupling is SplineCoupling else {}
        layers += [ActNorm(channels), InvertibleConv1x1(channels, lu=i % 2 == 0),
                   coupling(channels, 8, mask=mask, parity=(i // 2) % 2, context_channels=context_channels, **kwargs),
                   Permute(channels, "random", seed=i)]
    return FlowSequential(*layers, recompute=recompute)


def _initialised(flow, x, context=None):
    flow.initialize(x, context)
    return randomize(flow, 0.05)


def test_chain_roundtrip_and_logdet():
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    context = torch.randn(2, 3, dtype=torch.float64)
    flow = _initialised(_deep_stack(4, 2, context_channels=3).double(), x, context)
    check_roundtrip(flow, x, context)
    check_logdet(flow, x, context)
    y, logdet = flow(x, context)
    expected = torch.zeros(2, dtype=torch.float64)
    h = x
    for layer in flow:
        h, layer_logdet = layer(h, context)
        expected = expected + layer_logdet
    assert torch.equal(y, h) and torch.allclose(logdet, expected)
    flow32 = copy.deepcopy(flow).float()
    check_roundtrip(flow32, x.float(), context.float())


def _weights(n, dtype):
    return torch.linspace(0.5, 1.5, n, dtype=dtype)  # per-sample loss weights: samples' grads differ


def _gradients(flow, x, context):
    x = x.clone().requires_grad_()
    context = context.clone().requires_grad_()
    flow.zero_grad(set_to_none=True)
    y, logdet = flow(x, context)
    loss = 0.5 * y.square().flatten(1).sum(1) - logdet  # per-sample NLL up to a constant
    (loss * _weights(x.shape[0], x.dtype)).sum().backward()
    named = {"y": y.detach(), "logdet": logdet.detach(), "x.grad": x.grad, "context.grad": context.grad}
    named.update({name + ".grad": p.grad for name, p in flow.named_parameters()})
    return named


def _as_one_sample(grads, names):
    return torch.cat([grads[name].flatten() for name in names]).unsqueeze(0)  # (1, total)


def test_recompute_gradients_equal_stored_within_2x_rule():
    """y, logdet and the input gradient per sample; the parameter gradients of the whole stack
    with the context gradient as one vector.

    Why vectors: recompute-by-inverse evaluates every layer at an input rebuilt from the chain's
    rounded output, so each activation carries the rounding of the whole chain (about the final
    output's error, ~8 ulps here) instead of only the layers before it. Gradients that are sums
    cancelling to ~0 (a conditioner bias summed over positions, the context gradient summed over
    layers) then differ from the stored path by ulps of their terms, not of their value; judged
    element by element, torch's own error on such an element is often a lucky fraction of an ulp.
    Over the whole gradient vector the recompute path's error is the stored path's (ratio of the
    error norms 0.9-1.2 over seeds 0-9, measured with this stack). A ReLU in a conditioner whose
    input sits within rounding of 0 can also switch sides; its gradient then jumps, in either path.
    """
    x = torch.randn(3, 2, 8, 8)
    context = torch.randn(3, 2)
    stored = _initialised(_deep_stack(8, 2, context_channels=2), x, context)
    truth_flow = copy.deepcopy(stored).double()  # the same (float32-representable) parameters
    recomputing = copy.deepcopy(stored)
    recomputing.recompute = True
    truth = _gradients(truth_flow, x.double(), context.double())
    lowp = _gradients(stored, x, context)
    fast = _gradients(recomputing, x, context)
    assert fast.keys() == truth.keys() and all(fast[name] is not None for name in truth)
    for name in ("y", "logdet", "x.grad"):
        assert_close_2x(fast[name], truth[name], lowp[name], name=name)
    names = [n for n in truth if n.startswith("layers.")] + ["context.grad"]  # context: a parameter per sample
    assert_close_2x(_as_one_sample(fast, names), _as_one_sample(truth, names), _as_one_sample(lowp, names),
                    name="parameter and context gradients")
    # the recompute path really ran (and agrees with the stored path to rounding)
    torch.testing.assert_close(fast["x.grad"], lowp["x.grad"], atol=1e-4, rtol=1e-3)


def test_recompute_without_context_and_input_grad():
    x = torch.randn(2, 4, 4, 4)
    stored = _initialised(_deep_stack(4, 4), x)
    recomputing = copy.deepcopy(stored)
    recomputing.recompute = True
    for flow in (stored, recomputing):
        negative_log_likelihood(flow, x).backward()
    for (name, a), b in zip(stored.named_parameters(), recomputing.parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_recompute_skipped_while_actnorm_needs_init_and_under_no_grad():
    x = torch.randn(4, 4, 4, 4)
    flow = _deep_stack(2, 4, recompute=True)
    y, _ = flow(x)
    assert y.grad_fn is None or "RecomputeByInverse" not in type(y.grad_fn).__name__
    assert not any(m.needs_initialization for m in flow.modules() if isinstance(m, ActNorm))
    y, _ = flow(x)
    assert "RecomputeByInverse" in type(y.grad_fn).__name__
    with torch.no_grad():
        y, logdet = flow(x)
    assert y.grad_fn is None and logdet.shape == (4,)


def _saved_bytes(depth, recompute):
    flow = realnvp_stack(blocks=depth, image=(2, 8, 8), hidden=8, recompute=recompute)
    x = torch.randn(2, 2, 8, 8)
    flow.initialize(x)
    with SavedTensorMeter(exclude=list(flow.parameters()) + [x]) as meter:
        loss = negative_log_likelihood(flow, x)
        after_forward = meter.live
        loss.backward()
        del loss
    return after_forward, meter.peak


def test_activation_memory_flat_in_depth():
    stored = {d: _saved_bytes(d, False) for d in (4, 16)}
    recompute = {d: _saved_bytes(d, True) for d in (4, 16)}
    # stored activations grow with depth (about 4x from 4 to 16 blocks) ...
    assert stored[16][0] > 3 * stored[4][0]
    # ... recompute holds the final output only between forward and backward, and one layer's
    # graph at a time in backward: the same bytes at every depth
    assert recompute[16] == recompute[4]
    assert recompute[4][0] == 2 * 2 * 8 * 8 * 4  # y, (N, C, H, W) float32
    assert stored[16][1] > 8 * recompute[16][1]


def test_inverse_runs_layers_in_reverse():
    flow = FlowSequential(Squeeze(), Permute(8))
    x = torch.randn(2, 2, 4, 4)
    y, _ = flow(x)
    assert torch.equal(flow.inverse(y)[0], x)
    assert len(flow) == 2 and isinstance(flow[0], Squeeze)


def test_empty_and_bad_layers():
    x = torch.randn(2, 3)
    y, logdet = FlowSequential()(x)
    assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(2))
    with pytest.raises(TypeError, match="layer 1 must be an nn.Module with forward and inverse"):
        FlowSequential(ActNorm(3), torch.nn.Linear(3, 3))
    with pytest.raises(TypeError, match="x must be a Tensor"):
        FlowSequential(ActNorm(3))([1.0, 2.0])
