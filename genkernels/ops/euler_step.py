"""Fused Euler and Euler-ancestral steps in sigma space (Karras et al. 2022, "Elucidating the Design
Space of Diffusion-Based Generative Models"; k-diffusion's sample_euler / sample_euler_ancestral).

sigma = sqrt((1 - alpha-bar) / alpha-bar) and x = x0 + sigma eps: the VP sample x_vp times
sqrt(1 + sigma^2). The model saw x / sqrt(1 + sigma^2) (at the fractional timestep of sigma) and
its output m becomes the denoised estimate under its parameterisation:

    epsilon: x - sigma m      sample: m      v: x / (1 + sigma^2) - sigma / sqrt(1 + sigma^2) m

d = (x - denoised) / sigma. Euler: x_next = x + d (sigma_next - sigma). Ancestral (eta > 0):
sigma_up = min(sigma_next, eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2)),
sigma_down = sqrt(sigma_next^2 - sigma_up^2), x_next = x + d (sigma_down - sigma) + sigma_up z,
z drawn in the kernel from Philox (seed, offset, sample, element) as in genkernels/ops/philox.py.
Optional classifier-free guidance combine of two outputs and clip of the denoised estimate.
Forward only. Kernel: csrc/diffusion/diffusion.h (EulerStepForward).
"""
from __future__ import annotations

import math

import torch

from genkernels.ops import _diffusion_args as args
from genkernels.ops._library import define
from genkernels.ops.philox import _check_seed, philox_normal_ref
from genkernels.ops.sampler_step import _guided


# ---- reference ---------------------------------------------------------------------------------
def euler_coefficients_ref(sigma: float, sigma_next: float, eta: float, prediction: int):
    """(p, q, c_x, c_den, sigma_up) as Python floats (double), as csrc/diffusion/diffusion.h:
    denoised = p m + q x, x_next = c_x x + c_den denoised + sigma_up z."""
    if prediction == 1:
        p, q = 1.0, 0.0
    elif prediction == 2:
        w = 1.0 / (1.0 + sigma * sigma)
        p, q = -sigma * math.sqrt(w), w
    else:
        p, q = -sigma, 1.0
    up, down = 0.0, sigma_next
    if eta > 0 and sigma_next > 0:
        up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
        down = math.sqrt(sigma_next**2 - up**2)
    r = down / sigma
    return p, q, r, 1.0 - r, up


def euler_step_ref(model_output, model_output_uncond, x, sigma, sigma_next, prediction, guidance, clip, eta, seed,
                   offset):
    """x_next in x's dtype with the Philox noise the kernels draw."""
    p, q, c_x, c_den, up = euler_coefficients_ref(sigma, sigma_next, eta, prediction)
    m = _guided(model_output, model_output_uncond, guidance)
    den = p * m + q * x
    if math.isfinite(clip):
        den = den.clamp(-clip, clip)
    out = c_x * x + c_den * den
    if up != 0.0:
        n = x.shape[0]
        z = philox_normal_ref(n, x[0].numel() if n else 0, seed, offset, x.device)
        out = out + up * z.to(x.dtype).view(x.shape)
    return out


# ---- launcher ----------------------------------------------------------------------------------
def _kernel(model_output, model_output_uncond, x, sigma, sigma_next, prediction, guidance, clip, eta, seed, offset):
    backend = args.choose_backend("euler_step", x)
    if backend == "torch":
        return euler_step_ref(model_output, model_output_uncond, x, sigma, sigma_next, prediction, guidance, clip,
                              eta, seed, offset)
    m, xc = model_output.contiguous(), x.contiguous()
    mu = model_output_uncond.contiguous() if model_output_uncond is not None else None
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    n, d = args.rows(x)
    if n * d:
        args.kernel(backend, "euler_step", like=x)(
            prediction=prediction, model_output=m.data_ptr(), model_output_uncond=args.ptr(mu), x=xc.data_ptr(),
            out=out.data_ptr(), sigma=sigma, sigma_next=sigma_next, guidance=guidance, clip=clip, eta=eta, seed=seed,
            offset=offset, N=n, D=d, dtype=args._ext.dtype_code(x))
    return out


def _fake(model_output, model_output_uncond, x, *rest):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


# ---- registration (routing: ops/_library.py); forward only --------------------------------------
euler_step_op = define(
    "euler_step(Tensor model_output, Tensor? model_output_uncond, Tensor x, float sigma, float sigma_next,"
    " int prediction, float guidance, float clip, float eta, int seed, int offset) -> Tensor",
    impl=_kernel, fake=_fake)


# ---- public function ---------------------------------------------------------------------------
def _number(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)


def guidance_and_clip(model_output, x, guidance_scale, model_output_uncond, clip_x0, x_name="x"):
    """Checked (guidance, clip) kernel arguments: 1.0 / +inf when absent."""
    args.check_tensor(x_name, x)
    args.check_tensor("model_output", model_output, like=x, like_name=x_name)
    if model_output_uncond is not None:
        args.check_tensor("model_output_uncond", model_output_uncond, like=x, like_name=x_name)
        if guidance_scale is None:
            raise ValueError("guidance_scale is required when model_output_uncond is given")
    elif guidance_scale is not None:
        raise ValueError("guidance_scale needs model_output_uncond (the unconditional model output)")
    if clip_x0 is None:
        clip = math.inf
    elif isinstance(clip_x0, (int, float)) and not isinstance(clip_x0, bool) and clip_x0 > 0:
        clip = float(clip_x0)
    else:
        raise ValueError(f"clip_x0 must be None or a positive number, got {clip_x0!r}")
    if guidance_scale is None:
        return 1.0, clip
    if not math.isfinite(_number("guidance_scale", guidance_scale)):
        raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
    return float(guidance_scale), clip


def euler_step(model_output, x, sigma: float, sigma_next: float, *, prediction: str = "epsilon", eta: float = 0.0,
               seed: int = 0, offset: int = 0, clip_x0: float | None = None, guidance_scale: float | None = None,
               model_output_uncond=None):
    """One Euler (eta = 0) or Euler-ancestral (eta > 0, 1 is k-diffusion's default) step in sigma
    space, sigma -> sigma_next, fused.

    x: (N, ...) the sample in sigma scaling (x = x0 + sigma eps). model_output (and
    model_output_uncond): the model's output for input x / sqrt(1 + sigma^2), same shape/dtype/device.
    sigma > 0 and sigma_next >= 0 finite (sigma_next <= sigma when eta > 0; sigma_next = 0 lands
    on the denoised estimate). prediction: "epsilon" | "sample" | "v". eta in [0, 1]. seed, offset:
    the Philox stream of the ancestral noise. clip_x0 clips the denoised estimate;
    guidance_scale with model_output_uncond: m = m_uncond + w (m - m_uncond).
    Returns x_next in sigma scaling, in x's dtype. Forward only (no gradients).
    """
    code = args.prediction_code(prediction)
    guidance, clip = guidance_and_clip(model_output, x, guidance_scale, model_output_uncond, clip_x0)
    sigma, sigma_next, eta = _number("sigma", sigma), _number("sigma_next", sigma_next), _number("eta", eta)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    if not (math.isfinite(sigma_next) and sigma_next >= 0):
        raise ValueError(f"sigma_next must be a finite number >= 0, got {sigma_next!r}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
    if eta > 0 and sigma_next > sigma:
        raise ValueError(f"an ancestral step (eta > 0) needs sigma_next <= sigma, got sigma={sigma!r},"
                         f" sigma_next={sigma_next!r}")
    _check_seed(seed, offset)
    return euler_step_op(model_output, model_output_uncond, x, sigma, sigma_next, code, guidance, clip, eta, seed,
                         offset)
