import math
import sys

import pytest
import torch

import genkernels
from genkernels.diffusion import euler_step, philox_normal
from genkernels.ops.euler_step import euler_step_op

euler_step_module = sys.modules["genkernels.ops.euler_step"]  # the package attribute is the function
from genkernels.testing import assert_close_2x
from tests.ops.diffusion_cases import DTYPES, SIZES, fast_backends, schedule

SCHED = schedule("cosine", 100)
PREDICTIONS = ["epsilon", "sample", "v"]


def _sigma(t):
    ab = SCHED.alphas_cumprod[t].item()
    return math.sqrt((1.0 - ab) / ab)


def _textbook(m, x, sigma, sigma_next, prediction, eta=0.0, z=None, u=None, w=None):
    """k-diffusion's sample_euler / sample_euler_ancestral step, in float64."""
    m, x = m.double(), x.double()
    if u is not None:
        m = u.double() + w * (m - u.double())
    if prediction == "epsilon":
        denoised = x - sigma * m
    elif prediction == "sample":
        denoised = m
    else:  # v of the VP sample x / sqrt(1 + sigma^2): x0 = alpha x_vp - sigma_vp v
        alpha, sigma_vp = 1 / math.sqrt(1 + sigma**2), sigma / math.sqrt(1 + sigma**2)
        denoised = alpha * (x * alpha) - sigma_vp * m
    d = (x - denoised) / sigma
    if eta == 0:
        return x + d * (sigma_next - sigma)
    sigma_up = min(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
    return x + d * (sigma_down - sigma) + z.double() * sigma_up


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("t,t_next", [(99, 80), (40, 39), (5, None), (60, 10)])
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("guided", [False, True])
def test_one_step_equals_the_textbook_update(prediction, t, t_next, eta, guided):
    sigma, sigma_next = _sigma(t), (_sigma(t_next) if t_next is not None else 0.0)
    g = torch.Generator().manual_seed(t)
    m, u = (torch.randn(3, 2, 7, generator=g, dtype=torch.float64) for _ in range(2))
    x = torch.randn(3, 2, 7, generator=g, dtype=torch.float64) * math.sqrt(1 + sigma**2)  # sigma scaling
    z = philox_normal((3, 2, 7), 5, 17, dtype=torch.float64)
    kw = dict(prediction=prediction, eta=eta, seed=5, offset=17)
    if guided:
        kw.update(guidance_scale=2.5, model_output_uncond=u)
    want = _textbook(m, x, sigma, sigma_next, prediction, eta, z, u if guided else None, 2.5)
    torch.testing.assert_close(euler_step(m, x, sigma, sigma_next, **kw), want, rtol=1e-10, atol=1e-10)
    for backend, device in fast_backends():  # the fp32 kernels, against the float64 textbook
        kw32 = {k: (v.float().to(device) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
        with genkernels.use_backend(backend):
            got = euler_step(m.float().to(device), x.float().to(device), sigma, sigma_next, **kw32)
        scale = want.abs().max().item() + x.abs().max().item() + sigma * m.abs().max().item()
        torch.testing.assert_close(got.cpu().double(), want, rtol=0, atol=3e-6 * scale)


@pytest.mark.parametrize("backend,device", fast_backends())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_matches_reference_2x_rule(backend, device, dtype, size, prediction, monkeypatch):
    # as in test_sampler_step: the references add the noise the kernel draws (its sinf/logf differ
    # from torch's by an ulp), so the rule judges the step's own arithmetic
    def kernel_noise(num_samples, numel, seed, offset, device=None):
        with genkernels.use_backend(backend):
            return philox_normal((num_samples, numel), seed, offset, device=device or "cpu")

    monkeypatch.setattr(euler_step_module, "philox_normal_ref", kernel_noise)
    g = torch.Generator().manual_seed(size)
    sigma, sigma_next = {1: (_sigma(99), _sigma(90)), 7: (_sigma(50), _sigma(45)), 1023: (_sigma(10), 0.0),
                         4097: (_sigma(70), _sigma(30))}[size]
    eta = 1.0 if size in (7, 4097) else 0.0
    guided = size in (1, 4097)
    ins = [torch.randn(4, size, generator=g).to(device, dtype) for _ in range(3)]
    ins[1] = (ins[1].double() * math.sqrt(1 + sigma**2)).to(dtype)
    clip = 1.0 if prediction == "sample" else None

    def call(m, x, u):
        kw = dict(prediction=prediction, eta=eta, seed=3, offset=9, clip_x0=clip)
        if guided:
            kw.update(guidance_scale=3.5, model_output_uncond=u)
        return euler_step(m, x, sigma, sigma_next, **kw)

    with genkernels.use_backend("torch"):
        truth = call(*(v.double() for v in ins))
        lowp = call(*ins)
    with genkernels.use_backend(backend):
        fast = call(*ins)
    assert fast.dtype == dtype
    assert_close_2x(fast, truth, lowp, name="x_next")


@pytest.mark.parametrize("backend,device", fast_backends())
def test_same_noise_as_reference_for_a_seed(backend, device):
    x = torch.zeros(3, 2, 5, device=device)
    with genkernels.use_backend(backend):
        out = euler_step(x, x, 2.0, 1.0, prediction="sample", eta=1.0, seed=123, offset=9)
    up = math.sqrt(1.0 * (4.0 - 1.0) / 4.0)
    torch.testing.assert_close(out.cpu(), up * philox_normal((3, 2, 5), 123, 9), rtol=1e-5, atol=1e-6)


def test_nan_propagates():
    m, x = torch.randn(2, 5), torch.randn(2, 5)
    m[0, 1] = math.nan
    out = euler_step(m, x, 3.0, 1.0, eta=1.0)
    assert out[0, 1].isnan() and not out[1].isnan().any()


def test_opcheck_and_compile():
    m, x, u = (torch.randn(3, 4, 5) for _ in range(3))
    op = euler_step_op.registered
    torch.library.opcheck(op, (m, None, x, 3.0, 1.0, 0, 1.0, math.inf, 0.0, 0, 0),
                          test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(op, (m, u, x, 3.0, 1.0, 2, 2.5, 1.0, 1.0, 7, 3),
                          test_utils=("test_schema", "test_faketensor"))

    @torch.compile(fullgraph=True, backend="eager")
    def step(m, x):
        return euler_step(m, x, 3.0, 1.0, prediction="v", eta=1.0, seed=1, offset=2)

    torch.testing.assert_close(step(m, x), euler_step(m, x, 3.0, 1.0, prediction="v", eta=1.0, seed=1, offset=2))


def test_bad_inputs():
    m, x = torch.randn(2, 5), torch.randn(2, 5)
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        euler_step(m, x, 0.0, 0.0)
    with pytest.raises(ValueError, match="sigma_next must be a finite number >= 0"):
        euler_step(m, x, 1.0, -1.0)
    with pytest.raises(ValueError, match="needs sigma_next <= sigma"):
        euler_step(m, x, 1.0, 2.0, eta=1.0)
    with pytest.raises(ValueError, match="eta must be a number in"):
        euler_step(m, x, 2.0, 1.0, eta=1.5)
    with pytest.raises(TypeError, match="sigma must be a number"):
        euler_step(m, x, "2", 1.0)
    with pytest.raises(ValueError, match="model_output must have the shape"):
        euler_step(m[:1], x, 2.0, 1.0)
    with pytest.raises(ValueError, match="guidance_scale"):
        euler_step(m, x, 2.0, 1.0, guidance_scale=2.0)
    with pytest.raises(ValueError, match="offset must be in"):
        euler_step(m, x, 2.0, 1.0, offset=-1)
    # Euler (eta = 0) may step up in sigma (as an ODE solver run backwards)
    assert euler_step(m, x, 1.0, 2.0).shape == x.shape
