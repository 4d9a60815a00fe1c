"""Weighted diffusion training loss in one pass: per-sample sum of squared errors between the model
output and its target (eps, x0 or v, built on the fly from x0, noise and the step), reduced by a
fused kernel; per-sample weights (e.g. min-SNR-gamma) and the mean are then applied to the (N,)
sums. The backward is one fused pass too. Kernels: csrc/diffusion/diffusion.h (DiffusionSSE*).
"""
from __future__ import annotations

import torch

from genkernels.ops import _diffusion_args as args
from genkernels.ops._library import define


# ---- reference ---------------------------------------------------------------------------------
def diffusion_target_ref(x0, noise, table, t, t_scalar, prediction_code):
    if prediction_code == 0:
        return noise
    if prediction_code == 1:
        return x0
    a, s = args.alpha_scales(table, t, t_scalar, x0)
    return a * noise - s * x0


def diffusion_sse_ref(model_output, x0, noise, table, t, t_scalar, prediction_code):
    """(N,) sum over each sample of (model_output - target)^2, accumulated in float32 or wider."""
    diff = model_output - diffusion_target_ref(x0, noise, table, t, t_scalar, prediction_code)
    acc = torch.float64 if diff.dtype == torch.float64 else torch.float32
    return diff.reshape(diff.shape[0], -1).to(acc).pow(2).sum(1).to(acc)


def diffusion_sse_backward_ref(grad_sse, model_output, x0, noise, table, t, t_scalar, prediction_code):
    diff = model_output - diffusion_target_ref(x0, noise, table, t, t_scalar, prediction_code)
    g = args.per_sample(2 * grad_sse, diff) * diff
    if prediction_code == 0:
        return g, torch.zeros_like(x0), -g
    if prediction_code == 1:
        return g, -g, torch.zeros_like(noise)
    a, s = args.alpha_scales(table, t, t_scalar, x0)
    return g, s * g, -a * g


# ---- launchers ---------------------------------------------------------------------------------
def _common(model_output, x0, noise, t):
    return model_output.contiguous(), x0.contiguous(), noise.contiguous(), args.ptr(t)


def _sse_kernel(model_output, x0, noise, t, t_scalar, table, prediction):
    t = args.dense(t)
    table = args.dense(table)
    backend = args.choose_backend("diffusion_loss", x0)
    if backend == "torch":
        return diffusion_sse_ref(model_output, x0, noise, table, t, t_scalar, prediction)
    m, x, e, t_ptr = _common(model_output, x0, noise, t)
    n, d = args.rows(m)
    if n * d == 0:
        return torch.zeros(n, dtype=torch.float32, device=x0.device)
    chunks = args.num_chunks(d)
    partials = args.partial_sums(n, chunks, x0)
    args.kernel(backend, "diffusion_sse", like=x0)(
        model_output=m.data_ptr(), x0=x.data_ptr(), noise=e.data_ptr(), t=t_ptr, t_scalar=t_scalar,
        table=table.data_ptr(), T=table.shape[0], prediction=prediction, partials=partials.data_ptr(), N=n, D=d,
        dtype=args._ext.dtype_code(x0))
    return args.sum_partials(partials, n, chunks)


def _sse_fake(model_output, x0, noise, t, t_scalar, table, prediction):
    acc = torch.float64 if x0.dtype == torch.float64 else torch.float32
    return x0.new_empty(x0.shape[0], dtype=acc)


def _sse_backward_kernel(grad_sse, model_output, x0, noise, t, t_scalar, table, prediction):
    t = args.dense(t)
    table = args.dense(table)
    backend = args.choose_backend("diffusion_loss", x0)
    if backend == "torch":
        return diffusion_sse_backward_ref(grad_sse, model_output, x0, noise, table, t, t_scalar, prediction)
    m, x, e, t_ptr = _common(model_output, x0, noise, t)
    grads = [torch.empty_like(x0, memory_format=torch.contiguous_format) for _ in range(3)]
    n, d = args.rows(m)
    if n * d:
        g = grad_sse.to(torch.float32).contiguous()
        args.kernel(backend, "diffusion_sse_backward", like=x0)(
            grad_sse=g.data_ptr(), model_output=m.data_ptr(), x0=x.data_ptr(), noise=e.data_ptr(), t=t_ptr,
            t_scalar=t_scalar, table=table.data_ptr(), T=table.shape[0], prediction=prediction,
            grad_output=grads[0].data_ptr(), grad_x0=grads[1].data_ptr(), grad_noise=grads[2].data_ptr(), N=n, D=d,
            dtype=args._ext.dtype_code(x0))
    return tuple(grads)


def _sse_backward_fake(grad_sse, model_output, x0, noise, t, t_scalar, table, prediction):
    return tuple(torch.empty_like(x0, memory_format=torch.contiguous_format) for _ in range(3))


# ---- autograd ------------------------------------------------------------------------------------
def _setup_context(ctx, inputs, output):
    model_output, x0, noise, t, t_scalar, table, prediction = inputs
    ctx.save_for_backward(model_output, x0, noise, t, table)
    ctx.t_scalar, ctx.prediction = t_scalar, prediction


def _backward(ctx, grad_sse):
    model_output, x0, noise, t, table = ctx.saved_tensors
    g_out, g_x0, g_noise = diffusion_sse_backward_op(
        grad_sse, model_output, x0, noise, t, ctx.t_scalar, table, ctx.prediction)
    return g_out, g_x0, g_noise, None, None, None, None


# ---- registration (routing: ops/_library.py) ------------------------------------------------------
diffusion_sse_op = define(
    "diffusion_sse(Tensor model_output, Tensor x0, Tensor noise, Tensor? t, int t_scalar, Tensor table,"
    " int prediction) -> Tensor", impl=_sse_kernel, fake=_sse_fake, setup_context=_setup_context, backward=_backward)
diffusion_sse_backward_op = define(
    "diffusion_sse_backward(Tensor grad_sse, Tensor model_output, Tensor x0, Tensor noise, Tensor? t,"
    " int t_scalar, Tensor table, int prediction) -> (Tensor, Tensor, Tensor)",
    impl=_sse_backward_kernel, fake=_sse_backward_fake)


# ---- public function -----------------------------------------------------------------------------
def diffusion_loss(model_output, x0, noise, t, schedule, prediction: str = "epsilon", weights=None,
                   reduction: str = "mean"):
    """Weighted MSE between a denoiser's output and its target, fused into one pass.

    loss_n = w_n * mean_i (model_output[n, i] - target[n, i])^2, target = eps | x0 | v at step t_n.
    model_output, x0, noise: (N, ...) of one shape, dtype and device. t: int or (N,) int tensor.
    weights: None or (N,) per-sample weights (e.g. genkernels.diffusion.min_snr_weights).
    reduction: "mean" -> 0-dim float32 mean over the batch; "none" -> (N,) float32 per-sample loss.
    Differentiable in model_output, x0, noise and weights.
    """
    code = args.prediction_code(prediction)
    args.check_tensor("model_output", model_output)
    args.check_tensor("x0", x0, like=model_output, like_name="model_output")
    args.check_tensor("noise", noise, like=model_output, like_name="model_output")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    batch = model_output.shape[0]
    t_tensor, t_scalar = args.timesteps("t", t, batch, model_output.device, schedule.num_steps)
    sse = diffusion_sse_op(model_output, x0, noise, t_tensor, t_scalar, schedule.table(model_output.device), code)
    per_sample = sse / max(args.rows(model_output)[1], 1) if batch else sse
    if weights is not None:
        if not isinstance(weights, torch.Tensor):
            raise TypeError(f"weights must be a tensor of shape ({batch},), got {type(weights).__name__}")
        if weights.shape != (batch,):
            raise ValueError(f"weights must have shape ({batch},), got {tuple(weights.shape)}")
        if weights.device != model_output.device:
            raise ValueError(f"weights must be on {model_output.device}, got {weights.device}")
        per_sample = per_sample * weights.to(per_sample.dtype)
    return per_sample.mean() if reduction == "mean" else per_sample
