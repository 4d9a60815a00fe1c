"""Fused DPM-Solver++(2M) step (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
Diffusion Probabilistic Models"): the multistep second-order data-prediction solver, as diffusers'
DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_type="midpoint", solver_order=2).

With alpha = sqrt(alpha-bar), sigma = sqrt(1 - alpha-bar), lambda = log(alpha / sigma) and
h = lambda_t - lambda_s for the step s -> t (t the next, less noisy step):

    x_t = sigma_t / sigma_s x_s + alpha_t (1 - e^{-h}) (D0 + (D0 - D_last) / (2 r)),  r = h_last / h

D0 is the x0 predicted now (from the model output under its parameterisation, after the optional
classifier-free guidance combine and x0 clip), D_last the x0 predicted at the previous model call
(step t_last, h_last = lambda_s - lambda_last). Without D_last the step is first order (the DDIM
step). The step to the clean sample (t_prev = -1) is first order and returns x0 exactly. The op
returns (x_prev, x0); the next step passes that x0 as x0_prev. Forward only.
Kernel: csrc/diffusion/diffusion.h (DpmSolverStepForward).
"""
from __future__ import annotations

import math

import torch

from genkernels.ops import _diffusion_args as args
from genkernels.ops._library import define
from genkernels.ops.sampler_step import _guided, _prepare


# ---- reference ---------------------------------------------------------------------------------
def dpm_solver_coefficients_ref(table, t, t_scalar, t_prev, t_prev_scalar, t_last, t_last_scalar, prediction,
                                second, batch):
    """float64 (batch, 1) tensors (p, q, c_x, c_x0, c_last), as csrc/diffusion/diffusion.h."""
    ac, om = args.gather_steps(table, t, t_scalar, batch)
    ac_t, om_t = args.gather_steps(table, t_prev, t_prev_scalar, batch)
    a, s = ac.sqrt(), om.sqrt()
    one = torch.ones_like(a)
    p, q = {0: (-s / a, 1 / a), 1: (one, 0 * one), 2: (-s, a)}[prediction]
    final = om_t == 0
    lam_s = 0.5 * (ac.log() - om.log())
    lam_t = 0.5 * (ac_t.log() - om_t.log())
    h = lam_t - lam_s
    c0 = ac_t.sqrt() * -torch.expm1(-h)
    c_x = (om_t / om).sqrt()
    if second:
        ac_l, om_l = args.gather_steps(table, t_last, t_last_scalar, batch)
        half_inv_r = 0.5 * h / (lam_s - 0.5 * (ac_l.log() - om_l.log()))
        c_x0, c_last = c0 * (1 + half_inv_r), -c0 * half_inv_r
    else:
        c_x0, c_last = c0, 0 * one
    zero = 0 * one
    return (p, q, torch.where(final, zero, c_x), torch.where(final, ac_t.sqrt(), c_x0),
            torch.where(final, zero, c_last))


def dpm_solver_step_ref(model_output, model_output_uncond, x_t, x0_prev, table, t, t_scalar, t_prev, t_prev_scalar,
                        t_last, t_last_scalar, prediction, guidance, clip):
    """(x_prev, x0) computed in x_t's dtype."""
    p, q, c_x, c_x0, c_last = (
        args.per_sample(c, x_t)
        for c in dpm_solver_coefficients_ref(table, t, t_scalar, t_prev, t_prev_scalar, t_last, t_last_scalar,
                                             prediction, x0_prev is not None, x_t.shape[0]))
    m = _guided(model_output, model_output_uncond, guidance)
    x0 = p * m + q * x_t
    if math.isfinite(clip):
        x0 = x0.clamp(-clip, clip)
    out = c_x * x_t + c_x0 * x0
    if x0_prev is not None:
        out = out + c_last * x0_prev
    return out, x0


# ---- launcher ----------------------------------------------------------------------------------
def _kernel(model_output, model_output_uncond, x_t, x0_prev, t, t_scalar, t_prev, t_prev_scalar, t_last,
            t_last_scalar, table, prediction, guidance, clip):
    t, t_prev, t_last, table = args.dense(t), args.dense(t_prev), args.dense(t_last), args.dense(table)
    backend = args.choose_backend("dpm_solver_step", x_t)
    if backend == "torch":
        return dpm_solver_step_ref(model_output, model_output_uncond, x_t, x0_prev, table, t, t_scalar, t_prev,
                                   t_prev_scalar, t_last, t_last_scalar, prediction, guidance, clip)
    m, x = model_output.contiguous(), x_t.contiguous()
    mu = model_output_uncond.contiguous() if model_output_uncond is not None else None
    prev = x0_prev.contiguous() if x0_prev is not None else None
    out = torch.empty_like(x_t, memory_format=torch.contiguous_format)
    x0 = torch.empty_like(out)
    n, d = args.rows(x_t)
    if n * d:
        args.kernel(backend, "dpm_solver_step", like=x_t)(
            prediction=prediction, model_output=m.data_ptr(), model_output_uncond=args.ptr(mu), x_t=x.data_ptr(),
            x0_prev=args.ptr(prev), out=out.data_ptr(), x0_out=x0.data_ptr(), t=args.ptr(t), t_scalar=t_scalar,
            t_prev=args.ptr(t_prev), t_prev_scalar=t_prev_scalar, t_last=args.ptr(t_last),
            t_last_scalar=t_last_scalar, table=table.data_ptr(), T=table.shape[0], guidance=guidance, clip=clip,
            N=n, D=d, dtype=args._ext.dtype_code(x_t))
    return out, x0


def _fake(model_output, model_output_uncond, x_t, *rest):
    like = lambda: torch.empty_like(x_t, memory_format=torch.contiguous_format)  # noqa: E731
    return like(), like()


# ---- registration (routing: ops/_library.py); forward only --------------------------------------
dpm_solver_step_op = define(
    "dpm_solver_step(Tensor model_output, Tensor? model_output_uncond, Tensor x_t, Tensor? x0_prev, Tensor? t,"
    " int t_scalar, Tensor? t_prev, int t_prev_scalar, Tensor? t_last, int t_last_scalar, Tensor table,"
    " int prediction, float guidance, float clip) -> (Tensor, Tensor)", impl=_kernel, fake=_fake)


# ---- public function ---------------------------------------------------------------------------
def _check_decreasing(x_t, later_name, later, later_scalar, earlier_name, earlier, earlier_scalar):
    """earlier < later for every sample (checked on CPU in eager mode; on CUDA it would synchronise)."""
    if later is None and earlier is None:
        if not earlier_scalar < later_scalar:
            raise ValueError(f"{earlier_name} must be smaller than {later_name}, got {later_name}={later_scalar},"
                             f" {earlier_name}={earlier_scalar}")
    elif x_t.device.type == "cpu" and not torch.compiler.is_compiling():
        big = later if later is not None else torch.full_like(earlier, later_scalar)
        small = earlier if earlier is not None else torch.full_like(later, earlier_scalar)
        bad = small >= big
        if bool(bad.any()):
            n = int(bad.nonzero()[0, 0])
            raise ValueError(f"{earlier_name} must be smaller than {later_name} for every sample, got "
                             f"{later_name}={int(big[n])}, {earlier_name}={int(small[n])} at sample {n}")


def dpm_solver_step(model_output, x_t, t, t_prev, schedule, *, prediction: str = "epsilon", x0_prev=None,
                    t_last=None, clip_x0: float | None = None, guidance_scale: float | None = None,
                    model_output_uncond=None):
    """One DPM-Solver++(2M) step x_t -> x_{t_prev}, fused. Returns (x_prev, x0).

    model_output, x_t, model_output_uncond, x0_prev: (N, ...) of one shape, dtype and device.
    t: int or (N,) int64 steps in [0, T); t_prev: the same in [-1, t) (-1: the clean sample, a
    first-order step that returns x0). x0_prev with t_last (> t): the x0 returned by the previous
    step and that step's t, for the second-order update; both None for a first-order step (the
    first step). prediction: "epsilon" | "sample" | "v". clip_x0: clip x0 to [-clip_x0, clip_x0].
    guidance_scale with model_output_uncond: m = m_uncond + w (m - m_uncond) before conversion.
    Returns x_prev and the x0 the step used, both in x_t's dtype. Forward only (no gradients).
    """
    code, t_tensor, t_scalar, _, clip, guidance = _prepare(
        model_output, x_t, t, schedule, prediction, 0, 0, clip_x0, guidance_scale, model_output_uncond)
    n = x_t.shape[0]
    tp_tensor, tp_scalar = args.timesteps("t_prev", t_prev, n, x_t.device, schedule.num_steps, allow_final=True)
    _check_decreasing(x_t, "t", t_tensor, t_scalar, "t_prev", tp_tensor, tp_scalar)
    if (x0_prev is None) != (t_last is None):
        raise ValueError("x0_prev and t_last go together (the previous step's x0 and its step t), got "
                         f"x0_prev={'a tensor' if x0_prev is not None else None}, t_last={t_last!r}")
    tl_tensor, tl_scalar = None, 0
    if x0_prev is not None:
        args.check_tensor("x0_prev", x0_prev, like=x_t, like_name="x_t")
        tl_tensor, tl_scalar = args.timesteps("t_last", t_last, n, x_t.device, schedule.num_steps)
        _check_decreasing(x_t, "t_last", tl_tensor, tl_scalar, "t", t_tensor, t_scalar)
    return dpm_solver_step_op(
        model_output, model_output_uncond, x_t, x0_prev, t_tensor, t_scalar, tp_tensor, tp_scalar, tl_tensor,
        tl_scalar, schedule.table(x_t.device), code, guidance, clip)
