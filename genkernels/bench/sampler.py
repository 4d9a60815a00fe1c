"""Sampler throughput: images/s of 50-step DDIM and 20-step DPM-Solver++(2M) with classifier-free
guidance (the conditional and unconditional rows in one batched forward), fused step ops
(genkernels.diffusion.ddim_sample / dpm_solver_sample) vs an unfused loop over the pure-PyTorch
step references (coefficients from step_coefficients_ref / dpm_solver_coefficients_ref, then the
guidance combine, the x0 conversion and the update as separate eager torch ops).

The denoiser is a small fixed conv net (3x3 conv 3->16, SiLU, 3x3 conv 16->3, a class bias on the
conditional rows), so the step ops are a visible share of the time; `model_share` is the fraction
of a run spent in the model calls alone, and step_ms_* time one guided step alone (the part the
fusion changes) on the same shapes. Outputs of the two loops are checked to agree before
timing; the runs are interleaved and, on CPU, clocked in process CPU time (wall time beside it), so
that other load on a shared machine distorts the ratios as little as possible.
"""
from __future__ import annotations

import torch

from genkernels.diffusion import (
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    dpm_solver_sample,
    dpm_solver_step,
    dpm_solver_timesteps,
    make_schedule,
)
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


def _unfused_ddim_step(cond, uncond, x, table, t, t_prev):
    """DDIM (eta = 0) with guidance as eager torch ops, coefficients from step_coefficients_ref."""
    p, q, pe, qe, c_x0, c_eps, _, _ = (c.item() for c in step_coefficients_ref(
        table, None, t, None, t_prev, DDIM, 0, 0.0, False, 1))
    m = uncond + GUIDANCE * (cond - uncond)
    return c_x0 * (p * m + q * x) + c_eps * (pe * m + qe * x)


def _unfused_dpm_step(cond, uncond, x, x0_prev, table, t, t_prev, t_last):
    """DPM-Solver++(2M) with guidance as eager torch ops, coefficients from dpm_solver_coefficients_ref."""
    second = x0_prev is not None
    p, q, c_x, c_x0, c_last = (c.item() for c in dpm_solver_coefficients_ref(
        table, None, t, None, t_prev, None, t_last if second else 0, 0, second, 1))
    m = uncond + GUIDANCE * (cond - uncond)
    x0 = p * m + q * x
    out = c_x * x + c_x0 * x0
    if second:
        out = out + c_last * x0_prev
    return out, x0


def unfused_sample(model, sampler, shape, schedule, steps, seed=0, device="cpu", dtype=torch.float32):
    """The same sampling loop with every step as separate eager torch ops (what a plain PyTorch
    sampler does): the guidance combine, x0 / eps conversion and update, with per-step coefficients
    from the reference coefficient functions as Python floats."""
    table = schedule.table("cpu")
    x = philox_normal(shape, seed, schedule.num_steps, device=device, dtype=dtype)
    if sampler == "ddim":
        ts = ddim_timesteps(schedule.num_steps, steps)
    else:
        ts = dpm_solver_timesteps(schedule.num_steps, steps)
    x0_prev, t_last = None, None
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        cond, uncond = model(x, torch.full((shape[0],), t, dtype=torch.int64, device=device))
        if sampler == "ddim":
            x = _unfused_ddim_step(cond, uncond, x, table, t, t_prev)
        else:
            if t_prev == -1:  # first order to the clean sample, as the fused sampler
                x0_prev = None
            x, x0_prev = _unfused_dpm_step(cond, uncond, x, x0_prev, table, t, t_prev, t_last)
            t_last = t
    return x


def _step_functions(sampler, shape, schedule, device, dtype):
    """(fused, unfused) single-step closures on fixed inputs: the part of a step fusion changes."""
    g = torch.Generator().manual_seed(1)
    cond, uncond, x, prev = (torch.randn(shape, generator=g).to(device, dtype) for _ in range(4))
    table = schedule.table("cpu")
    if sampler == "ddim":
        return (lambda: ddim_step(cond, x, 500, 480, schedule, guidance_scale=GUIDANCE, model_output_uncond=uncond),
                lambda: _unfused_ddim_step(cond, uncond, x, table, 500, 480))
    return (lambda: dpm_solver_step(cond, x, 500, 450, schedule, x0_prev=prev, t_last=550, guidance_scale=GUIDANCE,
                                    model_output_uncond=uncond),
            lambda: _unfused_dpm_step(cond, uncond, x, prev, table, 500, 450, 550))


def fused_sample(model, sampler, shape, schedule, steps, seed=0, device="cpu", dtype=torch.float32):
    fn = ddim_sample if sampler == "ddim" else dpm_solver_sample
    return fn(model, shape, schedule, num_inference_steps=steps, seed=seed, device=device, dtype=dtype,
              guidance_scale=GUIDANCE)


def _interleaved(fns, device, repeat):
    """Per function, the median (wall seconds, process CPU seconds) of one call, the calls
    interleaved round by round so a load change on a shared machine hits every function alike;
    one warm-up call each. CPU time (all threads of this process) is what a run costs whatever
    else shares the cores; wall time is what a user waits."""
    import statistics
    import time

    from genkernels.bench.timing import synchronize

    wall, cpu = [[] for _ in fns], [[] for _ in fns]
    for r in range(repeat + 1):
        for i, fn in enumerate(fns):
            synchronize(device)
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            synchronize(device)
            if r:
                wall[i].append(time.perf_counter() - w0)
                cpu[i].append(time.process_time() - c0)
    return [(statistics.median(w), statistics.median(c)) for w, c in zip(wall, cpu)]


def run_suite(device, sizes=(8, 32), batch=64, dtype=torch.float32, threads=(None,), repeat=7):
    """Rows per (threads, image size, sampler). threads: CPU thread counts to run at (None: as set).
    images/s from the median of `repeat` interleaved runs: per CPU-second on CPU (`clock`), per
    second on a GPU; the wall-clock figures are kept beside them (*_wall)."""
    device = torch.device(device)
    schedule = make_schedule("cosine", 1000)
    model = ConvDenoiser().to(device, dtype)
    rows = []
    saved_threads = torch.get_num_threads()
    try:
        for n_threads in threads:
            if n_threads is not None:
                torch.set_num_threads(n_threads)
            for size in sizes:
                shape = (batch, CHANNELS, size, size)
                for sampler, steps in CASES:
                    rows.append(_case(model, sampler, steps, shape, schedule, device, dtype, repeat))
                    rows[-1]["threads"] = torch.get_num_threads()
    finally:
        torch.set_num_threads(saved_threads)
    return rows


@torch.no_grad()
def _case(model, sampler, steps, shape, schedule, device, dtype, repeat):
    batch, size = shape[0], shape[-1]
    fused = fused_sample(model, sampler, shape, schedule, steps, device=device, dtype=dtype)
    unfused = unfused_sample(model, sampler, shape, schedule, steps, device=device, dtype=dtype)
    err = (fused.float() - unfused.float()).abs().max().item()
    if not err <= 1e-3 * max(unfused.float().abs().max().item(), 1.0):
        raise AssertionError(f"{sampler} {size}x{size}: fused and unfused samples differ by {err}")
    x = philox_normal(shape, 0, 0, device=device, dtype=dtype)
    t = torch.full((batch,), 500, dtype=torch.int64, device=device)

    def model_only():
        for _ in range(steps):
            model(x, t)

    (f_wall, f_cpu), (u_wall, u_cpu), (m_wall, m_cpu) = _interleaved(
        [lambda: fused_sample(model, sampler, shape, schedule, steps, device=device, dtype=dtype),
         lambda: unfused_sample(model, sampler, shape, schedule, steps, device=device, dtype=dtype),
         model_only], device, repeat)
    step_fused, step_unfused = _step_functions(sampler, shape, schedule, device, dtype)
    ten = lambda fn: lambda: [fn() for _ in range(10)]  # noqa: E731
    (_, s_fused), (_, s_unfused) = _interleaved([ten(step_fused), ten(step_unfused)], device, repeat)
    if device.type != "cpu":
        (s_fused, _), (s_unfused, _) = _interleaved([ten(step_fused), ten(step_unfused)], device, repeat)
    # on CPU the ratios use CPU time (robust to other jobs on shared cores); on a GPU, wall time
    f, u, m = (f_cpu, u_cpu, m_cpu) if device.type == "cpu" else (f_wall, u_wall, m_wall)
    return {"sampler": sampler, "steps": steps, "image_shape": f"{CHANNELS}x{size}x{size}", "batch": batch,
            "dtype": str(dtype).replace("torch.", ""), "guidance": GUIDANCE,
            "clock": "process CPU time" if device.type == "cpu" else "wall",
            "fused_images_per_s": batch / f, "unfused_images_per_s": batch / u, "speedup": u / f,
            "model_share_fused": m / f, "model_share_unfused": m / u,
            "fused_images_per_s_wall": batch / f_wall, "unfused_images_per_s_wall": batch / u_wall,
            "speedup_wall": u_wall / f_wall, "step_ms_fused": s_fused / 10 * 1e3,
            "step_ms_unfused": s_unfused / 10 * 1e3, "step_speedup": s_unfused / s_fused, "max_abs_diff": err}


COLUMNS = ["sampler", "steps", "image_shape", "batch", "threads", "fused_images_per_s", "unfused_images_per_s",
           "speedup", "speedup_wall", "model_share_fused", "model_share_unfused", "step_ms_fused", "step_ms_unfused",
           "step_speedup"]
