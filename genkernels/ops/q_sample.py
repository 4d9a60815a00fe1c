"""q_sample: forward noising x_t = sqrt(alpha-bar_t) x0 + sqrt(1 - alpha-bar_t) eps (Ho et al. 2020),
with a per-sample timestep, fused with the v target v = sqrt(alpha-bar_t) eps - sqrt(1 - alpha-bar_t) x0
(Salimans & Ho 2022). Kernels: csrc/diffusion/diffusion.h (QSampleForward / QSampleBackward).
"""
from __future__ import annotations

import torch

from genkernels.ops import _diffusion_args as args
from genkernels.ops._library import define


# ---- reference (pure PyTorch; the CPU fallback and the tests' ground truth) -------------------
def q_sample_ref(x0, noise, table, t, t_scalar, velocity):
    """(x_t, v or None) computed in x0's dtype."""
    a, s = args.alpha_scales(table, t, t_scalar, x0)
    return a * x0 + s * noise, (a * noise - s * x0) if velocity else None


def q_sample_backward_ref(grad_x_t, grad_velocity, table, t, t_scalar):
    a, s = args.alpha_scales(table, t, t_scalar, grad_x_t)
    if grad_velocity is None:
        return a * grad_x_t, s * grad_x_t
    return a * grad_x_t - s * grad_velocity, s * grad_x_t + a * grad_velocity


# ---- launchers ---------------------------------------------------------------------------------
def _q_sample_kernel(x0, noise, t, t_scalar, table, velocity):
    t = args.dense(t)
    table = args.dense(table)
    backend = args.choose_backend("q_sample", x0)
    if backend == "torch":
        x_t, v = q_sample_ref(x0, noise, table, t, t_scalar, velocity)
        return x_t, v if velocity else x0.new_empty(0)
    x0_dense, noise_dense = x0.contiguous(), noise.contiguous()
    x_t = torch.empty_like(x0, memory_format=torch.contiguous_format)
    v = torch.empty_like(x_t) if velocity else x0.new_empty(0)
    n, d = args.rows(x0)
    if n * d:
        args.kernel(backend, "q_sample", like=x0)(
            x0=x0_dense.data_ptr(), noise=noise_dense.data_ptr(), t=args.ptr(t), t_scalar=t_scalar, table=table.data_ptr(),
            T=table.shape[0], x_t=x_t.data_ptr(), velocity=v.data_ptr() if velocity else 0, N=n, D=d,
            dtype=args._ext.dtype_code(x0))
    return x_t, v


def _q_sample_fake(x0, noise, t, t_scalar, table, velocity):
    return torch.empty_like(x0, memory_format=torch.contiguous_format), (
        torch.empty_like(x0, memory_format=torch.contiguous_format) if velocity else x0.new_empty(0))


def _q_sample_backward_kernel(grad_x_t, grad_velocity, t, t_scalar, table):
    t = args.dense(t)
    table = args.dense(table)
    backend = args.choose_backend("q_sample", grad_x_t)
    if backend == "torch":
        return q_sample_backward_ref(grad_x_t, grad_velocity, table, t, t_scalar)
    g_xt = grad_x_t.contiguous()
    g_v = grad_velocity.contiguous() if grad_velocity is not None else None
    grad_x0 = torch.empty_like(grad_x_t, memory_format=torch.contiguous_format)
    grad_noise = torch.empty_like(grad_x0)
    n, d = args.rows(grad_x_t)
    if n * d:
        args.kernel(backend, "q_sample_backward", like=grad_x0)(
            grad_x_t=g_xt.data_ptr(), grad_velocity=args.ptr(g_v), t=args.ptr(t), t_scalar=t_scalar,
            table=table.data_ptr(), T=table.shape[0], grad_x0=grad_x0.data_ptr(), grad_noise=grad_noise.data_ptr(),
            N=n, D=d, dtype=args._ext.dtype_code(grad_x0))
    return grad_x0, grad_noise


def _q_sample_backward_fake(grad_x_t, grad_velocity, t, t_scalar, table):
    out = torch.empty_like(grad_x_t, memory_format=torch.contiguous_format)
    return out, torch.empty_like(out)


# ---- autograd ------------------------------------------------------------------------------------
def _setup_context(ctx, inputs, output):
    _, _, t, t_scalar, table, _ = inputs
    ctx.save_for_backward(t, table)
    ctx.t_scalar = t_scalar


def _backward(ctx, grad_x_t, grad_velocity):
    t, table = ctx.saved_tensors
    if grad_velocity is not None and grad_velocity.numel() == 0:
        grad_velocity = None
    grad_x0, grad_noise = q_sample_backward_op(grad_x_t, grad_velocity, t, ctx.t_scalar, table)
    return grad_x0, grad_noise, None, None, None, None


# ---- registration (routing: ops/_library.py) ------------------------------------------------------
q_sample_op = define(
    "q_sample(Tensor x0, Tensor noise, Tensor? t, int t_scalar, Tensor table, bool velocity) -> (Tensor, Tensor)",
    impl=_q_sample_kernel, fake=_q_sample_fake, setup_context=_setup_context, backward=_backward)
q_sample_backward_op = define(
    "q_sample_backward(Tensor grad_x_t, Tensor? grad_velocity, Tensor? t, int t_scalar, Tensor table)"
    " -> (Tensor, Tensor)", impl=_q_sample_backward_kernel, fake=_q_sample_backward_fake)


# ---- public function -----------------------------------------------------------------------------
def q_sample(x0: torch.Tensor, noise: torch.Tensor, t, schedule, prediction: str = "epsilon"):
    """Noise clean data to step t and return the matching training target, in one pass.

    x0, noise: (N, ...) floating tensors of one shape, dtype and device.
    t:         int, or int64 tensor (N,) of steps in [0, T) (one per sample).
    schedule:  genkernels.diffusion.NoiseSchedule.
    prediction: "epsilon" (target eps), "sample" (target x0) or "v" (target v).
    Returns (x_t, target), both (N, ...) in x0's dtype; x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps.
    Differentiable with respect to x0 and noise.
    """
    code = args.prediction_code(prediction)
    args.check_tensor("x0", x0)
    args.check_tensor("noise", noise, like=x0, like_name="x0")
    t_tensor, t_scalar = args.timesteps("t", t, x0.shape[0], x0.device, schedule.num_steps)
    x_t, v = q_sample_op(x0, noise, t_tensor, t_scalar, schedule.table(x0.device), code == 2)
    target = noise if code == 0 else x0 if code == 1 else v
    return x_t, target
