"""FlowSequential: a chain of invertible layers, with optional recompute-by-inverse training.

A flow's layers are invertible, so a layer's input can be rebuilt from its output instead of
being stored for the backward pass (Gomez et al. 2017, "The Reversible Residual Network", applied
to flows as in Glow's memory-saving option). With recompute=True, training stores only the chain's
final output: activation memory no longer grows with depth, and each layer runs forward twice
(once in the chain, once in backward to get its gradients) plus once inverse.

Every layer must provide forward(x, context=None) -> (y, logdet) and inverse(y, context=None) ->
(x, logdet), with logdet (N,). For recompute the layers must be deterministic functions of their
input and parameters (no dropout, no batch-norm statistics in training mode), and layers with a
data-dependent initialisation (ActNorm) must be initialised first: a FlowSequential takes the
ordinary stored path while any of its layers still needs initialising, so the first training
step initialises them and the later ones recompute.
"""
from __future__ import annotations

import torch
from torch import nn


def _needs_initialization(module: nn.Module) -> bool:
    return any(getattr(m, "needs_initialization", False) for m in module.modules())


class _RecomputeByInverse(torch.autograd.Function):
    """y, logdet = chain(x); saves y (and the context) only. backward walks the layers in reverse:
    x_k = layer_k.inverse(y_k) under no_grad, then layer_k's forward again with grad from x_k
    gives its parameter gradients and the gradient for y_{k-1} = x_k. A layer can do both steps
    itself (method recompute_forward(y, context) -> (x, leaves, y_again, logdet), the gradient of
    x being the sum of the leaves'): the couplings do, to run their conditioner once."""

    @staticmethod
    def forward(ctx, flow, x, context, *params):
        with torch.no_grad():
            y, logdet = flow._chain(x, context)
        ctx.flow, ctx.params = flow, params
        ctx.save_for_backward(y, context)
        return y, logdet

    @staticmethod
    def backward(ctx, grad_y, grad_logdet):
        flow, params = ctx.flow, ctx.params
        y, context = ctx.saved_tensors
        slot = {id(p): i for i, p in enumerate(params)}
        grad_params = [None] * len(params)
        want_context = context is not None and ctx.needs_input_grad[2]
        grad_context = None
        for layer in reversed(flow.layers):
            layer_params = [p for p in layer.parameters() if id(p) in slot]
            with torch.enable_grad():
                layer_context = context.detach().requires_grad_() if want_context else context
                x, leaves, out, logdet = _rebuild(layer, y, layer_context)
                outputs, grads = [out], [grad_y]
                if logdet.requires_grad:  # volume-preserving layers return a constant logdet
                    outputs.append(logdet)
                    grads.append(grad_logdet)
                inputs = [*leaves, *layer_params] + ([layer_context] if want_context else [])
                found = torch.autograd.grad(outputs, inputs, grads, allow_unused=True)
            grad_x = None
            for g in found[:len(leaves)]:
                if g is not None:
                    grad_x = g if grad_x is None else grad_x + g
            if grad_x is None:  # the layer's outputs do not depend on its input
                grad_x = torch.zeros_like(x)
            for p, g in zip(layer_params, found[len(leaves):len(leaves) + len(layer_params)]):
                if g is not None:
                    i = slot[id(p)]
                    grad_params[i] = g if grad_params[i] is None else grad_params[i] + g
            if want_context and found[-1] is not None:
                grad_context = found[-1] if grad_context is None else grad_context + found[-1]
            grad_y, y = grad_x, x
        return (None, grad_y, grad_context, *grad_params)


def _rebuild(layer: nn.Module, y: torch.Tensor, context):
    """(x, leaves, forward(x) with grad...) for one layer: its own `recompute_forward` hook when
    it has one (coupling layers: one conditioner run), else inverse under no_grad then forward."""
    hook = getattr(layer, "recompute_forward", None)
    if hook is not None:
        return hook(y, context)
    with torch.no_grad():
        x, _ = layer.inverse(y, context)  # rebuild this layer's input from its output
    leaf = x.detach().requires_grad_()
    out, logdet = layer(leaf, context)
    return x.detach(), [leaf], out, logdet


class FlowSequential(nn.Module):
    """y, logdet = layers[-1](... layers[0](x, context) ..., context), logdets added.

    forward(x, context=None) -> (y, logdet (N,)); inverse(y, context=None) -> (x, logdet (N,)),
    the layers' inverses in reverse order (logdet = log|det dx/dy| = -forward logdet).
    recompute=True: when gradients are needed, train without storing intermediate activations
    (see the module docstring); the results and gradients equal the stored path's up to the
    rounding of the inverse. The `recompute` attribute can be switched at any time.
    """

    def __init__(self, *layers: nn.Module, recompute: bool = False):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, nn.Module) or not callable(getattr(layer, "inverse", None)):
                raise TypeError(f"layer {i} must be an nn.Module with forward and inverse, got {type(layer).__name__}")
        self.layers = nn.ModuleList(layers)
        self.recompute = bool(recompute)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    def _chain(self, x, context):
        logdet = None
        for layer in self.layers:
            x, layer_logdet = layer(x, context)
            logdet = layer_logdet if logdet is None else logdet + layer_logdet
        if logdet is None:
            logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        return x, logdet

    def _use_recompute(self, x, context, params) -> bool:
        if not self.recompute or len(self.layers) == 0 or not torch.is_grad_enabled():
            return False
        if not (x.requires_grad or params or (context is not None and context.requires_grad)):
            return False
        return not (self.training and _needs_initialization(self))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a Tensor, got {type(x).__name__}")
        params = [p for p in self.parameters() if p.requires_grad]
        if not self._use_recompute(x, context, params):
            return self._chain(x, context)
        return _RecomputeByInverse.apply(self, x, context, *params)

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None):
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"y must be a Tensor, got {type(y).__name__}")
        logdet = None
        for layer in reversed(self.layers):
            y, layer_logdet = layer.inverse(y, context)
            logdet = layer_logdet if logdet is None else logdet + layer_logdet
        if logdet is None:
            logdet = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
        return y, logdet

    @torch.no_grad()
    def initialize(self, x: torch.Tensor, context: torch.Tensor | None = None) -> None:
        """Run one plain forward in training mode, so data-dependent layers (ActNorm) initialise
        from the batch x; the module's training flag is restored afterwards."""
        was_training = self.training
        self.train()
        try:
            self._chain(x, context)
        finally:
            self.train(was_training)

    def extra_repr(self) -> str:
        return f"recompute={self.recompute}"
