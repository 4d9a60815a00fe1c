"""MaskedConv2d and GatedMaskedConv2d: causality from exact Jacobians (every forbidden input has an
exactly zero gradient, every allowed one inside the receptive field a nonzero one), nn.Conv2d state
dicts, and clear errors for bad configurations and inputs."""

import pytest
import torch

from genkernels.nn import GatedMaskedConv2d, MaskedConv2d
from tests.helpers import triton_device, triton_test

H, W = 5, 7


def _dependence(fn, x):
    """(Cout, H, W, Cin, H, W) |d out / d x| of a batch-1 map, float64."""
    jac = torch.autograd.functional.jacobian(fn, x)  # (1, Cout, H, W, 1, Cin, H, W)
    return jac[0, :, :, :, 0].abs()


def _raster_allowed(i, j, i2, j2, include_centre):
    return i2 < i or (i2 == i and (j2 < j or (include_centre and j2 == j)))


@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_conv_causality(kernel_size, mask_type):
    torch.manual_seed(0)
    conv = MaskedConv2d(2, 3, kernel_size, mask_type).double()
    x = torch.randn(1, 2, H, W, dtype=torch.float64)
    dep = _dependence(conv, x).sum(dim=(0, 3))  # (H, W, H, W): any channel to any channel
    c = kernel_size // 2
    for i in range(H):
        for j in range(W):
            for i2 in range(H):
                for j2 in range(W):
                    near = abs(i2 - i) <= c and abs(j2 - j) <= c
                    if near and _raster_allowed(i, j, i2, j2, mask_type == "B"):
                        assert dep[i, j, i2, j2] > 0, (i, j, i2, j2)
                    else:
                        assert dep[i, j, i2, j2] == 0, (i, j, i2, j2)


@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("gated", [False, True])
def test_color_group_causality(mask_type, gated):
    """R before G before B: at its own pixel, output group g sees input groups < g (A) or <= g (B);
    at earlier pixels every channel; at later pixels none."""
    torch.manual_seed(0)
    cin, cout, k = 6, 3, 3
    conv = MaskedConv2d(cin, cout, k, mask_type, color_groups=3, gated=gated).double()
    x = torch.randn(1, cin, H, W, dtype=torch.float64)
    dep = _dependence(conv, x)  # (Cout, H, W, Cin, H, W)
    in_group = torch.arange(cin) // 2
    for o in range(cout):
        g = o  # one output channel per group
        for i in range(H):
            for j in range(W):
                centre = dep[o, i, j, :, i, j]
                sees = in_group < g if mask_type == "A" else in_group <= g
                assert (centre[~sees] == 0).all() and (centre[sees] > 0).all(), (o, i, j, centre)
                before = torch.zeros(H, W, dtype=torch.bool)
                for i2 in range(max(0, i - 1), min(H, i + 2)):
                    for j2 in range(max(0, j - 1), min(W, j + 2)):
                        before[i2, j2] = _raster_allowed(i, j, i2, j2, False)
                others = dep[o, i, j].sum(0)  # (H, W), any input channel
                others[i, j] = 0
                assert (others[before] > 0).all() and (others[~before] == 0).all(), (o, i, j)


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("cond", [False, True])
def test_gated_stack_has_no_blind_spot(kernel_size, cond):
    """A stack (first layer A, then B): the horizontal output at (i, j) depends on every pixel of
    the rows above within the receptive field and on the row's pixels left of j, on nothing at or
    after (i, j); the vertical output only on rows above."""
    torch.manual_seed(0)
    channels, layers, c = 3, 3, kernel_size // 2
    cond_channels = 2 if cond else None
    stack = torch.nn.ModuleList(
        GatedMaskedConv2d(channels, kernel_size, "A" if n == 0 else "B", cond_channels) for n in range(layers)
    ).double()
    rows = H + 2
    labels = torch.randn(1, 2, dtype=torch.float64).expand(rows * W, -1) if cond else None
    x = torch.randn(1, channels, rows, W, dtype=torch.float64)

    def run(x, which):
        v, h = x, x
        for layer in stack:
            v, h = layer(v, h, None if labels is None else labels[: x.shape[0]])
        return h if which == "h" else v

    dep_h = _dependence_batched(lambda t: run(t, "h"), x)  # (rows, W, rows, W)
    dep_v = _dependence_batched(lambda t: run(t, "v"), x)
    reach = layers * c
    for i in range(rows):
        for j in range(W):
            for i2 in range(rows):
                for j2 in range(W):
                    above = i - reach <= i2 < i and abs(j2 - j) <= reach
                    left = i2 == i and j - reach <= j2 < j
                    if above or left:
                        assert dep_h[i, j, i2, j2] > 0, ("blind spot", i, j, i2, j2)
                    else:
                        assert dep_h[i, j, i2, j2] == 0, ("leak", i, j, i2, j2)
                    if i2 >= i:
                        assert dep_v[i, j, i2, j2] == 0, ("vertical leak", i, j, i2, j2)
    # the vertical stack sees the whole row just above within its reach
    assert (dep_v[2, 3, 1, max(0, 3 - reach):3 + reach + 1] > 0).all()


def test_gated_masked_conv_cond_changes_output():
    torch.manual_seed(0)
    layer = GatedMaskedConv2d(4, 3, "B", cond_channels=5)
    x = torch.randn(2, 4, H, W)
    a = layer(x, x, torch.randn(2, 5))
    b = layer(x, x, torch.randn(2, 5))
    assert not torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])
    assert a[0].shape == a[1].shape == (2, 4, H, W)


@pytest.mark.parametrize("gated", [False, True])
def test_loads_conv2d_state_dict(gated):
    torch.manual_seed(0)
    dense = torch.nn.Conv2d(3, 8 if gated else 4, 5, padding=2)
    masked = MaskedConv2d(3, 4, 5, "B", gated=gated)
    masked.load_state_dict(dense.state_dict())
    assert set(masked.state_dict()) == {"weight", "bias"}
    x = torch.randn(2, 3, H, W)
    # with the mask taken out of the dense weight, the two layers agree
    with torch.no_grad():
        dense.weight.mul_(masked.mask)
    expected = dense(x)
    if gated:
        a, b = expected.chunk(2, dim=1)
        expected = torch.tanh(a) * torch.sigmoid(b)
    torch.testing.assert_close(masked(x), expected)
    dense2 = torch.nn.Conv2d(3, 8 if gated else 4, 5, padding=2)
    dense2.load_state_dict(masked.state_dict())  # and back


def test_conditioning_is_a_per_sample_gate_bias():
    torch.manual_seed(0)
    conv = MaskedConv2d(3, 4, 3, "A", gated=True, cond_channels=2)
    x, cond = torch.randn(2, 3, H, W), torch.randn(2, 2)
    pre = torch.nn.functional.conv2d(x, conv.weight * conv.mask, conv.bias, padding=1)
    pre = pre + conv.cond_proj(cond)[:, :, None, None]
    a, b = pre.chunk(2, dim=1)
    torch.testing.assert_close(conv(x, cond), torch.tanh(a) * torch.sigmoid(b))


@pytest.mark.parametrize("kwargs, match", [
    (dict(kernel_size=4), "kernel_size"),
    (dict(kernel_size=0), "kernel_size"),
    (dict(mask_type="C"), "mask_type"),
    (dict(color_groups=3, in_channels=4), "color_groups"),
    (dict(color_groups=3, out_channels=4), "color_groups"),
    (dict(cond_channels=3), "cond_channels"),
])
def test_bad_config(kwargs, match):
    args = dict(in_channels=3, out_channels=3, kernel_size=3) | kwargs
    with pytest.raises(ValueError, match=match):
        MaskedConv2d(**args)


def test_bad_inputs():
    conv = MaskedConv2d(3, 4, 3, gated=True, cond_channels=2)
    with pytest.raises(ValueError, match="x must be a 4D"):
        conv(torch.randn(3, H, W))
    with pytest.raises(ValueError, match="x must have 3 channels"):
        conv(torch.randn(1, 2, H, W))
    with pytest.raises(ValueError, match="cond must have shape"):
        conv(torch.randn(1, 3, H, W), torch.randn(2, 2))
    with pytest.raises(ValueError, match="kernel_size"):
        GatedMaskedConv2d(4, 2)
    with pytest.raises(ValueError, match="mask_type"):
        GatedMaskedConv2d(4, 3, "vA")
    layer = GatedMaskedConv2d(4, 3)
    with pytest.raises(ValueError, match="v must be a 4D"):
        layer(torch.randn(4, H, W), torch.randn(1, 4, H, W))
    with pytest.raises(ValueError, match="v and h must have the same shape"):
        layer(torch.randn(1, 4, H, W), torch.randn(1, 4, H, W + 1))
    with pytest.raises(ValueError, match="cond was given"):
        layer(torch.randn(1, 4, H, W), torch.randn(1, 4, H, W), torch.randn(1, 2))


# ----------------------------------------------------------------------------------------------
# The same layers on the Triton kernels (interpreter on CPU)
# ----------------------------------------------------------------------------------------------
def _dependence_batched(fn, x):
    """(H, W, H, W): whether output pixel (i, j) (a random mix of its channels) depends on input
    pixel (i2, j2), from one backward pass: sample p of a batch of H * W copies of x carries the
    gradient of output pixel p only."""
    _, _, h, w = x.shape
    xs = x.expand(h * w, -1, -1, -1).clone().requires_grad_()
    out = fn(xs)
    select = torch.zeros(h * w, h, w, dtype=out.dtype)
    select.view(h * w, h * w).fill_diagonal_(1)
    grad_out = torch.randn(h * w, out.shape[1], 1, 1, dtype=out.dtype) * select[:, None]
    (dx,) = torch.autograd.grad((out * grad_out).sum(), (xs,))
    return dx.abs().sum(1).reshape(h, w, h, w)


@triton_test
def test_triton_gated_stack_causality_and_parity(monkeypatch):
    import genkernels.nn.masked_conv as layers_module
    import genkernels.ops.masked_conv as op_module

    # Triton for the masked convs only: gated_activation has no Triton kernel, so forcing the
    # backend globally (use_backend("triton")) would reject it.
    triton_only_here = lambda device: "triton"  # noqa: E731
    channels, k, layers = 3, 3, 2
    stack = torch.nn.ModuleList(GatedMaskedConv2d(channels, k, "A" if n == 0 else "B", 2) for n in range(layers))
    stack.to(torch.device("cpu" if triton_device() == "cpu" else "cuda"))
    rows, cols = 4, 5  # the interpreter runs one program per 16 pixels of a batch of rows * cols
    x = torch.randn(1, channels, rows, cols)
    labels = torch.randn(rows * cols, 2)

    def run(t):
        v, h = t, t
        for layer in stack:
            v, h = layer(v, h, labels[: t.shape[0]])
        return h

    reference = run(x)
    monkeypatch.setattr(op_module, "_backend", triton_only_here)
    monkeypatch.setattr(layers_module, "_backend_for", triton_only_here)
    from genkernels.kernels import masked_conv as kernels

    launches = []
    forward = kernels.masked_conv_forward
    monkeypatch.setattr(kernels, "masked_conv_forward", lambda *a, **kw: launches.append(1) or forward(*a, **kw))
    dep = _dependence_batched(run, x)
    assert len(launches) == 2 * layers * 2  # v and h convs per layer, forward and the dX pass
    torch.testing.assert_close(run(x), reference, rtol=1e-4, atol=1e-5)
    reach = layers * (k // 2)
    for i in range(rows):
        for j in range(cols):
            for i2 in range(rows):
                for j2 in range(cols):
                    visible = (i - reach <= i2 < i and abs(j2 - j) <= reach) or (i2 == i and j - reach <= j2 < j)
                    assert (dep[i, j, i2, j2] > 0) == visible, (i, j, i2, j2)


@triton_test
@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_triton_masked_conv_color_groups(mask_type):
    from genkernels import use_backend

    conv = MaskedConv2d(3, 3, 3, mask_type, color_groups=3, gated=True, cond_channels=2)
    conv.to(torch.device("cpu" if triton_device() == "cpu" else "cuda"))
    x, cond = torch.randn(2, 3, H, W), torch.randn(2, 2)
    with use_backend("triton"):
        fast = conv(x, cond)
        # output channel g at its own pixel: input channels < g (A) or <= g (B), nothing after
        xs = x[:1].expand(3, -1, -1, -1).clone().requires_grad_()
        out = conv(xs, cond[:1].expand(3, -1))
        grad = torch.zeros_like(out)
        grad[[0, 1, 2], [0, 1, 2], 2, 3] = 1
        (dx,) = torch.autograd.grad((out * grad).sum(), (xs,))
    with use_backend("torch"):
        torch.testing.assert_close(fast, conv(x, cond), rtol=1e-4, atol=1e-5)
    for g in range(3):
        centre = dx[g, :, 2, 3]
        sees = torch.arange(3) < g if mask_type == "A" else torch.arange(3) <= g
        assert (centre[sees] != 0).all() and (centre[~sees] == 0).all(), (g, centre)
        later = dx[g].abs().sum(0).flatten()[2 * W + 3 + 1:]
        assert (later == 0).all()


# ----------------------------------------------------------------------------------------------
# Colour groups in the Gated PixelCNN layer (R before G before B inside a pixel)
# ----------------------------------------------------------------------------------------------
def _color_stack(channels=3, k=3, layers=2, cond=False):
    torch.manual_seed(0)
    return torch.nn.ModuleList(
        GatedMaskedConv2d(channels, k, "A" if n == 0 else "B", 2 if cond else None, color_groups=3)
        for n in range(layers))


def _run_stack(stack, x, cond=None):
    v, h = x, x
    for layer in stack:
        v, h = layer(v, h, cond)
    return v, h


def _color_visible(channels, rows, cols, reach, first_mask_a=True):
    """(C, rows, cols, C, rows, cols) bool: horizontal output channel o at (i, j) may (and, within
    the reach, does) depend on input channel q at (i2, j2): rows above (|j2 - j| <= reach), the row's
    pixels left of j, and at (i, j) itself the input groups before o's (the first layer has mask A)."""
    group = torch.arange(channels) * 3 // channels
    visible = torch.zeros(channels, rows, cols, channels, rows, cols, dtype=torch.bool)
    for i in range(rows):
        for j in range(cols):
            for i2 in range(rows):
                for j2 in range(cols):
                    if (i - reach <= i2 < i and abs(j2 - j) <= reach) or (i2 == i and j - reach <= j2 < j):
                        visible[:, i, j, :, i2, j2] = True
            visible[:, i, j, :, i, j] = group[None, :] < group[:, None]
    return visible


@pytest.mark.parametrize("channels, k, cond", [(3, 3, False), (6, 3, True), (3, 5, False)])
def test_gated_color_groups_exact_jacobian(channels, k, cond):
    """Every forbidden input (later pixels; at the same pixel, the same or a later colour group, as
    the stack starts with mask A) has an exactly zero gradient, every allowed one inside the reach a
    nonzero one (no blind spot); the vertical stack sees rows above only."""
    layers, rows, cols = 2, 4, 5
    stack = _color_stack(channels, k, layers, cond).double()
    labels = torch.randn(1, 2, dtype=torch.float64) if cond else None
    x = torch.randn(1, channels, rows, cols, dtype=torch.float64)
    dep_h = _dependence(lambda t: _run_stack(stack, t, labels)[1], x)  # (C, rows, cols, C, rows, cols)
    dep_v = _dependence(lambda t: _run_stack(stack, t, labels)[0], x)
    visible = _color_visible(channels, rows, cols, layers * (k // 2))
    assert (dep_h[~visible] == 0).all(), "leak"
    assert (dep_h[visible] > 0).all(), "blind spot"
    for i in range(rows):
        assert (dep_v[:, i, :, :, i:] == 0).all(), ("vertical leak", i)


def test_gated_color_groups_single_layer_b_sees_its_own_group():
    """Mask B: at the current pixel output group g sees input groups <= g (itself included). (Only
    h varies: a mask-B layer's v input holds rows above by construction.)"""
    torch.manual_seed(0)
    layer = GatedMaskedConv2d(6, 3, "B", color_groups=3).double()
    x = torch.randn(1, 6, 3, 4, dtype=torch.float64)
    v = torch.randn(1, 6, 3, 4, dtype=torch.float64)
    dep = _dependence(lambda t: layer(v, t)[1], x)
    group = torch.arange(6) // 2
    for i in range(3):
        for j in range(4):
            centre = dep[:, i, j, :, i, j]  # (out, in)
            sees = group[None, :] <= group[:, None]
            assert (centre[~sees] == 0).all() and (centre[sees] > 0).all(), (i, j)


def test_gated_color_groups_state_dict_and_errors():
    plain, grouped = GatedMaskedConv2d(6, 3, "B"), GatedMaskedConv2d(6, 3, "B", color_groups=3)
    assert set(plain.state_dict()) == set(grouped.state_dict())
    grouped.load_state_dict(plain.state_dict())
    assert "color_groups=3" in repr(grouped)
    with pytest.raises(ValueError, match="color_groups=3 must divide"):
        GatedMaskedConv2d(4, 3, "A", color_groups=3)
    with pytest.raises(ValueError, match="color_groups must be"):
        GatedMaskedConv2d(3, 3, "A", color_groups=0)


@triton_test
@pytest.mark.parametrize("channels", [3, 6])
def test_triton_gated_color_groups_causality_and_parity(monkeypatch, channels):
    """The same colour-group stack on masked_conv2d ("hA"/"hB" with colour groups, Triton
    interpreter): equal outputs to the compact reference convolutions, and the same exact zeros."""
    import genkernels.nn.masked_conv as layers_module
    import genkernels.ops.masked_conv as op_module

    k, layers, rows, cols = 3, 2, 3, 4
    stack = _color_stack(channels, k, layers, cond=True)
    stack.to(torch.device("cpu" if triton_device() == "cpu" else "cuda"))
    x = torch.randn(1, channels, rows, cols)
    labels = torch.randn(1, 2)
    reference = _run_stack(stack, x, labels)
    triton_only_here = lambda device: "triton"  # noqa: E731  (the masked convs only, see above)
    monkeypatch.setattr(op_module, "_backend", triton_only_here)
    monkeypatch.setattr(layers_module, "_backend_for", triton_only_here)
    fast = _run_stack(stack, x, labels)
    for a, b in zip(fast, reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # exact zeros from one backward pass per output (pixel, channel): a batch of copies of x
    outputs = channels * rows * cols
    xs = x.expand(outputs, -1, -1, -1).clone().requires_grad_()
    _, h = _run_stack(stack, xs, labels.expand(outputs, -1))
    select = torch.eye(outputs).view(outputs, channels, rows, cols)
    (dx,) = torch.autograd.grad((h * select).sum(), (xs,))
    dep = dx.abs().view(channels, rows, cols, channels, rows, cols)
    visible = _color_visible(channels, rows, cols, layers * (k // 2))
    assert (dep[~visible] == 0).all() and (dep[visible] > 0).all()
