"""Complete samplers over the fused steps: DDPM ancestral, strided DDIM, DPM-Solver++(2M) and Euler /
Euler-ancestral in sigma space (optionally on Karras sigmas), plus DDIM inversion.

`model` is any callable (x, t) -> model output with t an (N,) tensor: int64 timesteps for ddpm,
ddim and dpm_solver (and euler on the schedule's own steps), float32 fractional timesteps for
euler with karras=True. Classifier-free guidance, two ways (guidance_scale w: m = u + w (c - u)):
  - model_uncond given: two calls per step, model(x, t) and model_uncond(x, t);
  - model_uncond None: model(x, t) must return the pair (cond_out, uncond_out) from ONE batched
    forward (the caller concatenates the conditional and unconditional rows).
Either way the fused step does the combine. Step counts are model evaluations: 50 steps are 50
calls of `model` (100 rows with batched guidance).

Common keyword arguments: seed (the Philox stream of x_T and of any added noise; the same seed
gives the same samples on CPU and GPU), x_T (start from this (N, ...) tensor, in the usual VP
scaling x_T ~ N(0, I), instead of drawing it; converted to `device`/`dtype`), callback(x, t_next)
-> Tensor | None called after every step with x at timestep t_next (the int step x now sits at,
-1 once clean); a returned tensor replaces x (inpainting). progress shows a tqdm bar.
"""
from __future__ import annotations

import math

import torch

from genkernels.diffusion.schedules import karras_sigmas, sigma_to_timestep
from genkernels.ops.dpm_solver_step import dpm_solver_step
from genkernels.ops.euler_step import euler_step
from genkernels.ops.philox import philox_normal
from genkernels.ops.sampler_step import ddim_step, ddpm_step

_SAMPLE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def ddim_timesteps(num_steps: int, num_inference_steps: int) -> list[int]:
    """`num_inference_steps` steps evenly spaced from T-1 down to 0, both included (diffusers'
    "linspace" spacing): one model call each, the first on pure noise, the last at t = 0."""
    _check_step_counts(num_steps, num_inference_steps)
    if not 1 <= num_inference_steps <= num_steps:
        raise ValueError(f"num_inference_steps must be in [1, {num_steps}], got {num_inference_steps}")
    if num_inference_steps == 1:
        return [num_steps - 1]
    # spacing (T-1)/(n-1) >= 1, so the rounded steps are distinct and strictly decreasing
    last = num_inference_steps - 1
    return [round((num_steps - 1) * (last - i) / last) for i in range(num_inference_steps)]


def dpm_solver_timesteps(num_steps: int, num_inference_steps: int) -> list[int]:
    """`num_inference_steps` steps from T-1 down to about (T-1)/n (diffusers' "linspace" spacing for
    DPMSolverMultistepScheduler: linspace(0, T-1, n+1) rounded, reversed, without the 0); the step
    after the last one goes to the clean sample, so t = 0 costs no model call."""
    _check_step_counts(num_steps, num_inference_steps)
    if not 1 <= num_inference_steps <= max(num_steps - 1, 1):
        raise ValueError(f"num_inference_steps must be in [1, {max(num_steps - 1, 1)}], got {num_inference_steps}")
    n = num_inference_steps
    return [round((num_steps - 1) * (n - i) / n) for i in range(n)]


def _check_step_counts(num_steps, num_inference_steps):
    for name, value in (("num_steps", num_steps), ("num_inference_steps", num_inference_steps)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")


def _check_sampler_args(shape, dtype, model_uncond, guidance_scale, callback=None):
    if not isinstance(dtype, torch.dtype) or dtype not in _SAMPLE_DTYPES:
        raise TypeError(f"dtype must be one of {', '.join(map(str, _SAMPLE_DTYPES))}, got {dtype!r}")
    if (not isinstance(shape, (tuple, list, torch.Size)) or len(shape) == 0
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
        raise ValueError(f"shape must be a non-empty tuple of non-negative ints (N, ...), got {shape!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable (x, t_next) -> Tensor | None, got {type(callback).__name__}")
    if model_uncond is not None:
        if not callable(model_uncond):
            raise TypeError(f"model_uncond must be callable (x_t, t) -> output, got {type(model_uncond).__name__}")
        if guidance_scale is None:
            raise ValueError("guidance_scale is required when model_uncond is given")
    if guidance_scale is not None:
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)):
            raise TypeError(f"guidance_scale must be a number, got {type(guidance_scale).__name__}")
        if not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be finite, got {guidance_scale!r}")


def _model_outputs(model, model_uncond, guidance_scale, x, t_vec):
    """(cond, uncond or None): two calls with model_uncond, one batched call returning a pair without."""
    out = model(x, t_vec)
    if model_uncond is not None:
        return out, model_uncond(x, t_vec)
    if guidance_scale is None:
        return out, None
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise ValueError(f"guidance_scale={guidance_scale!r} needs model_uncond, or a model that returns the pair"
                         f" (cond_out, uncond_out) from one batched forward; the model returned"
                         f" {type(out).__name__}")
    return out[0], out[1]


def _initial(x_T, shape, seed, offset, device, dtype):
    if x_T is None:
        return philox_normal(shape, seed, offset, device=device, dtype=dtype)
    if not isinstance(x_T, torch.Tensor) or not x_T.is_floating_point():
        raise TypeError(f"x_T must be a floating-point tensor, got "
                        f"{x_T.dtype if isinstance(x_T, torch.Tensor) else type(x_T).__name__}")
    if tuple(x_T.shape) != tuple(shape):
        raise ValueError(f"x_T must have the sample shape {tuple(shape)}, got {tuple(x_T.shape)}")
    return x_T.to(device=device, dtype=dtype, copy=True)


def _after_step(callback, x, t_next):
    if callback is None:
        return x
    out = callback(x, t_next)
    if out is None:
        return x
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        raise ValueError(f"callback must return None or a tensor of shape {tuple(x.shape)}, got "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    return out.to(device=x.device, dtype=x.dtype)


def _progress(items, on, desc):
    if not on:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)


@torch.no_grad()
def ddpm_sample(model, shape, schedule, *, prediction="epsilon", seed=0, device="cpu", dtype=torch.float32,
                clip_x0=None, model_uncond=None, guidance_scale=None, variance="small", progress=False,
                callback=None, x_T=None, num_inference_steps=None):
    """Ancestral sampling over all T steps (T model calls) from x_T ~ N(0, I) (drawn with Philox,
    offset T, unless given). dtype: float32, float16, bfloat16 or float64 (float64 runs the
    reference). num_inference_steps: None or T; fewer steps run the strided ancestral sampler,
    DDIM with eta = 1 (variance="small" only). callback(x, t - 1) after each step."""
    T = schedule.num_steps
    if num_inference_steps is not None and num_inference_steps != T:
        if variance != "small":
            raise ValueError(f"strided DDPM (num_inference_steps={num_inference_steps!r} < T={T}) supports"
                             f" variance='small' only, got {variance!r}")
        return ddim_sample(model, shape, schedule, num_inference_steps=num_inference_steps, eta=1.0,
                           prediction=prediction, seed=seed, device=device, dtype=dtype, clip_x0=clip_x0,
                           model_uncond=model_uncond, guidance_scale=guidance_scale, progress=progress,
                           callback=callback, x_T=x_T)
    _check_sampler_args(shape, dtype, model_uncond, guidance_scale, callback)
    x = _initial(x_T, shape, seed, T, device, dtype)
    for t in _progress(range(T - 1, -1, -1), progress, "ddpm"):
        t_vec = torch.full((shape[0],), t, dtype=torch.int64, device=device)
        cond, uncond = _model_outputs(model, model_uncond, guidance_scale, x, t_vec)
        x = ddpm_step(cond, x, t, schedule, prediction=prediction, seed=seed, offset=t, clip_x0=clip_x0,
                      guidance_scale=guidance_scale, model_output_uncond=uncond, variance=variance)
        x = _after_step(callback, x, t - 1)
    return x


@torch.no_grad()
def ddim_sample(model, shape, schedule, *, num_inference_steps=50, eta=0.0, prediction="epsilon", seed=0,
                device="cpu", dtype=torch.float32, clip_x0=None, model_uncond=None, guidance_scale=None,
                progress=False, callback=None, x_T=None):
    """DDIM sampling over `num_inference_steps` strided steps (that many model calls, see
    ddim_timesteps), eta in [0, 1]. With eta = 0 and x_T = ddim_invert(...) it decodes an
    inversion. dtype as in ddpm_sample. callback(x, t_prev) after each step."""
    _check_sampler_args(shape, dtype, model_uncond, guidance_scale, callback)
    steps = ddim_timesteps(schedule.num_steps, num_inference_steps)
    x = _initial(x_T, shape, seed, schedule.num_steps, device, dtype)
    for t, t_prev in _progress(list(zip(steps, steps[1:] + [-1])), progress, "ddim"):
        t_vec = torch.full((shape[0],), t, dtype=torch.int64, device=device)
        cond, uncond = _model_outputs(model, model_uncond, guidance_scale, x, t_vec)
        x = ddim_step(cond, x, t, t_prev, schedule, eta=eta, prediction=prediction, seed=seed, offset=t,
                      clip_x0=clip_x0, guidance_scale=guidance_scale, model_output_uncond=uncond)
        x = _after_step(callback, x, t_prev)
    return x


@torch.no_grad()
def dpm_solver_sample(model, shape, schedule, *, num_inference_steps=20, prediction="epsilon", seed=0, device="cpu",
                      dtype=torch.float32, model_uncond=None, guidance_scale=None, callback=None, progress=False,
                      x_T=None, clip_x0=None):
    """DPM-Solver++(2M) (Lu et al. 2022): `num_inference_steps` model calls on dpm_solver_timesteps,
    first order on the first step and on the last (to the clean sample), second order between.
    Deterministic given x_T. clip_x0 clips each x0 prediction. callback(x, t_prev) after each step
    (a replaced x keeps the x0 history of the solver)."""
    _check_sampler_args(shape, dtype, model_uncond, guidance_scale, callback)
    steps = dpm_solver_timesteps(schedule.num_steps, num_inference_steps)
    x = _initial(x_T, shape, seed, schedule.num_steps, device, dtype)
    x0_prev, t_last = None, None
    for t, t_prev in _progress(list(zip(steps, steps[1:] + [-1])), progress, "dpm_solver"):
        t_vec = torch.full((shape[0],), t, dtype=torch.int64, device=device)
        cond, uncond = _model_outputs(model, model_uncond, guidance_scale, x, t_vec)
        if t_prev == -1:  # the step to the clean sample is first order (returns x0)
            x0_prev, t_last = None, None
        x, x0_prev = dpm_solver_step(cond, x, t, t_prev, schedule, prediction=prediction, x0_prev=x0_prev,
                                     t_last=t_last, clip_x0=clip_x0, guidance_scale=guidance_scale,
                                     model_output_uncond=uncond)
        t_last = t
        x = _after_step(callback, x, t_prev)
    return x


def euler_sigmas(schedule, num_inference_steps: int, karras: bool = False, rho: float = 7.0,
                 sigma_max: float | None = None):
    """(sigmas (n,) float64, model timesteps (n,)) of euler_sample: the schedule's sigmas at
    ddim_timesteps (int64 timesteps), or karras_sigmas(n, sigma_0, sigma_max, rho) with their
    fractional timesteps (float32, by log-sigma interpolation); sigma_max defaults to the
    schedule's sigma_{T-1} (karras only: a smaller one starts from a less noisy level)."""
    if sigma_max is not None and not karras:
        raise ValueError("sigma_max applies to karras=True only (the schedule's own sigmas are used otherwise)")
    if karras:
        top = schedule.sigmas[-1].item() if sigma_max is None else sigma_max
        sigmas = karras_sigmas(num_inference_steps, schedule.sigmas[0].item(), top, rho)
        return sigmas, sigma_to_timestep(schedule, sigmas).float()
    steps = torch.tensor(ddim_timesteps(schedule.num_steps, num_inference_steps), dtype=torch.int64)
    return schedule.sigmas[steps], steps


@torch.no_grad()
def euler_sample(model, shape, schedule, *, num_inference_steps=50, ancestral=False, karras=False,
                 prediction="epsilon", seed=0, device="cpu", dtype=torch.float32, model_uncond=None,
                 guidance_scale=None, callback=None, progress=False, x_T=None, clip_x0=None, rho=7.0,
                 sigma_max=None):
    """Euler / Euler-ancestral (eta = 1) sampling in sigma space (Karras et al. 2022, k-diffusion),
    `num_inference_steps` model calls, the last one stepping to sigma = 0.

    Noise levels: the schedule's sigmas at ddim_timesteps (the model gets int64 t), or with
    karras=True Karras sigmas between the schedule's sigma_min and sigma_max (the model gets float32
    fractional t, see sigma_to_timestep). The sampler keeps x = x0 + sigma eps and feeds the model
    x / sqrt(1 + sigma^2), the VP sample of that noise level. x_T (VP scaling, ~N(0, I)) starts it
    as x_T sqrt(1 + sigma_max^2). The ancestral noise of step i is Philox (seed, T + 1 + i).
    callback(x, t_next) sees x in VP scaling, x / sqrt(1 + sigma_next^2), and t_next the nearest
    integer timestep of sigma_next (-1 once sigma_next = 0); a returned tensor (VP scaling too)
    replaces x. rho, sigma_max: of the Karras sigmas (karras=True). float16: x in sigma scaling
    reaches |x_T| sqrt(1 + sigma_max^2), which overflows float16 for sigma_max > ~8000 (the cosine
    schedule's is ~2e4 at T=1000): that is an error; use bfloat16/float32 or a smaller sigma_max.
    """
    _check_sampler_args(shape, dtype, model_uncond, guidance_scale, callback)
    T = schedule.num_steps
    sigmas, timesteps = euler_sigmas(schedule, num_inference_steps, karras, rho, sigma_max)
    sig = sigmas.tolist() + [0.0]
    if dtype == torch.float16 and 8.0 * math.sqrt(1.0 + sig[0] ** 2) > torch.finfo(torch.float16).max:
        raise ValueError(f"euler_sample in float16: the largest sigma {sig[0]:.4g} would overflow x = x0 + sigma eps"
                         f" (needs sigma_max <= 8000); use dtype=torch.bfloat16 or float32, or karras=True with"
                         f" a smaller sigma_max")
    x = _initial(x_T, shape, seed, T, device, dtype) * math.sqrt(1.0 + sig[0] ** 2)
    t_next_int = [int(round(v)) for v in sigma_to_timestep(schedule, sigmas[1:]).tolist()] + [-1]
    for i in _progress(range(len(sigmas)), progress, "euler_a" if ancestral else "euler"):
        sigma, sigma_next = sig[i], sig[i + 1]
        t_vec = timesteps[i].repeat(shape[0]).to(device)
        cond, uncond = _model_outputs(model, model_uncond, guidance_scale, x / math.sqrt(1.0 + sigma**2), t_vec)
        x = euler_step(cond, x, sigma, sigma_next, prediction=prediction, eta=1.0 if ancestral else 0.0, seed=seed,
                       offset=T + 1 + i, clip_x0=clip_x0, guidance_scale=guidance_scale, model_output_uncond=uncond)
        if callback is not None:
            scale = math.sqrt(1.0 + sigma_next**2)
            x = _after_step(callback, x / scale, t_next_int[i]) * scale
    return x


def euler_ancestral_sample(model, shape, schedule, **kwargs):
    """euler_sample(..., ancestral=True)."""
    return euler_sample(model, shape, schedule, ancestral=True, **kwargs)


@torch.no_grad()
def ddim_invert(model, x0, schedule, *, num_inference_steps=50, prediction="epsilon", model_uncond=None,
                guidance_scale=None, progress=False):
    """DDIM inversion (eta = 0): runs the deterministic DDIM update backwards over the steps of
    ddim_sample(num_inference_steps) and returns x_T, so ddim_sample(..., x_T=x_T, eta=0) with the
    same model and steps reconstructs x0 (up to the O(step) error of evaluating the model at the
    lower noise level). Each step from level t_cur to t (the ddim_timesteps, ascending from the
    clean sample) calls the model once at (x, t), takes eps from its output, and sets
    x = alpha_t (x - sigma_cur eps) / alpha_cur + sigma_t eps (alpha = sqrt(alpha-bar), sigma =
    sqrt(1 - alpha-bar); alpha = 1, sigma = 0 for the clean sample). x0: (N, ...) floating tensor;
    the result has its dtype and device (coefficients in float64)."""
    if not isinstance(x0, torch.Tensor) or not x0.is_floating_point() or x0.dim() == 0:
        raise TypeError(f"x0 must be a floating-point tensor with a batch dimension, got "
                        f"{x0.dtype if isinstance(x0, torch.Tensor) else type(x0).__name__}")
    if prediction not in ("epsilon", "sample", "v"):
        raise ValueError(f"prediction must be one of ('epsilon', 'sample', 'v'), got {prediction!r}")
    _check_sampler_args(tuple(x0.shape), x0.dtype, model_uncond, guidance_scale)
    steps = ddim_timesteps(schedule.num_steps, num_inference_steps)[::-1]
    ac, om = schedule.alphas_cumprod.tolist(), schedule.one_minus_alphas_cumprod.tolist()
    x = x0.clone()
    a_cur, s_cur = 1.0, 0.0
    for t in _progress(steps, progress, "ddim_invert"):
        t_vec = torch.full((x.shape[0],), t, dtype=torch.int64, device=x.device)
        cond, uncond = _model_outputs(model, model_uncond, guidance_scale, x, t_vec)
        m = cond if uncond is None else uncond + guidance_scale * (cond - uncond)
        a, s = math.sqrt(ac[t]), math.sqrt(om[t])
        if prediction == "epsilon":
            eps = m
        elif prediction == "sample":
            eps = (x - a * m) / s
        else:
            eps = a * m + s * x
        x = (a / a_cur) * x + (s - a * s_cur / a_cur) * eps
        a_cur, s_cur = a, s
    return x


SAMPLERS = {"ddpm": ddpm_sample, "ddim": ddim_sample, "dpm_solver": dpm_solver_sample, "euler": euler_sample,
            "euler_ancestral": euler_ancestral_sample}


def sampler_names() -> list[str]:
    """Names of SAMPLERS: ddpm, ddim, dpm_solver, euler, euler_ancestral."""
    return list(SAMPLERS)
