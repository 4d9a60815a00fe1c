"""Diffusion noise schedules, fused noise-schedule ops and complete samplers."""
from genkernels.diffusion.sampling import ddim_sample, ddim_timesteps, ddpm_sample
from genkernels.diffusion.schedules import (
    SCHEDULES,
    NoiseSchedule,
    cosine_schedule,
    linear_schedule,
    make_schedule,
    min_snr_weights,
    scaled_linear_schedule,
    sigmoid_schedule,
)
from genkernels.ops.diffusion_loss import diffusion_loss
from genkernels.ops.philox import philox_normal
from genkernels.ops.q_sample import q_sample
from genkernels.ops.sampler_step import ddim_step, ddpm_step

__all__ = [
    "SCHEDULES", "NoiseSchedule", "make_schedule", "linear_schedule", "scaled_linear_schedule", "cosine_schedule",
    "sigmoid_schedule", "min_snr_weights", "q_sample", "diffusion_loss", "ddpm_step", "ddim_step", "philox_normal",
    "ddpm_sample", "ddim_sample", "ddim_timesteps",
]
