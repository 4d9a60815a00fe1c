"""Fused diffusion sampler steps: the DDPM ancestral step (Ho et al. 2020) and the DDIM step (Song
et al. 2021, eta in [0, 1]), each with optional x0 clipping and an optional classifier-free
guidance combine m = m_uncond + w (m_cond - m_uncond) (Ho & Salimans 2022) of two model outputs.

Both are x_prev = c_x0 clip(x0) + c_eps eps + c_x x_t + sigma z with x0, eps recovered from the
model output under its parameterisation, and z drawn in the kernel from Philox at (seed, offset,
sample, element) — see genkernels/ops/philox.py. Kernels: csrc/diffusion/diffusion.h
(SamplerStepForward / SamplerStepBackward); one op serves both samplers (`kind`).
"""
from __future__ import annotations

import math

import torch

from genkernels.ops import _diffusion_args as args
from genkernels.ops._library import define
from genkernels.ops.philox import _check_seed, philox_normal_ref

DDPM, DDIM = 0, 1


# ---- reference ---------------------------------------------------------------------------------
def step_coefficients_ref(table, t, t_scalar, t_prev, t_prev_scalar, kind, prediction, eta, large_variance,
                                batch):
    """float64 (batch, 1) tensors (p, q, pe, qe, c_x0, c_eps, c_x, sigma), as csrc/diffusion/diffusion.h."""
    ac, om = args.gather_steps(table, t, t_scalar, batch)
    if kind == DDPM:
        steps = (t if t is not None else torch.full((batch,), t_scalar, device=table.device)) - 1
        ac_p, om_p = args.gather_steps(table, steps, 0, batch)
    else:
        ac_p, om_p = args.gather_steps(table, t_prev, t_prev_scalar, batch)
    a, s = ac.sqrt(), om.sqrt()
    one = torch.ones_like(a)
    p, q, pe, qe = {0: (-s / a, 1 / a, one, 0 * one), 1: (one, 0 * one, -a / s, 1 / s), 2: (-s, a, a, s)}[prediction]
    if kind == DDPM:
        beta = (om - om_p) / ac_p
        c_x0, c_eps, c_x = ac_p.sqrt() * beta / om, 0 * one, (1 - beta).sqrt() * om_p / om
        var = beta if large_variance else beta * om_p / om
        step = t.view(-1, 1) if t is not None else torch.full_like(a, t_scalar)
        sigma = torch.where(step > 0, var.sqrt(), 0 * one)
    else:
        sigma = eta * (om_p / om * (om - om_p) / ac_p).sqrt()
        c_x0, c_eps, c_x = ac_p.sqrt(), (om_p - sigma**2).clamp(min=0).sqrt(), 0 * one
    return p, q, pe, qe, c_x0, c_eps, c_x, sigma


def _guided(model_output, model_output_uncond, guidance):
    if model_output_uncond is None:
        return model_output
    return model_output_uncond + guidance * (model_output - model_output_uncond)


def sampler_step_ref(model_output, model_output_uncond, x_t, table, t, t_scalar, t_prev, t_prev_scalar, kind,
                           prediction, guidance, clip, eta, large_variance, seed, offset):
    """x_prev computed in x_t's dtype with the same Philox noise the kernels draw."""
    n = x_t.shape[0]
    p, q, pe, qe, c_x0, c_eps, c_x, sigma = (
        args.per_sample(c, x_t)
        for c in step_coefficients_ref(table, t, t_scalar, t_prev, t_prev_scalar, kind, prediction, eta,
                                             large_variance, n))
    m = _guided(model_output, model_output_uncond, guidance)
    x0 = p * m + q * x_t
    if math.isfinite(clip):
        x0 = x0.clamp(-clip, clip)
    out = c_x0 * x0 + c_x * x_t
    if kind == DDIM:
        out = out + c_eps * (pe * m + qe * x_t)
    z = philox_normal_ref(n, x_t[0].numel() if n else 0, seed, offset, x_t.device)
    return out + sigma * z.to(x_t.dtype).view(x_t.shape)


def sampler_step_backward_ref(grad, model_output, model_output_uncond, x_t, table, t, t_scalar, t_prev,
                                    t_prev_scalar, kind, prediction, guidance, clip, eta, large_variance):
    p, q, pe, qe, c_x0, c_eps, c_x, _ = (
        args.per_sample(c, x_t)
        for c in step_coefficients_ref(table, t, t_scalar, t_prev, t_prev_scalar, kind, prediction, eta,
                                             large_variance, x_t.shape[0]))
    m = _guided(model_output, model_output_uncond, guidance)
    g_x0 = c_x0 * grad
    if math.isfinite(clip):
        x0 = p * m + q * x_t
        g_x0 = torch.where((x0 >= -clip) & (x0 <= clip), g_x0, torch.zeros_like(g_x0))
    g_eps = c_eps * grad
    g_m = p * g_x0 + pe * g_eps
    g_xt = c_x * grad + q * g_x0 + qe * g_eps
    if model_output_uncond is None:
        return g_m, None, g_xt
    return guidance * g_m, (1 - guidance) * g_m, g_xt


# ---- launchers ---------------------------------------------------------------------------------
def _step_kernel(model_output, model_output_uncond, x_t, t, t_scalar, t_prev, t_prev_scalar, table, kind, prediction,
                 guidance, clip, eta, large_variance, seed, offset):
    t = args.dense(t)
    t_prev = args.dense(t_prev)
    table = args.dense(table)
    backend = args.choose_backend("ddpm_step" if kind == DDPM else "ddim_step", x_t)
    if backend == "torch":
        return sampler_step_ref(model_output, model_output_uncond, x_t, table, t, t_scalar, t_prev,
                                      t_prev_scalar, kind, prediction, guidance, clip, eta, large_variance, seed,
                                      offset)
    m, x = model_output.contiguous(), x_t.contiguous()
    mu = model_output_uncond.contiguous() if model_output_uncond is not None else None
    out = torch.empty_like(x_t, memory_format=torch.contiguous_format)
    n, d = args.rows(x_t)
    if n * d:
        args.kernel(backend, "sampler_step", like=x_t)(
            kind=kind, prediction=prediction, model_output=m.data_ptr(), model_output_uncond=args.ptr(mu),
            x_t=x.data_ptr(), out=out.data_ptr(), t=args.ptr(t), t_scalar=t_scalar, t_prev=args.ptr(t_prev),
            t_prev_scalar=t_prev_scalar, table=table.data_ptr(), T=table.shape[0], guidance=guidance, clip=clip,
            eta=eta, large_variance=large_variance, seed=seed, offset=offset, N=n, D=d,
            dtype=args._ext.dtype_code(x_t))
    return out


def _step_fake(model_output, model_output_uncond, x_t, *rest):
    return torch.empty_like(x_t, memory_format=torch.contiguous_format)


def _step_backward_kernel(grad, model_output, model_output_uncond, x_t, t, t_scalar, t_prev, t_prev_scalar, table,
                          kind, prediction, guidance, clip, eta, large_variance):
    t = args.dense(t)
    t_prev = args.dense(t_prev)
    table = args.dense(table)
    backend = args.choose_backend("ddpm_step" if kind == DDPM else "ddim_step", x_t)
    if backend == "torch":
        g_m, g_mu, g_xt = sampler_step_backward_ref(grad, model_output, model_output_uncond, x_t, table, t,
                                                          t_scalar, t_prev, t_prev_scalar, kind, prediction,
                                                          guidance, clip, eta, large_variance)
        return g_m, g_mu if g_mu is not None else x_t.new_empty(0), g_xt
    g, m, x = grad.contiguous(), model_output.contiguous(), x_t.contiguous()
    mu = model_output_uncond.contiguous() if model_output_uncond is not None else None
    g_m = torch.empty_like(x_t, memory_format=torch.contiguous_format)
    g_mu = torch.empty_like(g_m) if mu is not None else x_t.new_empty(0)
    g_xt = torch.empty_like(g_m)
    n, d = args.rows(x_t)
    if n * d:
        args.kernel(backend, "sampler_step_backward", like=x_t)(
            kind=kind, prediction=prediction, grad=g.data_ptr(), model_output=m.data_ptr(),
            model_output_uncond=args.ptr(mu), x_t=x.data_ptr(), grad_output=g_m.data_ptr(),
            grad_output_uncond=args.ptr(g_mu) if mu is not None else 0, grad_x_t=g_xt.data_ptr(), t=args.ptr(t),
            t_scalar=t_scalar, t_prev=args.ptr(t_prev), t_prev_scalar=t_prev_scalar, table=table.data_ptr(),
            T=table.shape[0], guidance=guidance, clip=clip, eta=eta, large_variance=large_variance, N=n, D=d,
            dtype=args._ext.dtype_code(x_t))
    return g_m, g_mu, g_xt


def _step_backward_fake(grad, model_output, model_output_uncond, x_t, *rest):
    like = lambda: torch.empty_like(x_t, memory_format=torch.contiguous_format)  # noqa: E731
    return like(), like() if model_output_uncond is not None else x_t.new_empty(0), like()


# ---- autograd ------------------------------------------------------------------------------------
def _setup_context(ctx, inputs, output):
    model_output, model_output_uncond, x_t, t, t_scalar, t_prev, t_prev_scalar, table = inputs[:8]
    ctx.save_for_backward(model_output, model_output_uncond, x_t, t, t_prev, table)
    ctx.scalars = (t_scalar, t_prev_scalar)
    ctx.params = inputs[8:14]  # kind, prediction, guidance, clip, eta, large_variance


def _backward(ctx, grad):
    model_output, model_output_uncond, x_t, t, t_prev, table = ctx.saved_tensors
    t_scalar, t_prev_scalar = ctx.scalars
    g_m, g_mu, g_xt = sampler_step_backward_op(
        grad, model_output, model_output_uncond, x_t, t, t_scalar, t_prev, t_prev_scalar, table, *ctx.params)
    return (g_m, g_mu if model_output_uncond is not None else None, g_xt) + (None,) * 13


# ---- registration (routing: ops/_library.py) ------------------------------------------------------
_SCHEMA_TAIL = ("Tensor? t, int t_scalar, Tensor? t_prev, int t_prev_scalar, Tensor table, int kind, int prediction,"
                " float guidance, float clip, float eta, bool large_variance")
sampler_step_op = define(
    f"sampler_step(Tensor model_output, Tensor? model_output_uncond, Tensor x_t, {_SCHEMA_TAIL}, int seed,"
    " int offset) -> Tensor", impl=_step_kernel, fake=_step_fake, setup_context=_setup_context, backward=_backward)
sampler_step_backward_op = define(
    f"sampler_step_backward(Tensor grad, Tensor model_output, Tensor? model_output_uncond, Tensor x_t,"
    f" {_SCHEMA_TAIL}) -> (Tensor, Tensor, Tensor)", impl=_step_backward_kernel, fake=_step_backward_fake)


# ---- public functions ----------------------------------------------------------------------------
def _prepare(model_output, x_t, t, schedule, prediction, seed, offset, clip_x0, guidance_scale, model_output_uncond):
    code = args.prediction_code(prediction)
    args.check_tensor("x_t", x_t)
    args.check_tensor("model_output", model_output, like=x_t, like_name="x_t")
    if model_output_uncond is not None:
        args.check_tensor("model_output_uncond", model_output_uncond, like=x_t, like_name="x_t")
        if guidance_scale is None:
            raise ValueError("guidance_scale is required when model_output_uncond is given")
    elif guidance_scale is not None:
        raise ValueError("guidance_scale needs model_output_uncond (the unconditional model output)")
    t_tensor, t_scalar = args.timesteps("t", t, x_t.shape[0], x_t.device, schedule.num_steps)
    if offset is None:
        if t_tensor is not None:
            raise ValueError("offset is required when t is a tensor (use a distinct offset per step, e.g. the step"
                             " index, so every step draws fresh noise)")
        offset = t_scalar
    _check_seed(seed, offset)
    if clip_x0 is None:
        clip = math.inf
    elif isinstance(clip_x0, (int, float)) and not isinstance(clip_x0, bool) and clip_x0 > 0:
        clip = float(clip_x0)
    else:
        raise ValueError(f"clip_x0 must be None or a positive number, got {clip_x0!r}")
    if guidance_scale is None:
        guidance = 1.0
    elif (isinstance(guidance_scale, (int, float)) and not isinstance(guidance_scale, bool)
          and math.isfinite(guidance_scale)):
        guidance = float(guidance_scale)
    else:
        raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
    return code, t_tensor, t_scalar, offset, clip, guidance


def ddpm_step(model_output, x_t, t, schedule, *, prediction: str = "epsilon", seed: int = 0, offset: int | None = None,
              clip_x0: float | None = None, guidance_scale: float | None = None, model_output_uncond=None,
              variance: str = "small"):
    """One DDPM ancestral step x_t -> x_{t-1}, fused (Ho et al. 2020, eq. 6-7).

    model_output, x_t, model_output_uncond: (N, ...) of one shape, dtype and device.
    t: int or (N,) int64 tensor of steps in [0, T). prediction: "epsilon" | "sample" | "v".
    seed, offset: the Philox stream of the added noise (offset defaults to t when t is an int).
    clip_x0: clip the predicted x0 to [-clip_x0, clip_x0]. guidance_scale w with
    model_output_uncond: classifier-free guidance m = m_uncond + w (m - m_uncond).
    variance: "small" (posterior beta~_t) or "large" (beta_t). No noise is added at t = 0.
    Returns x_{t-1} (N, ...) in x_t's dtype; differentiable in the model outputs and x_t.
    """
    if variance not in ("small", "large"):
        raise ValueError(f"variance must be 'small' or 'large', got {variance!r}")
    code, t_tensor, t_scalar, offset, clip, guidance = _prepare(
        model_output, x_t, t, schedule, prediction, seed, offset, clip_x0, guidance_scale, model_output_uncond)
    return sampler_step_op(
        model_output, model_output_uncond, x_t, t_tensor, t_scalar, None, 0, schedule.table(x_t.device), DDPM, code,
        guidance, clip, 0.0, variance == "large", seed, offset)


def ddim_step(model_output, x_t, t, t_prev, schedule, *, eta: float = 0.0, prediction: str = "epsilon",
              seed: int = 0, offset: int | None = None, clip_x0: float | None = None,
              guidance_scale: float | None = None, model_output_uncond=None):
    """One DDIM step x_t -> x_{t_prev}, fused (Song et al. 2021, eq. 12).

    t_prev: int or (N,) int64 tensor, t_prev < t; -1 means the final step (alpha-bar = 1).
    t_prev >= t is checked on CPU; on CUDA it is not (that would synchronise): there a sample with
    t_prev > t comes out NaN and one with t_prev == t comes back as x_t, up to rounding.
    eta in [0, 1]: 0 is deterministic DDIM, 1 matches DDPM's posterior variance.
    Other arguments as in ddpm_step. Returns x_{t_prev} in x_t's dtype; differentiable.
    """
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
    code, t_tensor, t_scalar, offset, clip, guidance = _prepare(
        model_output, x_t, t, schedule, prediction, seed, offset, clip_x0, guidance_scale, model_output_uncond)
    tp_tensor, tp_scalar = args.timesteps("t_prev", t_prev, x_t.shape[0], x_t.device, schedule.num_steps,
                                          allow_final=True)
    if t_tensor is None and tp_tensor is None:
        if not tp_scalar < t_scalar:
            raise ValueError(f"t_prev must be smaller than t, got t={t_scalar}, t_prev={tp_scalar}")
    elif x_t.device.type == "cpu" and not torch.compiler.is_compiling():  # data-dependent: eager CPU only
        steps = t_tensor if t_tensor is not None else torch.full_like(tp_tensor, t_scalar)
        prev = tp_tensor if tp_tensor is not None else torch.full_like(t_tensor, tp_scalar)
        later = prev >= steps
        if bool(later.any()):
            n = int(later.nonzero()[0, 0])
            raise ValueError(f"t_prev must be smaller than t for every sample, got t={int(steps[n])},"
                             f" t_prev={int(prev[n])} at sample {n}")
    return sampler_step_op(
        model_output, model_output_uncond, x_t, t_tensor, t_scalar, tp_tensor, tp_scalar, schedule.table(x_t.device),
        DDIM, code, guidance, clip, float(eta), False, seed, offset)
