"""Complete samplers over the fused steps: DDPM ancestral sampling and strided DDIM.

`model` is any callable (x_t, t) -> model output, with t an int64 tensor (N,). For classifier-free
guidance pass `model_uncond` and `guidance_scale` together. The step index is the Philox offset,
so a seed reproduces a whole trajectory, on CPU and on GPU.
"""
from __future__ import annotations

import math

import torch

from genkernels.ops.sampler_step import ddim_step, ddpm_step

_SAMPLE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def ddim_timesteps(num_steps: int, num_inference_steps: int) -> list[int]:
    """`num_inference_steps` steps evenly spaced from T-1 down to 0, both included (diffusers'
    "linspace" spacing): one model call each, the first on pure noise, the last at t = 0."""
    for name, value in (("num_steps", num_steps), ("num_inference_steps", num_inference_steps)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if not 1 <= num_inference_steps <= num_steps:
        raise ValueError(f"num_inference_steps must be in [1, {num_steps}], got {num_inference_steps}")
    if num_inference_steps == 1:
        return [num_steps - 1]
    # spacing (T-1)/(n-1) >= 1, so the rounded steps are distinct and strictly decreasing
    last = num_inference_steps - 1
    return [round((num_steps - 1) * (last - i) / last) for i in range(num_inference_steps)]


def _check_sampler_args(shape, dtype, model_uncond, guidance_scale):
    if not isinstance(dtype, torch.dtype) or dtype not in _SAMPLE_DTYPES:
        raise TypeError(f"dtype must be one of {', '.join(map(str, _SAMPLE_DTYPES))}, got {dtype!r}")
    if (not isinstance(shape, (tuple, list, torch.Size)) or len(shape) == 0
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
        raise ValueError(f"shape must be a non-empty tuple of non-negative ints (N, ...), got {shape!r}")
    if model_uncond is None:
        if guidance_scale is not None:
            raise ValueError(f"guidance_scale={guidance_scale!r} needs model_uncond (the unconditional model):"
                             " without it guidance cannot be applied")
        return
    if not callable(model_uncond):
        raise TypeError(f"model_uncond must be callable (x_t, t) -> output, got {type(model_uncond).__name__}")
    if guidance_scale is None:
        raise ValueError("guidance_scale is required when model_uncond is given")
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)):
        raise TypeError(f"guidance_scale must be a number, got {type(guidance_scale).__name__}")
    if not math.isfinite(guidance_scale):
        raise ValueError(f"guidance_scale must be finite, got {guidance_scale!r}")


def _guided_outputs(model, model_uncond, x, t_vec):
    cond = model(x, t_vec)
    return cond, (model_uncond(x, t_vec) if model_uncond is not None else None)


@torch.no_grad()
def ddpm_sample(model, shape, schedule, *, prediction="epsilon", seed=0, device="cpu", dtype=torch.float32,
                clip_x0=None, model_uncond=None, guidance_scale=None, variance="small", progress=False):
    """Ancestral sampling over all T steps (T model calls) from x_T ~ N(0, I) (itself drawn with
    Philox, offset T). dtype: float32, float16, bfloat16 or float64 (float64 runs the reference)."""
    from genkernels.ops.philox import philox_normal

    _check_sampler_args(shape, dtype, model_uncond, guidance_scale)
    x = philox_normal(shape, seed, schedule.num_steps, device=device, dtype=dtype)
    steps = range(schedule.num_steps - 1, -1, -1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="ddpm", leave=False)
    for t in steps:
        t_vec = torch.full((shape[0],), t, dtype=torch.int64, device=device)
        cond, uncond = _guided_outputs(model, model_uncond, x, t_vec)
        x = ddpm_step(cond, x, t, schedule, prediction=prediction, seed=seed, offset=t, clip_x0=clip_x0,
                      guidance_scale=guidance_scale, model_output_uncond=uncond, variance=variance)
    return x


@torch.no_grad()
def ddim_sample(model, shape, schedule, *, num_inference_steps=50, eta=0.0, prediction="epsilon", seed=0,
                device="cpu", dtype=torch.float32, clip_x0=None, model_uncond=None, guidance_scale=None,
                progress=False):
    """DDIM sampling over `num_inference_steps` strided steps (that many model calls, see
    ddim_timesteps), eta in [0, 1]. dtype as in ddpm_sample."""
    from genkernels.ops.philox import philox_normal

    _check_sampler_args(shape, dtype, model_uncond, guidance_scale)
    steps = ddim_timesteps(schedule.num_steps, num_inference_steps)
    x = philox_normal(shape, seed, schedule.num_steps, device=device, dtype=dtype)
    pairs = list(zip(steps, steps[1:] + [-1]))
    if progress:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, desc="ddim", leave=False)
    for t, t_prev in pairs:
        t_vec = torch.full((shape[0],), t, dtype=torch.int64, device=device)
        cond, uncond = _guided_outputs(model, model_uncond, x, t_vec)
        x = ddim_step(cond, x, t, t_prev, schedule, eta=eta, prediction=prediction, seed=seed, offset=t,
                      clip_x0=clip_x0, guidance_scale=guidance_scale, model_output_uncond=uncond)
    return x
