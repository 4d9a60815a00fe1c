"""rotary: the C++ backend (and CUDA where present) and the torch fallback against the float64
reference under the 2x rule, forward and the x gradient (the rotation by -theta), scalar and
per-sequence offsets (cached decoding); inverse round trip, NaN, opcheck, compile and errors."""
import pytest
import torch

from genkernels import use_backend
from genkernels.ops import rotary, rotary_tables
from genkernels.ops.rotary import rotary_op, rotary_ref
from genkernels.testing import assert_close_2x
from tests.helpers import DTYPES
from tests.ops.test_layer_norm import BACKENDS

SHAPES = [(2, 5, 3, 8), (1, 7, 2, 34), (3, 1, 4, 64)]


@pytest.mark.parametrize("backend, device", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("offset", ["zero", "int", "tensor"])
def test_matches_reference(backend, device, dtype, shape, offset):
    torch.manual_seed(0)
    n, t, h, d = shape
    cos, sin = rotary_tables(64, d, device=device)
    off = {"zero": 0, "int": 9, "tensor": torch.arange(n, device=device) * 13 + 2}[offset]
    x = torch.randn(shape).to(device, dtype).requires_grad_(True)
    gy = torch.randn(shape, device=device)

    def call(x, grad, fn):
        y = fn(x)
        return y, torch.autograd.grad(y, [x], grad.to(y.dtype))[0]

    with use_backend(backend):
        fast = call(x, gy, lambda x: rotary(x, cos, sin, off))
    x64 = x.detach().double().requires_grad_(True)
    truth = call(x64, gy.double(), lambda x: rotary_ref(x, cos.double(), sin.double(), off))
    lowp = call(x, gy, lambda x: rotary_ref(x, cos, sin, off))
    for name, a, tr, r in zip(["y", "grad_x"], fast, truth, lowp):
        assert a.shape == tr.shape and a.dtype == dtype
        assert_close_2x(a.reshape(n * t, -1), tr.reshape(n * t, -1), r.reshape(n * t, -1),
                        name=f"{name} [{backend}, {dtype}, {shape}, {offset}]")


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_cached_decoding_matches_full_sequence(backend, device):
    """Rotating tokens one at a time at offset t equals rotating the whole sequence."""
    cos, sin = rotary_tables(32, 16, device=device)
    x = torch.randn(2, 6, 3, 16, device=device)
    with use_backend(backend):
        full = rotary(x, cos, sin)
        steps = torch.cat([rotary(x[:, t:t + 1], cos, sin, t) for t in range(6)], dim=1)
        back = rotary(full, cos, sin, inverse=True)
    assert torch.equal(full, steps)
    torch.testing.assert_close(back, x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_nan_propagates(backend, device):
    cos, sin = rotary_tables(8, 4, device=device)
    x = torch.randn(1, 2, 1, 4, device=device)
    x[0, 0, 0, 1] = float("nan")
    with use_backend(backend):
        y = rotary(x, cos, sin, 1)
    assert torch.isnan(y[0, 0, 0, [1, 3]]).all() and torch.isfinite(y[0, 0, 0, [0, 2]]).all()
    assert torch.isfinite(y[0, 1]).all()


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_opcheck(backend, device):
    cos, sin = rotary_tables(16, 6, device=device)
    x = torch.randn(2, 3, 2, 6, device=device, requires_grad=True)
    with use_backend(backend):
        torch.library.opcheck(rotary_op.registered, (x, cos, sin, None, 4, False))
        torch.library.opcheck(rotary_op.registered, (x, cos, sin, torch.tensor([0, 5], device=device), 0, True))


def test_torch_compile_fullgraph():
    cos, sin = rotary_tables(16, 8)
    x = torch.randn(2, 3, 2, 8, requires_grad=True)
    step = lambda x: rotary(x, cos, sin, 2).square().sum() + rotary(x, cos, sin, 5)[..., 0].sum()  # noqa: E731
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(torch.autograd.grad(compiled(x), [x])[0], torch.autograd.grad(step(x), [x])[0])


def test_errors_name_the_argument():
    cos, sin = rotary_tables(8, 4)
    x = torch.zeros(1, 3, 2, 4)
    with pytest.raises(ValueError, match=r"x must be \(N, T, H, D\)"):
        rotary(torch.zeros(3, 4), cos, sin)
    with pytest.raises(ValueError, match="D must be even"):
        rotary(torch.zeros(1, 3, 2, 5), cos, sin)
    with pytest.raises(ValueError, match=r"cos must be \(P, D // 2\)"):
        rotary(x, cos[:, :1], sin)
    with pytest.raises(TypeError, match="sin must be float32"):
        rotary(x, cos, sin.half())
    with pytest.raises(ValueError, match=r"positions offset \+ t must lie in \[0, P = 8\)"):
        rotary(x, cos, sin, 6)
    with pytest.raises(ValueError, match=r"positions offset \+ t must lie in"):
        rotary(x, cos, sin, torch.tensor([7]))
    with pytest.raises(ValueError, match="tensor offset must be int64 of shape"):
        rotary(x, cos, sin, torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="offset must be an int"):
        rotary(x, cos, sin, 1.5)
