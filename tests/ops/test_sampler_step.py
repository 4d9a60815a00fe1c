import math

import pytest
import torch

import genkernels
from genkernels.diffusion import ddim_step, ddpm_step, philox_normal
from tests.ops.diffusion_cases import DTYPES, SIZES, check_2x, fast_backends, schedule, timesteps_for

SCHED = schedule("cosine", 100)
PREDICTIONS = ["epsilon", "sample", "v"]


def _step(kind, t, t_prev, prediction, clip, guided, eta=0.6):
    def fn(m, x, *uncond):
        extra = dict(guidance_scale=3.0, model_output_uncond=uncond[0]) if guided else {}
        if kind == "ddpm":
            return ddpm_step(m, x, t, SCHED, prediction=prediction, seed=11, offset=2, clip_x0=clip, **extra)
        return ddim_step(m, x, t, t_prev, SCHED, eta=eta, prediction=prediction, seed=11, offset=2, clip_x0=clip,
                         **extra)
    return fn


@pytest.mark.parametrize("backend,device", fast_backends())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_matches_reference_2x_rule(backend, device, dtype, size, kind, prediction):
    batch = 4
    t = timesteps_for(batch, 100, device).clamp(min=1)
    t[1] = 0
    t_prev = torch.where(t > 10, t - 10, torch.full_like(t, -1))
    guided = size % 2 == 1  # alternate the guided and plain forms across sizes
    n_in = 3 if guided else 2
    make = lambda: [torch.randn(batch, size) for _ in range(n_in)]  # noqa: E731
    names = ["model_output", "x_t", "model_output_uncond"][:n_in]
    # "sample" predictions are exact x0 in [-1, 1]-ish: clip them; the others run unclipped
    clip = 1.0 if prediction == "sample" else None
    check_2x(backend, device, dtype, _step(kind, t, t_prev, prediction, clip, guided), make, names)


@pytest.mark.parametrize("backend,device", fast_backends())
def test_same_noise_as_reference_for_a_seed(backend, device):
    x = torch.zeros(3, 2, 5, device=device)
    m = torch.zeros_like(x)
    with genkernels.use_backend(backend):
        fast = ddpm_step(m, x, 50, SCHED, prediction="sample", seed=123, offset=9)
    sigma = math.sqrt(SCHED.posterior_variance[50].item())
    z = philox_normal((3, 2, 5), 123, 9)
    torch.testing.assert_close(fast.cpu(), sigma * z, rtol=1e-5, atol=1e-6)


def test_deterministic_ddim_and_no_noise_at_t0():
    x, m = torch.randn(2, 8), torch.randn(2, 8)
    a = ddim_step(m, x, 40, 20, SCHED, eta=0.0, seed=1)
    b = ddim_step(m, x, 40, 20, SCHED, eta=0.0, seed=2)
    torch.testing.assert_close(a, b)
    c = ddpm_step(m, x, 0, SCHED, seed=1)
    d = ddpm_step(m, x, 0, SCHED, seed=2)
    torch.testing.assert_close(c, d)
    assert not torch.allclose(ddpm_step(m, x, 5, SCHED, seed=1), ddpm_step(m, x, 5, SCHED, seed=2))


def test_exact_denoiser_recovers_data():
    """With the exact eps of a point mass at x0, one DDIM step to -1 returns x0; DDPM's mean does too."""
    x0 = torch.full((2, 6), 0.7, dtype=torch.float64)
    t = 60
    x_t = SCHED.sqrt_alphas_cumprod[t] * x0 + SCHED.sqrt_one_minus_alphas_cumprod[t] * torch.randn_like(x0)
    eps = (x_t - SCHED.sqrt_alphas_cumprod[t] * x0) / SCHED.sqrt_one_minus_alphas_cumprod[t]
    torch.testing.assert_close(ddim_step(eps, x_t, t, -1, SCHED), x0)
    v = SCHED.sqrt_alphas_cumprod[t] * eps - SCHED.sqrt_one_minus_alphas_cumprod[t] * x0
    torch.testing.assert_close(ddim_step(v, x_t, t, -1, SCHED, prediction="v"), x0)
    mean = SCHED.posterior_mean_coef1[t] * x0 + SCHED.posterior_mean_coef2[t] * x_t
    with genkernels.use_backend("torch"):
        z = philox_normal((2, 6), 0, t, dtype=torch.float64)
    expected = mean + SCHED.posterior_variance[t].sqrt() * z
    torch.testing.assert_close(ddpm_step(eps, x_t, t, SCHED, seed=0), expected, rtol=1e-5, atol=1e-6)


def test_guidance_scale_one_equals_conditional():
    x, m, u = torch.randn(2, 8), torch.randn(2, 8), torch.randn(2, 8)
    torch.testing.assert_close(ddim_step(m, x, 40, 20, SCHED, guidance_scale=1.0, model_output_uncond=u),
                               ddim_step(m, x, 40, 20, SCHED))


def test_errors_name_the_argument():
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="eta"):
        ddim_step(x, x, 10, 5, SCHED, eta=1.5)
    with pytest.raises(ValueError, match="t_prev must be smaller"):
        ddim_step(x, x, 10, 10, SCHED)
    with pytest.raises(ValueError, match="guidance_scale is required"):
        ddpm_step(x, x, 10, SCHED, model_output_uncond=x)
    with pytest.raises(ValueError, match="offset is required"):
        ddpm_step(x, x, torch.tensor([3, 4]), SCHED)
    with pytest.raises(ValueError, match="clip_x0"):
        ddpm_step(x, x, 3, SCHED, clip_x0=-1.0)
    with pytest.raises(ValueError, match="model_output"):
        ddpm_step(torch.randn(2, 5), x, 3, SCHED)
    with pytest.raises(ValueError, match="variance"):
        ddpm_step(x, x, 3, SCHED, variance="learned")
    with pytest.raises(ValueError, match="seed"):
        ddpm_step(x, x, 3, SCHED, seed=-1)


@pytest.mark.parametrize("permute", [False, True])
def test_opcheck(permute):
    m, x, u = (torch.randn(3, 4, 5) for _ in range(3))
    if permute:
        m, x, u = (v.transpose(1, 2) for v in (m, x, u))
    m.requires_grad_()
    table = SCHED.table("cpu")
    t = torch.tensor([0, 5, 99])
    op = torch.ops.genkernels.sampler_step.default
    torch.library.opcheck(op, (m, None, x, t, 0, None, 0, table, 0, 2, 1.0, 1.0, 0.0, False, 3, 4))
    torch.library.opcheck(op, (m, u, x, None, 50, torch.tensor([-1, 4, 49]), 0, table, 1, 0, 2.5, math.inf, 0.5, False, 3, 4))


def test_direct_call_path_equals_the_registered_op():
    """Without autograd the public functions call the kernel directly; the results must not change."""
    m, x, u = (torch.randn(3, 40) for _ in range(3))
    with torch.no_grad():
        direct = ddim_step(m, x, 60, 20, SCHED, eta=0.3, seed=4, guidance_scale=2.0, model_output_uncond=u)
    via_op = ddim_step(m.requires_grad_(), x, 60, 20, SCHED, eta=0.3, seed=4, guidance_scale=2.0,
                       model_output_uncond=u)
    assert via_op.grad_fn is not None
    torch.testing.assert_close(direct, via_op.detach(), rtol=0, atol=0)
