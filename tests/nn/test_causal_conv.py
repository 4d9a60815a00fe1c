"""CausalConv1d and WaveNetLayer: causality from gradients, nn.Conv1d state dicts, and the
incremental step against the full forward."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genkernels.nn import CausalConv1d, WaveNetLayer
from genkernels.nn.causal_conv import StepClock, receptive_field
from tests.helpers import triton_device


def _input_gradient(forward, x: torch.Tensor, t: int) -> torch.Tensor:
    """|d (output[..., t].sum()) / d x|, (C, T), for x (1, C, T)."""
    x = x.detach().clone().requires_grad_(True)
    forward(x)[..., t].sum().backward()
    return x.grad[0].abs()


@pytest.mark.parametrize("kernel_size, dilations", [(2, (1, 2, 4, 8)), (3, (1, 3)), (1, (1,)), (4, (2, 1, 5))])
def test_stacked_dilated_convs_are_causal(kernel_size, dilations):
    """Output t gets exactly zero gradient from every input s > t, and from s < t - field + 1;
    the inputs t and t - field + 1 (the oldest it should see) do reach it."""
    channels, length = 3, 40
    convs = nn.Sequential(*[CausalConv1d(channels, channels, kernel_size, d) for d in dilations]).double()
    field = receptive_field(kernel_size, dilations)
    x = torch.randn(1, channels, length, dtype=torch.float64)
    for t in range(length):
        grad = _input_gradient(convs, x, t)
        assert torch.all(grad[:, t + 1:] == 0), f"output {t} depends on later inputs"
        assert torch.all(grad[:, :max(0, t - field + 1)] == 0), f"output {t} sees past its receptive field"
        assert grad[:, t].sum() > 0
        if t - field + 1 >= 0:
            assert grad[:, t - field + 1].sum() > 0


def test_wavenet_layers_are_causal_with_conditioning():
    torch.manual_seed(0)
    layers = nn.ModuleList(WaveNetLayer(4, 6, kernel_size=2, dilation=d, cond_channels=3) for d in (1, 2, 4)).double()
    cond = torch.randn(1, 3, dtype=torch.float64)

    def forward(x):
        skips = 0
        for layer in layers:
            x, skip = layer(x, cond)
            skips = skips + skip
        return torch.cat([x, skips], dim=1)

    x = torch.randn(1, 4, 24, dtype=torch.float64)
    for t in range(24):
        grad = _input_gradient(forward, x, t)
        assert torch.all(grad[:, t + 1:] == 0)
        assert torch.all(grad[:, :max(0, t - 7)] == 0)  # receptive field 1 + 1 + 2 + 4 = 8


@pytest.mark.parametrize("bias", [True, False])
def test_loads_a_conv1d_state_dict_and_matches_left_padded_conv1d(bias):
    dense = nn.Conv1d(5, 7, 3, dilation=2, bias=bias)
    causal = CausalConv1d(5, 7, 3, dilation=2, bias=bias)
    causal.load_state_dict(dense.state_dict())
    assert set(causal.state_dict()) == set(dense.state_dict())
    x = torch.randn(2, 5, 11)
    torch.testing.assert_close(causal(x), dense(F.pad(x, (4, 0))), rtol=0, atol=0)
    assert causal(x).shape == (2, 7, 11)


@pytest.mark.parametrize("kernel_size, dilation", [(1, 1), (2, 1), (2, 8), (3, 2), (5, 3)])
def test_conv_step_equals_forward(kernel_size, dilation):
    conv = CausalConv1d(3, 4, kernel_size, dilation).double()
    x = torch.randn(2, 3, 30, dtype=torch.float64)
    buffer = conv.init_state(2)
    weight = conv.step_weight()
    steps = torch.stack([conv.step(x[:, :, t], buffer, weight) for t in range(30)], dim=-1)
    torch.testing.assert_close(steps, conv(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("conditioned", [False, True])
def test_layer_step_equals_forward(dtype, tol, conditioned):
    torch.manual_seed(1)
    layer = WaveNetLayer(5, 3, kernel_size=3, dilation=4, cond_channels=2 if conditioned else None).to(dtype).eval()
    x = torch.randn(3, 5, 33, dtype=dtype)
    cond = torch.randn(3, 2, dtype=dtype) if conditioned else None
    with torch.no_grad():
        residual, skip = layer(x, cond)
        state = layer.init_state(3, cond)
        outputs = [layer.step(x[:, :, t], state) for t in range(33)]
    torch.testing.assert_close(torch.stack([r for r, _ in outputs], -1), residual, rtol=tol, atol=tol)
    torch.testing.assert_close(torch.stack([s for _, s in outputs], -1), skip, rtol=tol, atol=tol)


def test_layer_shapes_and_gradients():
    layer = WaveNetLayer(6, 10, kernel_size=2, dilation=2, cond_channels=4, dropout=0.1)
    x = torch.randn(2, 6, 9, requires_grad=True)
    cond = torch.randn(2, 4, requires_grad=True)
    residual, skip = layer(x, cond)
    assert residual.shape == (2, 6, 9) and skip.shape == (2, 10, 9)
    (residual.square().sum() + skip.square().sum()).backward()
    assert x.grad is not None and cond.grad.abs().sum() > 0
    assert all(p.grad is not None for p in layer.parameters())


def test_bad_arguments_get_clear_errors():
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        CausalConv1d(2, 2, 0)
    with pytest.raises(TypeError, match="dilation must be an int"):
        CausalConv1d(2, 2, 2, dilation=1.5)
    with pytest.raises(ValueError, match=r"x must be \(N, 2, T\)"):
        CausalConv1d(2, 2, 2)(torch.randn(2, 8))
    with pytest.raises(ValueError, match=r"x must be \(N, 2, T\)"):
        CausalConv1d(2, 2, 2)(torch.randn(1, 3, 8))
    with pytest.raises(ValueError, match="dropout"):
        WaveNetLayer(2, 2, dropout=1.0)
    with pytest.raises(ValueError, match="cond given"):
        WaveNetLayer(2, 2)(torch.randn(1, 2, 5), torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"cond must be \(1, 3\)"):
        WaveNetLayer(2, 2, cond_channels=3)(torch.randn(1, 2, 5))


@pytest.mark.parametrize("kernel_size, dilation", [(2, 1), (3, 2), (4, 5)])
def test_clocked_ring_buffer_step_equals_ring_buffer_step(kernel_size, dilation):
    """The device-clocked ring (CUDA-graph capturable) gives the Python-headed ring's outputs bit for bit."""
    conv = CausalConv1d(3, 4, kernel_size, dilation)
    x = torch.randn(2, 3, 25)
    clock = StepClock()
    clocked, plain, weight = conv.init_state(2, clock=clock), conv.init_state(2), conv.step_weight()
    for t in range(25):
        clock.tick()
        a, b = conv.step(x[:, :, t], clocked, weight), conv.step(x[:, :, t], plain, weight)
        clock.advance()
        assert torch.equal(a, b), f"step {t}"
    assert int(clock.t) == 25


def test_wavenet_layer_state_dict_loads_from_dense_modules():
    """The fused 1x1 convs keep the state dict: a layer built from nn.Conv1d / nn.Linear weights gives
    the dense computation (left-padded conv1d -> gate -> two 1x1 convs)."""
    layer = WaveNetLayer(4, 6, kernel_size=3, dilation=2, cond_channels=3)
    dense = {"conv": nn.Conv1d(4, 8, 3, dilation=2), "cond": nn.Linear(3, 8, bias=False),
             "residual": nn.Conv1d(4, 4, 1), "skip": nn.Conv1d(4, 6, 1)}
    state = {f"{name}.{key}": value for name, module in dense.items() for key, value in module.state_dict().items()}
    assert set(layer.state_dict()) == set(state)
    layer.load_state_dict(state)
    x, cond = torch.randn(2, 4, 10), torch.randn(2, 3)
    pre = dense["conv"](F.pad(x, (4, 0))) + dense["cond"](cond)[:, :, None]
    z = torch.tanh(pre[:, :4]) * torch.sigmoid(pre[:, 4:])
    residual, skip = layer(x, cond)
    torch.testing.assert_close(residual, x + dense["residual"](z))
    torch.testing.assert_close(skip, dense["skip"](z))


@pytest.mark.skipif(triton_device() != "cpu", reason="the triton backend on CPU tensors needs --triton-interpret")
def test_triton_backend_layers_match_the_reference_path():
    """Under the Triton backend CausalConv1d and WaveNetLayer run genkernels.ops.causal_conv1d (gate
    and cond fused); outputs and every parameter gradient match the conv1d path."""
    from genkernels import use_backend

    layer = WaveNetLayer(3, 5, kernel_size=2, dilation=3, cond_channels=2)
    x, cond = torch.randn(2, 3, 11, requires_grad=True), torch.randn(2, 2)
    results = []
    for backend in ("triton", "torch"):
        with use_backend(backend):
            residual, skip = layer(x, cond)
            plain = layer.conv(x)
            loss = residual.square().sum() + skip.sum() + plain.square().sum()
            results.append((residual, skip, plain, *torch.autograd.grad(loss, [x, *layer.parameters()])))
    for fast, ref in zip(*results):
        torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)
