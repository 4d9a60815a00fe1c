"""Causal dilated 1D convolution (WaveNet), optionally gated:

    pre[n, :, t] = bias + cond[n] + sum_{k=0}^{K-1} W[:, :, k] x[n, :, t - (K-1-k) d]     (x[s < 0] = 0)
    out = pre,  or with gated=True  out = tanh(a) * sigmoid(b)  over the channel halves (a, b) of pre

so out[:, :, t] sees x[:, :, t - (K-1) d .. t] and nothing later (van den Oord et al. 2016, "WaveNet").

Reading order: reference (pure PyTorch, also the CPU fallback) -> validation -> torch.library
registration of the forward and backward ops (Triton kernels in genkernels.kernels.causal_conv,
the gate and the conditioning bias fused into the GEMM's epilogue, the weight gradient reduced
in a fixed order) -> autograd -> public function `causal_conv1d`. Backends: "triton" on CUDA
tensors (CPU only under TRITON_INTERPRET=1), "torch" (conv1d on the left-padded input, then
genkernels.ops.gated_activation) everywhere else.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch.library import triton_op

from genkernels._backend import select
from genkernels.kernels._launch import device_scope, launcher
from genkernels.ops._library import register, untraced
from genkernels.ops.gated_activation import gated_activation

BACKENDS = ("torch", "triton")
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# ----------------------------------------------------------------------------------------------
# Reference
# ----------------------------------------------------------------------------------------------
def causal_conv1d_ref(x, weight, bias=None, dilation=1, gated=False, cond=None):
    """conv1d on x left-padded by (K - 1) dilation; cond (N, Cout) added per sample, then with
    gated the gate over the output halves (genkernels.ops.gated_activation)."""
    history = (weight.shape[-1] - 1) * dilation
    pre = F.conv1d(F.pad(x, (history, 0)), weight, bias, dilation=dilation)  # (N, Cout, T)
    if gated:
        return gated_activation(pre, cond, dim=1)
    return pre if cond is None else pre + cond[:, :, None]


def causal_conv1d_backward_ref(grad, x, weight, bias, cond, dilation, gated):
    """(dx, dweight, dbias, dcond) of causal_conv1d_ref, from conv1d's input and weight gradients;
    dbias (Cout,) and dcond (N, Cout) are always returned (the caller drops what it does not need)."""
    history = (weight.shape[-1] - 1) * dilation
    padded = F.pad(x, (history, 0))
    dpre = grad
    if gated:
        pre = F.conv1d(padded, weight, bias, dilation=dilation)
        dpre = _gate_backward(grad, pre, cond).to(x.dtype)
    dx = torch.nn.grad.conv1d_input(padded.shape, weight, dpre, dilation=dilation)[:, :, history:]
    dweight = torch.nn.grad.conv1d_weight(padded, weight.shape, dpre, dilation=dilation)
    return dx, dweight, dpre.sum((0, 2)), dpre.sum(2)


def _gate_backward(grad, pre, cond):
    """d(tanh(a) sigmoid(b)) / d pre for pre (N, 2C, T) (+ cond (N, 2C)), in float32 at least; the
    tails without cancellation as in genkernels.ops.gated_activation."""
    dtype = torch.promote_types(pre.dtype, torch.float32)
    pre = pre.to(dtype)
    if cond is not None:
        pre = pre + cond[:, :, None].to(dtype)
    a, b = pre.chunk(2, dim=1)
    e = torch.exp(-2.0 * a.abs())
    ta, sb, g = torch.tanh(a), torch.sigmoid(b), grad.to(dtype)
    return torch.cat((g * sb * (4.0 * e / ((1.0 + e) * (1.0 + e))), g * ta * (sb * torch.sigmoid(-b))), dim=1)


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------
def _shape(t) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def _check_inputs(x, weight, bias, dilation, gated, cond):
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"x must be a 3D tensor (N, Cin, T), got {_shape(x)}")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 3:
        raise ValueError(f"weight must be a 3D tensor (Cout, Cin, K), got {_shape(weight)}")
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight has {weight.shape[1]} input channels (Cout, Cin, K) = {tuple(weight.shape)} "
                         f"but x has {x.shape[1]}")
    if weight.shape[2] < 1:
        raise ValueError(f"the kernel size (weight.shape[2]) must be >= 1, got {weight.shape[2]}")
    if isinstance(dilation, bool) or not isinstance(dilation, int):
        raise TypeError(f"dilation must be an int, got {dilation!r} ({type(dilation).__name__})")
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    if not isinstance(gated, bool):
        raise TypeError(f"gated must be a bool, got {type(gated).__name__}")
    cout = weight.shape[0]
    if gated and cout % 2:
        raise ValueError(f"gated=True needs an even number of output channels (two gate halves), got {cout}")
    for name, t, shape in (("bias", bias, (cout,)), ("cond", cond, (x.shape[0], cout))):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
        if t.device != x.device:
            raise ValueError(f"{name} must be on x's device {x.device}, got {t.device}")
        if t.dtype != x.dtype:
            raise TypeError(f"{name} must have x's dtype ({x.dtype}), got {t.dtype}")
    if weight.device != x.device:
        raise ValueError(f"weight must be on x's device {x.device}, got {weight.device}")
    if weight.dtype != x.dtype:
        raise TypeError(f"weight must have x's dtype ({x.dtype}), got {weight.dtype}")


# ----------------------------------------------------------------------------------------------
# torch.library registration
# ----------------------------------------------------------------------------------------------
def _backend(device: torch.device) -> str:
    return select("causal_conv1d", device, BACKENDS)


def _weight_taps(weight: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """(K, Cin, Cout) contiguous, or (K, Cout, Cin) for the dX pass."""
    return (weight.permute(2, 0, 1) if transpose else weight.permute(2, 1, 0)).contiguous()


def _dense(bias: torch.Tensor | None) -> torch.Tensor | None:
    return None if bias is None else bias.contiguous()  # the kernel reads bias with unit stride


def _forward_impl(x, weight, bias, cond, dilation, gated):
    if _backend(x.device) != "triton" or x.numel() == 0 or weight.shape[0] == 0:
        return causal_conv1d_ref(x, weight, bias, dilation, gated, cond)
    from genkernels.kernels import causal_conv as kernels

    cout = weight.shape[0]
    out = x.new_empty((x.shape[0], cout // 2 if gated else cout, x.shape[2]))
    launch = launcher(x, weight, bias, cond)
    with device_scope(x, launch):
        kernels.causal_conv_forward(launch, x, _weight_taps(weight), dilation, _dense(bias), cond, out, gated)
    return out


@triton_op("genkernels::causal_conv1d", mutates_args=())
def _causal_conv1d_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                      cond: Optional[torch.Tensor], dilation: int, gated: bool) -> torch.Tensor:
    return _forward_impl(x, weight, bias, cond, dilation, gated)


def _backward_impl(grad, x, weight, bias, cond, dilation, gated):
    if _backend(x.device) != "triton" or x.numel() == 0 or weight.shape[0] == 0:
        return causal_conv1d_backward_ref(grad, x, weight, bias, cond, dilation, gated)
    from genkernels.kernels import causal_conv as kernels

    launch = launcher(grad, x, weight, bias, cond)
    with device_scope(x, launch):
        dpre_exact = grad
        if gated:  # recompute the pre-activation (float32, cond added by the gate's derivative)
            pre = x.new_empty((x.shape[0], weight.shape[0], x.shape[2]), dtype=torch.float32)
            kernels.causal_conv_forward(launch, x, _weight_taps(weight), dilation, _dense(bias), None, pre, False)
            dpre_exact = _gate_backward(grad, pre, cond)
        dpre = dpre_exact.to(x.dtype)
        dx = torch.empty_like(x)
        # dX: the forward kernel run anti-causally (step -dilation) on the transposed tap weights
        kernels.causal_conv_forward(launch, dpre, _weight_taps(weight, transpose=True), -dilation, None, None, dx,
                                    False)
        dweight_taps = kernels.causal_conv_weight_grad(launch, x, dpre, weight.shape[2], dilation)  # (K, Cin, Cout)
    dweight = dweight_taps.permute(2, 1, 0).to(weight.dtype)
    # dbias and dcond sum many terms that largely cancel: sum the unrounded dpre in float64
    per_sample = dpre_exact.double().sum(2)                                            # (N, Cout)
    return dx, dweight, per_sample.sum(0).to(weight.dtype), per_sample.to(x.dtype)


@triton_op("genkernels::causal_conv1d_backward", mutates_args=())
def _causal_conv1d_backward_op(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                               bias: Optional[torch.Tensor], cond: Optional[torch.Tensor], dilation: int,
                               gated: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward_impl(grad, x, weight, bias, cond, dilation, gated)


# ----------------------------------------------------------------------------------------------
# Autograd, and the routed ops (ops/_library)
# ----------------------------------------------------------------------------------------------
def _setup_context(ctx, inputs, output):
    x, weight, bias, cond, dilation, gated = inputs
    ctx.save_for_backward(x, weight, bias, cond)
    ctx.flags = (dilation, gated)


def _backward(ctx, grad):
    x, weight, bias, cond = ctx.saved_tensors
    dx, dweight, dbias, dcond = causal_conv1d_backward_op(grad.contiguous(), x, weight, bias, cond, *ctx.flags)
    return (dx, dweight, None if bias is None else dbias.to(bias.dtype),
            None if cond is None else dcond.to(cond.dtype), None, None)


causal_conv1d_backward_op = register(_causal_conv1d_backward_op, impl=_backward_impl)
causal_conv1d_op = register(_causal_conv1d_op, impl=_forward_impl, setup_context=_setup_context,
                            backward=_backward)


# ----------------------------------------------------------------------------------------------
# Public function
# ----------------------------------------------------------------------------------------------
@torch.compiler.assume_constant_result
def _backend_for(device_type: str) -> str:
    # Resolved once per compiled graph: the choice reads a context variable dynamo cannot trace.
    return _backend(torch.device(device_type))


def causal_conv1d(x, weight, bias=None, dilation=1, gated=False, cond=None):
    """Causal dilated 1D convolution, optionally gated (module docstring for the formula).

    x: (N, Cin, T); weight: (Cout, Cin, K), K >= 1 (tap K - 1 multiplies x[t], tap 0 x[t - (K-1) d]);
    bias: (Cout,) or None; dilation: int d >= 1; gated: return tanh(a) * sigmoid(b) over the
    halves (a, b) of the Cout channels (Cout even); cond: (N, Cout) per-sample bias added before
    the gate (a class embedding), or None. bias and cond in x's dtype and on its device.
    Returns (N, Cout, T), or (N, Cout // 2, T) when gated, in x's dtype; differentiable in x,
    weight, bias and cond. On CUDA tensors the Triton kernel runs (fp16, bf16, fp32; gate and cond
    fused, deterministic backward); elsewhere conv1d on the left-padded input and gated_activation.
    """
    _check_inputs(x, weight, bias, dilation, gated, cond)
    backend = _backend_for(x.device.type)
    if backend == "torch" and untraced(x, weight, bias, cond):
        # plain autograd through conv1d: no op dispatch, any dtype conv1d takes
        return causal_conv1d_ref(x, weight, bias, dilation, gated, cond)
    if backend == "triton" and x.dtype not in TRITON_DTYPES:
        raise TypeError(f"the triton causal_conv1d takes x of a dtype in {TRITON_DTYPES}, got {x.dtype}")
    return causal_conv1d_op(x, weight, bias, cond, dilation, gated)


__all__ = ["causal_conv1d", "causal_conv1d_ref", "causal_conv1d_backward_ref"]
