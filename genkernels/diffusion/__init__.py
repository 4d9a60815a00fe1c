"""Diffusion noise schedules, fused noise-schedule ops and complete samplers."""
from genkernels.diffusion.sampling import (
    SAMPLERS,
    ddim_invert,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    dpm_solver_sample,
    dpm_solver_timesteps,
    euler_ancestral_sample,
    euler_sample,
    euler_sigmas,
    sampler_names,
)
from genkernels.diffusion.schedules import (
    SCHEDULES,
    NoiseSchedule,
    cosine_schedule,
    karras_sigmas,
    linear_schedule,
    make_schedule,
    min_snr_weights,
    scaled_linear_schedule,
    sigma_to_timestep,
    sigmoid_schedule,
    timestep_to_sigma,
)
from genkernels.ops.diffusion_loss import diffusion_loss
from genkernels.ops.dpm_solver_step import dpm_solver_step
from genkernels.ops.euler_step import euler_step
from genkernels.ops.philox import philox_normal
from genkernels.ops.q_sample import q_sample
from genkernels.ops.sampler_step import ddim_step, ddpm_step

__all__ = [
    "SCHEDULES", "NoiseSchedule", "make_schedule", "linear_schedule", "scaled_linear_schedule", "cosine_schedule",
    "sigmoid_schedule", "min_snr_weights", "q_sample", "diffusion_loss", "ddpm_step", "ddim_step", "philox_normal",
    "ddpm_sample", "ddim_sample", "ddim_timesteps",
    "dpm_solver_step", "euler_step", "karras_sigmas", "sigma_to_timestep", "timestep_to_sigma", "SAMPLERS",
    "sampler_names", "dpm_solver_sample", "dpm_solver_timesteps", "euler_sample", "euler_ancestral_sample",
    "euler_sigmas", "ddim_invert",
]
