import math

import pytest
import torch

import genkernels
from genkernels.diffusion import ddim_step, ddpm_step, philox_normal
from genkernels.ops import sampler_step as sampler_step_module
from tests.ops.diffusion_cases import DTYPES, SIZES, check_2x, fast_backends, schedule, timesteps_for

SCHED = schedule("cosine", 100)
PREDICTIONS = ["epsilon", "sample", "v"]


def _step(kind, t, t_prev, prediction, clip, guidance, variance, eta=0.6):
    def fn(m, x, *uncond):
        extra = dict(guidance_scale=guidance, model_output_uncond=uncond[0]) if guidance is not None else {}
        if kind == "ddpm":
            return ddpm_step(m, x, t, SCHED, prediction=prediction, seed=11, offset=2, clip_x0=clip, variance=variance,
                             **extra)
        return ddim_step(m, x, t, t_prev, SCHED, eta=eta, prediction=prediction, seed=11, offset=2, clip_x0=clip,
                         **extra)
    return fn


# per size: (guidance scale or None for unguided, DDPM variance). Guidance 0 (output = the
# unconditional model) and 3.5 (gradient of the unconditional output -2.5x the conditional one)
# are the scales where a kernel that drops or mis-weights the unconditional output is wrong;
# at 1.0 the unconditional output has no effect at all.
VARIANTS = {1: (0.0, "large"), 7: (3.5, "small"), 1023: (None, "large"), 4097: (3.5, "large")}


@pytest.mark.parametrize("backend,device", fast_backends())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_matches_reference_2x_rule(backend, device, dtype, size, kind, prediction, monkeypatch):
    # The kernels' sinf/cosf/logf and torch's differ in the last place for ~20% of the Philox
    # normals (test_philox holds that difference to a few ulps). Under the fp32 rule that ulp of
    # sigma z is the whole error, so the references here add the noise the kernel draws: the
    # rule then judges the step's own arithmetic.
    def kernel_noise(num_samples, numel, seed, offset, device=None):
        with genkernels.use_backend(backend):
            return philox_normal((num_samples, numel), seed, offset, device=device or "cpu")

    monkeypatch.setattr(sampler_step_module, "philox_normal_ref", kernel_noise)
    batch = 4
    t = timesteps_for(batch, 100, device).clamp(min=1)
    t[1] = 0
    t_prev = torch.where(t > 10, t - 10, torch.full_like(t, -1))
    guidance, variance = VARIANTS[size]
    n_in = 2 if guidance is None else 3
    make = lambda: [torch.randn(batch, size) for _ in range(n_in)]  # noqa: E731
    names = ["model_output", "x_t", "model_output_uncond"][:n_in]
    # "sample" predictions are exact x0 in [-1, 1]-ish: clip them; the others run unclipped
    clip = 1.0 if prediction == "sample" else None
    check_2x(backend, device, dtype, _step(kind, t, t_prev, prediction, clip, guidance, variance), make, names)


@pytest.mark.parametrize("backend,device", fast_backends())
def test_same_noise_as_reference_for_a_seed(backend, device):
    x = torch.zeros(3, 2, 5, device=device)
    m = torch.zeros_like(x)
    with genkernels.use_backend(backend):
        fast = ddpm_step(m, x, 50, SCHED, prediction="sample", seed=123, offset=9)
        large = ddpm_step(m, x, 50, SCHED, prediction="sample", seed=123, offset=9, variance="large")
    sigma = math.sqrt(SCHED.posterior_variance[50].item())
    z = philox_normal((3, 2, 5), 123, 9)
    torch.testing.assert_close(fast.cpu(), sigma * z, rtol=1e-5, atol=1e-6)
    # variance="large" is sigma^2 = beta_t (Ho et al.'s other choice), not the posterior variance
    torch.testing.assert_close(large.cpu(), math.sqrt(SCHED.betas[50].item()) * z, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend,device", fast_backends())
def test_ddim_noise_scale_uses_eta_as_given(backend, device):
    """With m = x = 0 ("sample" prediction) the step is exactly sigma * z. sigma is computed in
    double from eta; rounding eta to float32 first moves sigma by a float32 ulp at these steps
    (found by search: 47 of the 89 steps of this schedule), which the 2x rule sees only by chance."""
    t = torch.tensor([12, 13, 14, 15], device=device)
    zeros = torch.zeros(4, 37, device=device)
    with genkernels.use_backend(backend):
        out = ddim_step(zeros, zeros, t, t - 10, SCHED, eta=0.6, prediction="sample", seed=5, offset=1)
        z = philox_normal((4, 37), 5, 1, device=device)
    om, om_prev = SCHED.one_minus_alphas_cumprod[t.cpu()], SCHED.one_minus_alphas_cumprod[t.cpu() - 10]
    sigma = 0.6 * (om_prev / om * (om - om_prev) / SCHED.alphas_cumprod[t.cpu() - 10]).sqrt()  # float64
    torch.testing.assert_close(out, sigma.float().to(device).view(4, 1) * z, rtol=0, atol=0)


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


@pytest.mark.parametrize("backend,device", fast_backends() + [("torch", "cpu")])
@pytest.mark.parametrize("scale", [0.0, 1.0, 3.5])
def test_guidance_combines_the_two_outputs(backend, device, scale):
    """m_uncond + w (m - m_uncond): w = 0 is the unconditional model alone, 1 the conditional one."""
    x, m, u = (torch.randn(2, 8, device=device) for _ in range(3))
    with genkernels.use_backend(backend):
        guided = ddim_step(m, x, 40, 20, SCHED, eta=0.5, seed=3, guidance_scale=scale, model_output_uncond=u)
        combined = ddim_step(u + scale * (m - u), x, 40, 20, SCHED, eta=0.5, seed=3)
    torch.testing.assert_close(guided, combined, rtol=1e-5, atol=1e-5)


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


def test_t_prev_not_before_t_is_an_error_on_cpu_tensors():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="t_prev must be smaller than t for every sample, got t=10, t_prev=10 at sample"):
        ddim_step(x, x, torch.tensor([10, 10, 10]), torch.tensor([5, 10, 20]), SCHED, offset=0)
    with pytest.raises(ValueError, match="got t=10, t_prev=20 at sample 2"):
        ddim_step(x, x, torch.tensor([50, 40, 10]), 20, SCHED, offset=0)
    with pytest.raises(ValueError, match="got t=5, t_prev=7 at sample 0"):
        ddim_step(x, x, 5, torch.tensor([7, 1, -1]), SCHED, offset=0)
    assert ddim_step(x, x, torch.tensor([50, 40, 10]), torch.tensor([49, -1, 9]), SCHED, offset=0).isfinite().all()


@pytest.mark.parametrize("backend,device", fast_backends())
def test_t_prev_not_before_t_unchecked_in_the_kernel(backend, device):
    """What ddim_step's docstring promises where the check is skipped (CUDA tensors): the kernel
    gives NaN for t_prev > t and returns x_t for t_prev == t (no out-of-range access either way)."""
    m, x = torch.randn(2, 6, device=device), torch.randn(2, 6, device=device)
    t, t_prev = torch.tensor([10, 10], device=device), torch.tensor([20, 10], device=device)
    with genkernels.use_backend(backend):
        out = torch.ops.genkernels.sampler_step.default(m, None, x, t, 0, t_prev, 0, SCHED.table(device), 1, 0, 1.0,
                                                        math.inf, 0.5, False, 1, 2)
    assert out[0].isnan().all()
    torch.testing.assert_close(out[1], x[1])


def test_guidance_scale_must_be_a_finite_number():
    x = torch.randn(2, 4)
    for bad in (float("nan"), float("inf"), "2", True):
        with pytest.raises(ValueError, match="guidance_scale must be a finite number"):
            ddim_step(x, x, 10, 5, SCHED, guidance_scale=bad, model_output_uncond=x)


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
