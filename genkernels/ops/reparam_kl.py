"""Fused Gaussian reparameterisation + KL to the standard normal prior (the VAE latent step).

    z[n]  = mu[n] + exp(logvar[n] / 2) * eps[n]
    kl[n] = 1/2 sum_i (mu[n, i]^2 + exp(logvar[n, i]) - 1 - logvar[n, i])

(Kingma & Welling 2014, "Auto-Encoding Variational Bayes", eq. 10 and appendix B). eps is drawn
inside the kernel from Philox at (seed, offset, sample n, element i), the generator of
genkernels.ops.philox, so CPU and GPU give the same z for the same seed and no eps tensor is
stored: the backward regenerates it. The math is written once in csrc/vae/reparam_kl.h.

Reading order: reference -> host launchers -> torch.library op + autograd -> public function.
"""
from __future__ import annotations

import math

import torch

from genkernels import _ext
from genkernels.ops import _args as args
from genkernels.ops._library import define
from genkernels.ops.philox import _check_seed, philox_normal

_SEED_BOUND = 2**63


# ---- reference --------------------------------------------------------------------------------
def reparam_kl_ref(mu: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure-PyTorch reparam_kl with explicit noise; z in mu's dtype, kl (N,) in at least float32.

    The KL is accumulated in float32 (float64 for float64 inputs) whatever the input dtype, as the
    kernels do: a per-sample sum over thousands of fp16 terms would otherwise lose digits.
    """
    z = mu + torch.exp(0.5 * logvar) * noise.to(mu.dtype)
    acc = torch.promote_types(mu.dtype, torch.float32)
    m, lv = mu.to(acc), logvar.to(acc)
    kl = 0.5 * (m * m + torch.exp(lv) - 1.0 - lv).reshape(mu.shape[0], math.prod(mu.shape[1:])).sum(dim=1)
    return z, kl


def _philox_noise(mu: torch.Tensor, seed: int, offset: int) -> torch.Tensor:
    """The eps the kernels draw for mu's shape, as a float32 tensor of that shape."""
    return philox_normal(mu.shape, seed, offset, device=mu.device, dtype=torch.float32)


def reparam_kl_backward_ref(grad_z, grad_kl, mu, logvar, seed, offset):
    """Closed-form gradients in float32 (float64 for float64 inputs): reparam_kl_grads' twin."""
    acc = torch.promote_types(mu.dtype, torch.float32)
    m, lv = mu.to(acc), logvar.to(acc)
    kl_scale = 0.0 if grad_kl is None else grad_kl.to(acc).reshape((-1,) + (1,) * (mu.dim() - 1))
    grad_mu = m * kl_scale
    grad_logvar = 0.5 * (torch.exp(lv) - 1.0) * kl_scale
    if grad_z is not None:
        gz = grad_z.to(acc)
        grad_mu = grad_mu + gz
        grad_logvar = grad_logvar + 0.5 * gz * _philox_noise(mu, seed, offset).to(acc) * torch.exp(0.5 * lv)
    return grad_mu.to(mu.dtype), grad_logvar.to(mu.dtype)


# ---- host launchers (validate what only they see, allocate, launch) --------------------------
def _reparam_kl_kernel(mu, logvar, seed, offset):
    backend = args.choose_backend("reparam_kl", mu)
    if backend == "torch":
        return reparam_kl_ref(mu, logvar, _philox_noise(mu, seed, offset))
    mu_dense, logvar_dense = mu.contiguous(), logvar.contiguous()
    n, d = args.rows(mu)
    z = torch.empty_like(mu, memory_format=torch.contiguous_format)
    chunks = args.num_chunks(d)
    partials = args.partial_sums(n, chunks, mu)
    if n * d:
        args.kernel(backend, "reparam_kl", like=mu)(
            mu=mu_dense.data_ptr(), logvar=logvar_dense.data_ptr(), z=z.data_ptr(), kl_partials=partials.data_ptr(), N=n,
            D=d, seed=seed, offset=offset, dtype=_ext.dtype_code(mu))
    return z, args.sum_partials(partials, n, chunks)


def _reparam_kl_backward_kernel(grad_z, grad_kl, mu, logvar, seed, offset):
    backend = args.choose_backend("reparam_kl", mu)
    if backend == "torch":
        return reparam_kl_backward_ref(grad_z, grad_kl, mu, logvar, seed, offset)
    mu_dense, logvar_dense = mu.contiguous(), logvar.contiguous()
    grad_z_dense = None if grad_z is None else grad_z.to(mu.dtype).contiguous()
    grad_kl = None if grad_kl is None else grad_kl.to(torch.float32).contiguous()
    n, d = args.rows(mu)
    grad_mu = torch.empty_like(mu, memory_format=torch.contiguous_format)
    grad_logvar = torch.empty_like(grad_mu)
    if n * d:
        args.kernel(backend, "reparam_kl_backward", like=mu)(
            grad_z=_ext.ptr(grad_z_dense), grad_kl=_ext.ptr(grad_kl), mu=mu_dense.data_ptr(), logvar=logvar_dense.data_ptr(),
            grad_mu=grad_mu.data_ptr(), grad_logvar=grad_logvar.data_ptr(), N=n, D=d, seed=seed, offset=offset,
            dtype=_ext.dtype_code(mu))
    return grad_mu, grad_logvar


# ---- fakes and autograd --------------------------------------------------------------------------
def _kl_dtype(mu: torch.Tensor) -> torch.dtype:
    return torch.promote_types(mu.dtype, torch.float32)


def _reparam_kl_fake(mu, logvar, seed, offset):
    return (torch.empty_like(mu, memory_format=torch.contiguous_format),
            mu.new_empty((mu.shape[0],), dtype=_kl_dtype(mu)))


def _reparam_kl_backward_fake(grad_z, grad_kl, mu, logvar, seed, offset):
    grad_mu = torch.empty_like(mu, memory_format=torch.contiguous_format)
    return grad_mu, torch.empty_like(grad_mu)


def _setup_context(ctx, inputs, output):
    mu, logvar, seed, offset = inputs
    ctx.save_for_backward(mu, logvar)
    ctx.seed, ctx.offset = seed, offset


def _backward(ctx, grad_z, grad_kl):
    mu, logvar = ctx.saved_tensors
    grad_mu, grad_logvar = reparam_kl_backward_op(grad_z, grad_kl, mu, logvar, ctx.seed, ctx.offset)
    return grad_mu, grad_logvar, None, None


# ---- registration (routing: ops/_library.py) ------------------------------------------------------
reparam_kl_op = define("reparam_kl(Tensor mu, Tensor logvar, int seed, int offset) -> (Tensor, Tensor)",
                       impl=_reparam_kl_kernel, fake=_reparam_kl_fake, setup_context=_setup_context,
                       backward=_backward)
reparam_kl_backward_op = define(
    "reparam_kl_backward(Tensor? grad_z, Tensor? grad_kl, Tensor mu, Tensor logvar, int seed, int offset)"
    " -> (Tensor, Tensor)", impl=_reparam_kl_backward_kernel, fake=_reparam_kl_backward_fake)


# ---- public function --------------------------------------------------------------------------
def reparam_kl(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    seed: int | None = None,
    offset: int = 0,
    *,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample z ~ N(mu, exp(logvar)) by reparameterisation and return it with KL(q || N(0, I)).

    mu, logvar  (N, ...) float32 / float16 / bfloat16 (float64 runs the reference), same shape,
                dtype and device; the trailing dimensions of a sample are flattened
    seed        Philox seed in [0, 2^63); None draws one from torch's default CPU generator
                (so torch.manual_seed makes runs repeatable). Pass it explicitly under
                torch.compile.
    offset      Philox offset in [0, 2^63): a second stream for the same seed
    noise       optional explicit eps (same shape as mu) instead of seed: runs the reference

    Returns z (N, ...) in mu's dtype and kl (N,) float32 (float64 for float64 inputs):
        z = mu + exp(logvar / 2) * eps,   kl[n] = 1/2 sum_i (mu^2 + exp(logvar) - 1 - logvar).
    Both are differentiable with respect to mu and logvar.
    """
    _check_inputs(mu, logvar, noise, seed)
    if noise is not None:
        return reparam_kl_ref(mu, logvar, noise)
    if seed is None:
        seed = int(torch.randint(0, _SEED_BOUND - 1, (), dtype=torch.int64).item())
    _check_seed(seed, offset)
    return reparam_kl_op(mu, logvar, seed, offset)


def _check_inputs(mu, logvar, noise, seed):
    args.check_tensor("mu", mu)
    args.check_tensor("logvar", logvar, like=mu, like_name="mu")
    if noise is not None:
        if seed is not None:
            raise ValueError("pass either seed or noise, not both (noise replaces the Philox draw)")
        if not isinstance(noise, torch.Tensor):
            raise TypeError(f"noise must be a torch.Tensor or None, got {type(noise).__name__}")
        if noise.shape != mu.shape or noise.device != mu.device:
            raise ValueError(
                f"noise must have mu's shape {tuple(mu.shape)} on {mu.device}, got {tuple(noise.shape)} on {noise.device}"
            )
