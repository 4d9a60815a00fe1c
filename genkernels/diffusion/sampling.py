"""Complete samplers over the fused steps: DDPM ancestral sampling and strided DDIM.

`model` is any callable (x_t, t) -> model output, with t an int64 tensor (N,). For classifier-free
guidance pass `model_uncond` and `guidance_scale`. The step index is the Philox offset, so a seed
reproduces a whole trajectory, on CPU and on GPU.
"""
from __future__ import annotations

import torch

from genkernels.ops.sampler_step import ddim_step, ddpm_step


def ddim_timesteps(num_steps: int, num_inference_steps: int) -> list[int]:
    """Evenly spaced steps T-1 ... 0 ("trailing" spacing, so the last step reaches t=0)."""
    if not 1 <= num_inference_steps <= num_steps:
        raise ValueError(f"num_inference_steps must be in [1, {num_steps}], got {num_inference_steps}")
    ratio = num_steps / num_inference_steps
    return sorted({int(round(num_steps - 1 - i * ratio)) for i in range(num_inference_steps)} | {0}, reverse=True)


def _guided_outputs(model, model_uncond, x, t_vec):
    cond = model(x, t_vec)
    return cond, (model_uncond(x, t_vec) if model_uncond is not None else None)


@torch.no_grad()
def ddpm_sample(model, shape, schedule, *, prediction="epsilon", seed=0, device="cpu", dtype=torch.float32,
                clip_x0=None, model_uncond=None, guidance_scale=None, variance="small", progress=False):
    """Ancestral sampling over all T steps from x_T ~ N(0, I) (itself drawn with Philox, offset T)."""
    from genkernels.ops.philox import philox_normal

    x = philox_normal(shape, seed, schedule.num_steps, device=device, dtype=dtype)
    steps = range(schedule.num_steps - 1, -1, -1)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="ddpm", leave=False)
    for t in steps:
        t_vec = torch.full((shape[0],), t, dtype=torch.int64, device=device)
        cond, uncond = _guided_outputs(model, model_uncond, x, t_vec)
        x = ddpm_step(cond, x, t, schedule, prediction=prediction, seed=seed, offset=t, clip_x0=clip_x0,
                      guidance_scale=guidance_scale if uncond is not None else None, model_output_uncond=uncond,
                      variance=variance)
    return x


@torch.no_grad()
def ddim_sample(model, shape, schedule, *, num_inference_steps=50, eta=0.0, prediction="epsilon", seed=0,
                device="cpu", dtype=torch.float32, clip_x0=None, model_uncond=None, guidance_scale=None,
                progress=False):
    """DDIM sampling over `num_inference_steps` strided steps, eta in [0, 1]."""
    from genkernels.ops.philox import philox_normal

    x = philox_normal(shape, seed, schedule.num_steps, device=device, dtype=dtype)
    steps = ddim_timesteps(schedule.num_steps, num_inference_steps)
    pairs = list(zip(steps, steps[1:] + [-1]))
    if progress:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, desc="ddim", leave=False)
    for t, t_prev in pairs:
        t_vec = torch.full((shape[0],), t, dtype=torch.int64, device=device)
        cond, uncond = _guided_outputs(model, model_uncond, x, t_vec)
        x = ddim_step(cond, x, t, t_prev, schedule, eta=eta, prediction=prediction, seed=seed, offset=t,
                      clip_x0=clip_x0, guidance_scale=guidance_scale if uncond is not None else None,
                      model_output_uncond=uncond)
    return x
