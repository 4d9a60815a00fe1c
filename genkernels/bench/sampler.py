"""Sampler throughput: images/s of 50-step DDIM and 20-step DPM-Solver++(2M) with classifier-free
guidance (the conditional and unconditional rows in one batched forward), fused step ops
(genkernels.diffusion.ddim_sample / dpm_solver_sample) vs an unfused loop over the pure-PyTorch
step references (coefficients from step_coefficients_ref / dpm_solver_coefficients_ref, then the
guidance combine, the x0 conversion and the update as separate eager torch ops).

The denoiser is a small fixed conv net (3x3 conv 3->16, SiLU, 3x3 conv 16->3, a class bias on the
conditional rows), so the step ops are a visible share of the time; `model_share` is the fraction
of the fused run spent in the model calls alone. Outputs of the two loops are checked to agree
before timing.
"""
from __future__ import annotations

import torch

from genkernels.bench.timing import measure
from genkernels.diffusion import ddim_sample, ddim_timesteps, dpm_solver_sample, dpm_solver_timesteps, make_schedule
from genkernels.ops.dpm_solver_step import dpm_solver_coefficients_ref
from genkernels.ops.philox import philox_normal
from genkernels.ops.sampler_step import DDIM, step_coefficients_ref

CHANNELS, HIDDEN, GUIDANCE = 3, 16, 3.0
CASES = (("ddim", 50), ("dpm_solver", 20))


class ConvDenoiser(torch.nn.Module):
    """Two 3x3 convs; forward(x, t) returns (cond, uncond) from one forward over the doubled batch."""

    def __init__(self, channels=CHANNELS, hidden=HIDDEN):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = torch.nn.Conv2d(channels, hidden, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(hidden, channels, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        self.register_buffer("class_bias", 0.05 * torch.randn(1, channels, 1, 1, generator=g))

    def forward(self, x, t):
        h = self.conv2(torch.nn.functional.silu(self.conv1(torch.cat([x, x]))))
        cond, uncond = h.chunk(2)
        return cond + self.class_bias, uncond


def unfused_sample(model, sampler, shape, schedule, steps, seed=0, device="cpu", dtype=torch.float32):
    """The same sampling loop with every step as separate torch ops: per-step coefficients from the
    reference coefficient functions (as Python floats), then the guidance combine, x0 / eps
    conversion and update as eager tensor ops (what a plain PyTorch sampler does)."""
    table = schedule.table("cpu")
    x = philox_normal(shape, seed, schedule.num_steps, device=device, dtype=dtype)
    if sampler == "ddim":
        ts = ddim_timesteps(schedule.num_steps, steps)
    else:
        ts = dpm_solver_timesteps(schedule.num_steps, steps)
    x0_prev, t_last = None, None
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        cond, uncond = model(x, torch.full((shape[0],), t, dtype=torch.int64, device=device))
        m = uncond + GUIDANCE * (cond - uncond)
        if sampler == "ddim":  # eta = 0: no noise term
            p, q, pe, qe, c_x0, c_eps, _, _ = (c.item() for c in step_coefficients_ref(
                table, None, t, None, t_prev, DDIM, 0, 0.0, False, 1))
            x = c_x0 * (p * m + q * x) + c_eps * (pe * m + qe * x)
        else:
            second = x0_prev is not None and t_prev != -1
            p, q, c_x, c_x0, c_last = (c.item() for c in dpm_solver_coefficients_ref(
                table, None, t, None, t_prev, None, t_last if second else 0, 0, second, 1))
            x0 = p * m + q * x
            x = c_x * x + c_x0 * x0
            if second:
                x = x + c_last * x0_prev
            x0_prev, t_last = x0, t
    return x


def fused_sample(model, sampler, shape, schedule, steps, seed=0, device="cpu", dtype=torch.float32):
    fn = ddim_sample if sampler == "ddim" else dpm_solver_sample
    return fn(model, shape, schedule, num_inference_steps=steps, seed=seed, device=device, dtype=dtype,
              guidance_scale=GUIDANCE)


def run_suite(device, sizes=(8, 32), batch=64, dtype=torch.float32):
    device = torch.device(device)
    schedule = make_schedule("cosine", 1000)
    model = ConvDenoiser().to(device, dtype)
    rows = []
    for size in sizes:
        shape = (batch, CHANNELS, size, size)
        for sampler, steps in CASES:
            with torch.no_grad():
                fused = fused_sample(model, sampler, shape, schedule, steps, device=device, dtype=dtype)
                unfused = unfused_sample(model, sampler, shape, schedule, steps, device=device, dtype=dtype)
                err = (fused.float() - unfused.float()).abs().max().item()
                scale = unfused.float().abs().max().item()
                if not err <= 1e-3 * max(scale, 1.0):
                    raise AssertionError(f"{sampler} {size}x{size}: fused and unfused samples differ by {err}")
                x = philox_normal(shape, 0, 0, device=device, dtype=dtype)
                t = torch.full((batch,), 500, dtype=torch.int64, device=device)

                def model_only():
                    for _ in range(steps):
                        model(x, t)

                reps = dict(warmup=1, repeat=5, min_time=0.0)
                s_fused = measure(lambda: fused_sample(model, sampler, shape, schedule, steps, device=device,
                                                       dtype=dtype), device, **reps)
                s_unfused = measure(lambda: unfused_sample(model, sampler, shape, schedule, steps, device=device,
                                                           dtype=dtype), device, **reps)
                s_model = measure(model_only, device, **reps)
            rows.append({"sampler": sampler, "steps": steps, "image_shape": f"{CHANNELS}x{size}x{size}",
                         "batch": batch, "dtype": str(dtype).replace("torch.", ""), "guidance": GUIDANCE,
                         "fused_images_per_s": batch / s_fused, "unfused_images_per_s": batch / s_unfused,
                         "speedup": s_unfused / s_fused, "model_share_fused": s_model / s_fused,
                         "model_share_unfused": s_model / s_unfused, "max_abs_diff": err})
    return rows


COLUMNS = ["sampler", "steps", "image_shape", "batch", "fused_images_per_s", "unfused_images_per_s", "speedup",
           "model_share_fused", "model_share_unfused"]
