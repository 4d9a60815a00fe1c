import pytest
import torch

import genkernels
from genkernels.diffusion import ddim_sample, ddim_timesteps, ddpm_sample, make_schedule

SCHED = make_schedule("linear", 200)


def _point_mass_denoiser(value):
    """The exact eps-predictor for data that is always `value`."""
    def model(x, t):
        a = SCHED.sqrt_alphas_cumprod.float()[t].view(-1, 1)
        s = SCHED.sqrt_one_minus_alphas_cumprod.float()[t].view(-1, 1)
        return (x - a * value) / s
    return model


def test_samplers_recover_a_point_mass():
    model = _point_mass_denoiser(0.5)
    x = ddim_sample(model, (4, 8), SCHED, num_inference_steps=20)
    torch.testing.assert_close(x, torch.full_like(x, 0.5), rtol=0, atol=1e-3)
    x = ddpm_sample(model, (4, 8), SCHED, seed=3)
    torch.testing.assert_close(x, torch.full_like(x, 0.5), rtol=0, atol=1e-3)


def test_seed_reproduces_trajectory_across_backends():
    model = lambda x, t: 0.1 * x  # noqa: E731
    with genkernels.use_backend("torch"):
        ref = ddim_sample(model, (2, 5), SCHED, num_inference_steps=10, eta=1.0, seed=7, clip_x0=1.0)
    fast = ddim_sample(model, (2, 5), SCHED, num_inference_steps=10, eta=1.0, seed=7, clip_x0=1.0)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)
    other = ddim_sample(model, (2, 5), SCHED, num_inference_steps=10, eta=1.0, seed=8, clip_x0=1.0)
    assert not torch.allclose(fast, other)


def test_ddim_timesteps():
    steps = ddim_timesteps(1000, 50)
    assert steps[0] == 999 and steps[-1] == 0 and steps == sorted(steps, reverse=True)
    assert len(set(steps)) == len(steps)


def _counting(model):
    calls = []

    def counted(x, t):
        calls.append(int(t[0]))
        return model(x, t)
    return counted, calls


def test_model_calls_match_the_requested_steps():
    """ddim_sample(num_inference_steps=n) calls the model n times (as diffusers does), from T-1
    down to 0; ddpm_sample calls it T times."""
    model, calls = _counting(_point_mass_denoiser(0.5))
    for n in (1, 7, 50):
        calls.clear()
        ddim_sample(model, (1, 2), SCHED, num_inference_steps=n)
        assert len(calls) == n and calls[0] == 199 and calls[-1] == (0 if n > 1 else 199)
    schedule = make_schedule("linear", 1000)
    calls.clear()
    ddim_sample(lambda x, t: calls.append(1) or torch.zeros_like(x), (1, 2), schedule, num_inference_steps=50)
    assert len(calls) == 50
    calls.clear()
    ddpm_sample(model, (1, 2), SCHED)
    assert calls == list(range(199, -1, -1))


def test_ddim_timesteps_spacing_and_errors():
    assert ddim_timesteps(1000, 50)[:3] == [999, 979, 958] and len(ddim_timesteps(1000, 50)) == 50
    assert ddim_timesteps(10, 10) == list(range(9, -1, -1))
    assert ddim_timesteps(10, 1) == [9]
    for n in (1, 2, 3, 99, 100):
        steps = ddim_timesteps(100, n)
        assert len(steps) == n and steps == sorted(set(steps), reverse=True)
    with pytest.raises(ValueError, match="num_inference_steps"):
        ddim_timesteps(100, 0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        ddim_timesteps(100, 101)
    with pytest.raises(TypeError, match="num_inference_steps"):
        ddim_timesteps(100, 2.5)


@pytest.mark.parametrize("scale, expected", [(0.0, -0.5), (3.5, 3.0)])
def test_guidance_scale_moves_samples(scale, expected):
    """Guided eps of two point masses is the eps of the point mass u + w (c - u): DDIM (eta = 0)
    lands on it. At w = 1 the unconditional model would have no effect; these scales need it."""
    cond, uncond = _point_mass_denoiser(0.5), _point_mass_denoiser(-0.5)
    x = ddim_sample(cond, (2, 4), SCHED, num_inference_steps=10, model_uncond=uncond, guidance_scale=scale)
    torch.testing.assert_close(x, torch.full_like(x, expected), rtol=0, atol=1e-3)
    x = ddpm_sample(cond, (2, 4), SCHED, model_uncond=uncond, guidance_scale=scale, seed=1)
    torch.testing.assert_close(x, torch.full_like(x, expected), rtol=0, atol=1e-2)


@pytest.mark.parametrize("sampler", list(genkernels.diffusion.SAMPLERS.values()))
def test_guidance_without_an_unconditional_model_is_an_error(sampler):
    model = _point_mass_denoiser(0.5)
    with pytest.raises(ValueError, match="guidance_scale=3.5 needs model_uncond"):
        sampler(model, (2, 4), SCHED, guidance_scale=3.5)
    with pytest.raises(ValueError, match="guidance_scale is required when model_uncond"):
        sampler(model, (2, 4), SCHED, model_uncond=model)
    with pytest.raises(ValueError, match="guidance_scale must be finite"):
        sampler(model, (2, 4), SCHED, model_uncond=model, guidance_scale=float("nan"))
    with pytest.raises(TypeError, match="model_uncond must be callable"):
        sampler(model, (2, 4), SCHED, model_uncond=3, guidance_scale=2.0)


@pytest.mark.parametrize("sampler", list(genkernels.diffusion.SAMPLERS.values()))
def test_dtypes(sampler):
    point_mass = _point_mass_denoiser(0.5)
    model = lambda x, t: point_mass(x.float(), t).to(x.dtype)  # noqa: E731  (outputs in x's dtype)
    x64 = sampler(model, (2, 3), SCHED, dtype=torch.float64, seed=2)
    x32 = sampler(model, (2, 3), SCHED, seed=2)
    assert x64.dtype == torch.float64
    torch.testing.assert_close(x64.float(), x32, rtol=0, atol=1e-3)
    assert sampler(model, (2, 3), SCHED, dtype=torch.bfloat16).dtype == torch.bfloat16
    for bad in (torch.int64, torch.bool, "float32"):
        with pytest.raises(TypeError, match="dtype must be one of"):
            sampler(model, (2, 3), SCHED, dtype=bad)
    with pytest.raises(ValueError, match="shape"):
        sampler(model, (), SCHED)


# ---- new samplers (DPM-Solver++(2M), Euler, Euler-ancestral), common arguments, DDIM inversion ----
from genkernels.diffusion import (  # noqa: E402
    SAMPLERS,
    ddim_invert,
    dpm_solver_sample,
    dpm_solver_timesteps,
    euler_sample,
    sampler_names,
    timestep_to_sigma,
)

MU, STD = 0.3, 0.5


def _gaussian_denoiser(mu=MU, std=STD, prediction="epsilon", schedule=SCHED):
    """The exact predictor for data x0 ~ N(mu, std^2 I): x_t ~ N(a mu, a^2 std^2 + s^2), so
    E[eps | x_t] = s (x_t - a mu) / (a^2 std^2 + s^2). t may be int64 or fractional float32 (the
    noise level then comes from timestep_to_sigma, as the Euler sampler uses it)."""
    def model(x, t):
        sigma = timestep_to_sigma(schedule, t.cpu().double()).to(x.device)
        ab = (1.0 / (1.0 + sigma**2)).view(-1, *([1] * (x.dim() - 1)))
        a, s = ab.sqrt(), (1 - ab).sqrt()
        xd = x.double()
        eps = s * (xd - a * mu) / (a * a * std * std + s * s)
        x0 = (xd - s * eps) / a
        out = {"epsilon": eps, "sample": x0, "v": a * eps - s * x0}[prediction]
        return out.to(x.dtype)
    return model


CONVERGENCE = [  # (sampler, kwargs): each lands within the tolerances on N(MU, STD^2)
    ("ddpm", {}), ("ddim", dict(num_inference_steps=200)), ("ddim", dict(num_inference_steps=200, eta=1.0)),
    ("dpm_solver", dict(num_inference_steps=50)), ("euler", dict(num_inference_steps=200)),
    ("euler", dict(num_inference_steps=200, karras=True)), ("euler_ancestral", dict(num_inference_steps=200)),
    ("euler_ancestral", dict(num_inference_steps=200, karras=True))]


@pytest.mark.parametrize("name,kwargs", CONVERGENCE)
@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_samplers_converge_to_the_gaussian(name, kwargs, prediction):
    """8192 draws: the sample mean is within 0.02 of MU (its standard error is 0.0055) and the
    standard deviation within 4.5% of STD. Measured: |mean - MU| <= 0.006, std 2.4-3.3% low for
    the first-order samplers at 200 steps of this coarse T=200 schedule (the ODE's discretisation
    error where sigma ~ STD, about 30 steps of it), 0.5% for DPM-Solver++ at 50 steps."""
    x = SAMPLERS[name](_gaussian_denoiser(prediction=prediction), (2048, 4), SCHED, prediction=prediction, seed=1,
                       **kwargs)
    assert abs(x.mean().item() - MU) < 0.02, x.mean().item()
    assert abs(x.std().item() / STD - 1) < 0.045, x.std().item()


def _gaussian_flow(x_T):
    """The probability-flow ODE's exact map x_T -> x0 for the Gaussian data N(MU, STD^2 I)."""
    a_T, s_T = SCHED.sqrt_alphas_cumprod[-1].item(), SCHED.sqrt_one_minus_alphas_cumprod[-1].item()
    return MU + STD * (x_T - a_T * MU) / (a_T**2 * STD**2 + s_T**2) ** 0.5


def test_dpm_solver_is_accurate_in_few_steps():
    """DPM-Solver++(2M) on the Gaussian's probability-flow ODE, against its exact solution: at 20
    steps less than half DDIM's error (measured 0.082 vs 0.21), and second-order convergence
    (measured 0.082 at 20 steps, 0.0063 at 50)."""
    model = _gaussian_denoiser()
    x_T = torch.randn(256, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = _gaussian_flow(x_T)
    err = {}
    for n in (20, 50):
        dpm = dpm_solver_sample(model, x_T.shape, SCHED, num_inference_steps=n, x_T=x_T, dtype=torch.float64)
        err[n] = (dpm - exact).abs().max().item()
    ddim = ddim_sample(model, x_T.shape, SCHED, num_inference_steps=20, x_T=x_T, dtype=torch.float64)
    assert err[20] < 0.5 * (ddim - exact).abs().max().item()
    assert err[50] < err[20] / 6  # first order would give 2.5x


def test_ddim_inversion_round_trip():
    """ddim_invert then ddim_sample(eta=0, x_T=...) with the exact Gaussian denoiser reconstructs
    x0 within 0.06 max abs at 100 steps (measured 0.044; 0.088 at 50, 0.022 at 200 steps of this
    T=200 schedule: the inversion evaluates the model one step off, an O(1/steps) error), and the
    inverted x_T is the Gaussian's exact probability-flow map of x0 within 0.04 (measured 0.020)."""
    g = torch.Generator().manual_seed(0)
    x0 = MU + STD * torch.randn(16, 8, generator=g)
    model = _gaussian_denoiser()
    x_T = ddim_invert(model, x0, SCHED, num_inference_steps=100)
    a_T, s_T = SCHED.sqrt_alphas_cumprod[-1].item(), SCHED.sqrt_one_minus_alphas_cumprod[-1].item()
    flow = a_T * MU + (a_T**2 * STD**2 + s_T**2) ** 0.5 * (x0 - MU) / STD
    torch.testing.assert_close(x_T, flow, rtol=0, atol=0.04)
    rec = ddim_sample(model, x0.shape, SCHED, num_inference_steps=100, x_T=x_T)
    assert (rec - x0).abs().max() < 0.06
    # more steps: a smaller round-trip error
    x_T = ddim_invert(model, x0, SCHED, num_inference_steps=200)
    rec200 = ddim_sample(model, x0.shape, SCHED, num_inference_steps=200, x_T=x_T)
    assert (rec200 - x0).abs().max() < 0.6 * (rec - x0).abs().max()


@pytest.mark.parametrize("name", sampler_names())
def test_same_seed_same_samples_and_kernels_match_reference(name):
    model = _gaussian_denoiser()
    kwargs = dict(num_inference_steps=12) if name != "ddpm" else {}
    a = SAMPLERS[name](model, (3, 2, 5), SCHED, seed=4, **kwargs)
    b = SAMPLERS[name](model, (3, 2, 5), SCHED, seed=4, **kwargs)
    assert torch.equal(a, b)
    with genkernels.use_backend("torch"):
        ref = SAMPLERS[name](model, (3, 2, 5), SCHED, seed=4, **kwargs)
    torch.testing.assert_close(a, ref, rtol=1e-4, atol=1e-4)
    other = SAMPLERS[name](model, (3, 2, 5), SCHED, seed=5, **kwargs)
    assert not torch.allclose(a, other)


@pytest.mark.parametrize("name", sampler_names())
def test_batched_guidance_pair_equals_two_models(name):
    cond, uncond = _point_mass_denoiser(0.5), _point_mass_denoiser(-0.5)
    kwargs = dict(num_inference_steps=10) if name != "ddpm" else {}
    if name.startswith("euler"):  # fractional-t-safe versions of the two point masses
        cond, uncond = _gaussian_denoiser(0.5, 1e-3), _gaussian_denoiser(-0.5, 1e-3)
    calls = []

    def batched(x, t):
        calls.append(t.dtype)
        out = torch.cat([cond(x, t), uncond(x, t)])  # stands for one forward over the doubled batch
        return out.chunk(2)

    two = SAMPLERS[name](cond, (2, 4), SCHED, model_uncond=uncond, guidance_scale=3.5, seed=2, **kwargs)
    one = SAMPLERS[name](batched, (2, 4), SCHED, guidance_scale=3.5, seed=2, **kwargs)
    assert torch.equal(one, two)
    assert len(calls) == (SCHED.num_steps if name == "ddpm" else 10)  # steps are model evaluations


def test_step_counts_are_model_calls_and_timestep_dtypes():
    seen = []

    def model(x, t):
        seen.append((t.dtype, t.shape))
        return torch.zeros_like(x)
    dpm_solver_sample(model, (3, 2), SCHED, num_inference_steps=20)
    assert len(seen) == 20 and seen[0] == (torch.int64, (3,))
    seen.clear()
    euler_sample(model, (3, 2), SCHED, num_inference_steps=15)
    assert len(seen) == 15 and seen[0][0] == torch.int64
    seen.clear()
    euler_sample(model, (3, 2), SCHED, num_inference_steps=15, karras=True, ancestral=True)
    assert len(seen) == 15 and seen[0] == (torch.float32, (3,))
    assert dpm_solver_timesteps(1000, 20)[:3] == [999, 949, 899] and dpm_solver_timesteps(1000, 20)[-1] == 50


@pytest.mark.parametrize("name", sampler_names())
def test_callback_sees_every_step_and_can_replace_x(name):
    model = _gaussian_denoiser()
    kwargs = dict(num_inference_steps=8) if name != "ddpm" else {}
    seen = []

    def record(x, t_next):
        seen.append(t_next)
        assert x.abs().max() < 20  # VP scaling for every sampler, including Euler's sigma space
    plain = SAMPLERS[name](model, (2, 3), SCHED, seed=3, **kwargs)
    same = SAMPLERS[name](model, (2, 3), SCHED, seed=3, callback=record, **kwargs)
    torch.testing.assert_close(same, plain, rtol=1e-5, atol=1e-5)
    assert len(seen) == (SCHED.num_steps if name == "ddpm" else 8) and seen[-1] == -1
    assert seen == sorted(seen, reverse=True)
    # a returned tensor replaces x: pin the first coordinate to 0.25 after every step (inpainting-style)
    def pin(x, t_next):
        x = x.clone()
        x[:, 0] = 0.25
        return x
    pinned = SAMPLERS[name](model, (2, 3), SCHED, seed=3, callback=pin, **kwargs)
    torch.testing.assert_close(pinned[:, 0], torch.full((2,), 0.25), rtol=0, atol=1e-6)
    assert not torch.allclose(pinned[:, 1:], torch.full((2, 2), 0.25))


@pytest.mark.parametrize("name", sampler_names())
def test_x_T_starts_the_trajectory(name):
    model = _gaussian_denoiser()
    kwargs = dict(num_inference_steps=6) if name != "ddpm" else {}
    from genkernels.diffusion import philox_normal
    x_T = philox_normal((2, 3), 9, SCHED.num_steps)  # what seed=9 draws
    torch.testing.assert_close(SAMPLERS[name](model, (2, 3), SCHED, x_T=x_T, seed=9, **kwargs),
                               SAMPLERS[name](model, (2, 3), SCHED, seed=9, **kwargs))
    with pytest.raises(ValueError, match="x_T must have the sample shape"):
        SAMPLERS[name](model, (2, 3), SCHED, x_T=x_T[:1], **kwargs)
    with pytest.raises(TypeError, match="callback must be callable"):
        SAMPLERS[name](model, (2, 3), SCHED, callback=3, **kwargs)
    with pytest.raises(ValueError, match="callback must return None or a tensor"):
        SAMPLERS[name](model, (2, 3), SCHED, callback=lambda x, t: x[:1], **kwargs)


def test_new_sampler_errors():
    model = _gaussian_denoiser()
    with pytest.raises(ValueError, match="num_inference_steps must be in"):
        dpm_solver_sample(model, (2, 3), SCHED, num_inference_steps=200)
    with pytest.raises(ValueError, match="guidance_scale=2.0 needs model_uncond"):
        dpm_solver_sample(model, (2, 3), SCHED, guidance_scale=2.0)
    with pytest.raises(ValueError, match="guidance_scale=2.0 needs model_uncond"):
        euler_sample(model, (2, 3), SCHED, guidance_scale=2.0)
    with pytest.raises(TypeError, match="x0 must be a floating-point tensor"):
        ddim_invert(model, torch.zeros(2, 3, dtype=torch.int64), SCHED)
    with pytest.raises(ValueError, match="prediction must be one of"):
        ddim_invert(model, torch.zeros(2, 3), SCHED, prediction="eps")
    with pytest.raises(ValueError, match="strided DDPM"):
        ddpm_sample(model, (2, 3), SCHED, num_inference_steps=10, variance="large")
    x = ddpm_sample(model, (2, 3), SCHED, num_inference_steps=10)  # strided: DDIM with eta = 1
    assert x.shape == (2, 3)


def test_euler_float16_range_and_sigma_max():
    cosine = make_schedule("cosine", 1000)  # sigma_max ~ 2e4: x = x0 + sigma eps overflows float16
    model = lambda x, t: torch.zeros_like(x)  # noqa: E731
    with pytest.raises(ValueError, match="would overflow"):
        euler_sample(model, (2, 3), cosine, num_inference_steps=5, dtype=torch.float16)
    x = euler_sample(model, (2, 3), cosine, num_inference_steps=5, karras=True, sigma_max=80.0, dtype=torch.float16)
    assert x.dtype == torch.float16 and bool(x.isfinite().all())
    with pytest.raises(ValueError, match="sigma_max applies to karras=True only"):
        euler_sample(model, (2, 3), cosine, num_inference_steps=5, sigma_max=80.0)
