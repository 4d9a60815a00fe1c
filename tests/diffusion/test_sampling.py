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


@pytest.mark.parametrize("sampler", [ddpm_sample, ddim_sample])
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


@pytest.mark.parametrize("sampler", [ddpm_sample, ddim_sample])
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
