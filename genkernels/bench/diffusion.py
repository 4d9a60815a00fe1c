"""Benchmark setups for the diffusion ops: one setup per (op, provider), correctness checked first.

Providers: "eager" (the pure-PyTorch reference), "compile" (torch.compile of that reference) and
each fast backend present for the device ("cpu" C++ kernels, "cuda" kernels).
"""
from __future__ import annotations

import functools

import torch

import genkernels
from genkernels import _backend
from genkernels.diffusion import ddim_step, ddpm_step, diffusion_loss, make_schedule, min_snr_weights, q_sample

OPS = ("q_sample", "diffusion_loss", "diffusion_loss_fwd_bwd", "ddpm_step", "ddim_step")


def _inputs(numel, batch, dtype, device):
    g = torch.Generator().manual_seed(0)
    shape = (batch, numel // batch)
    make = lambda: torch.randn(shape, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    return make(), make(), make()


@functools.lru_cache(maxsize=None)
def _schedule():
    return make_schedule("cosine", 1000)


def op_function(op: str, numel: int, batch: int, dtype, device):
    """(fn() -> Tensor, bytes moved per call) for `op` on fresh inputs."""
    sched = _schedule()
    a, b, c = _inputs(numel, batch, dtype, device)
    t = torch.randint(0, 1000, (batch,), generator=torch.Generator().manual_seed(1)).to(device)
    weights = min_snr_weights(sched, t, 5.0, "v")
    itemsize = torch.tensor([], dtype=dtype).element_size()
    if op == "q_sample":
        return (lambda: q_sample(a, b, t, sched, "v")[1]), 4 * numel * itemsize
    if op == "diffusion_loss":
        return (lambda: diffusion_loss(a, b, c, t, sched, "v", weights=weights)), 3 * numel * itemsize
    if op == "diffusion_loss_fwd_bwd":
        m = a.clone().requires_grad_()

        def fwd_bwd():
            diffusion_loss(m, b, c, t, sched, "v", weights=weights).backward()
            return m.grad
        return fwd_bwd, (3 + 4) * numel * itemsize
    if op == "ddpm_step":
        return (lambda: ddpm_step(a, b, 500, sched, prediction="epsilon", seed=1, clip_x0=1.0)), 3 * numel * itemsize
    if op == "ddim_step":
        return (lambda: ddim_step(a, b, 500, 480, sched, eta=1.0, seed=1, clip_x0=1.0, guidance_scale=5.0,
                                  model_output_uncond=c)), 4 * numel * itemsize
    raise ValueError(f"op must be one of {OPS}, got {op!r}")


def providers(device) -> list[str]:
    device = torch.device(device)
    fast = [name for name in ("cpu", "cuda") if _backend.backend_status(name, device.type) is None]
    return ["eager", "compile"] + fast


def provider_function(op, provider, numel, batch, dtype, device):
    fn, nbytes = op_function(op, numel, batch, dtype, device)
    if provider == "eager":
        return _under("torch", fn), nbytes
    if provider == "compile":
        # torch.compile of the pure-PyTorch reference: what a user gets without genkernels' kernels
        return _under("torch", torch.compile(fn)), nbytes
    return _under(provider, fn), nbytes


def _under(backend, fn):
    def run():
        with genkernels.use_backend(backend):
            return fn()
    return run
