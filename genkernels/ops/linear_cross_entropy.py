"""The final linear layer of a language model and its cross-entropy loss, fused over row chunks so
the (N, V) logits are never materialised:

    logits = hidden @ weight.T + bias                  (N, V), never stored whole
    loss   = mean over rows with targets != ignore_index of
             (1 - s) (lse - logits[target]) + s (lse - mean_j logits[j]),   lse = logsumexp(logits)

(s = label_smoothing; torch.nn.functional.cross_entropy's definition). Per chunk of rows: the
logits matmul in the inputs' dtype (torch's matmul), then the log-sum-exp and the loss in fp32.
The gradient: d logits = (softmax - (1 - s) onehot - s / V) / count in fp32 per chunk, then
d hidden = d logits @ weight (chunk by chunk) and d weight += d logits.T @ hidden_chunk with the
weight gradient accumulated in an fp32 buffer across chunks (fp16/bf16 inputs are never summed in
their own dtype: a bf16 accumulator is what made a popular fused-loss library diverge). When a
gradient will be needed the forward forms it from each chunk's logits while they are at hand (the
loss is a scalar, so the backward only scales it: 3 matmuls in all, as an unfused step); otherwise,
or with backward_in_forward=False, the forward keeps only each row's log-sum-exp (N,) and the
backward recomputes each chunk's logits (4 matmuls).

The matmuls are torch's, so this op is pure PyTorch; it is a torch.library op (fullgraph compile,
opcheck) with its own backward. Peak memory: chunk_size x V fp32 logits (plus their softmax and
gradient) instead of N x V, and a V x D fp32 weight-gradient buffer.

Reading order: reference -> chunked forward / backward -> torch.library op + autograd -> public function.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from genkernels.ops import _args as args
from genkernels.ops._library import define

_AUTO_CHUNK_ELEMENTS = 1 << 22  # logits per chunk when chunk_size is None (16 MiB in fp32)


# ---- reference --------------------------------------------------------------------------------
def linear_cross_entropy_ref(hidden, weight, targets, bias=None, ignore_index=-100, label_smoothing=0.0):
    """F.cross_entropy on the materialised logits (computed in the inputs' dtype, then float32;
    float64 for float64 inputs). Differentiable by autograd."""
    logits = F.linear(hidden, weight, bias)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits, targets, ignore_index=ignore_index, label_smoothing=label_smoothing)


# ---- chunked forward and backward ----------------------------------------------------------------
def _acc(t):
    return torch.promote_types(t.dtype, torch.float32)


def _chunks(n, chunk_size):
    return [(s, min(n, s + chunk_size)) for s in range(0, n, chunk_size)]


def _chunk_logits(hidden, weight, bias, s, e):
    return F.linear(hidden[s:e], weight, bias).to(_acc(hidden))


def _chunk_grad_logits(logits, lse_c, v, t, scale, label_smoothing):
    """d loss / d logits of one chunk, in place of `logits` (fp32): (softmax - (1 - s) onehot - s / V)
    * scale on valid rows, 0 on ignored ones (even where their logits are NaN)."""
    d = logits.sub_(lse_c[:, None]).exp_()  # softmax
    d.scatter_add_(1, torch.where(v, t, 0)[:, None],
                   torch.full((d.shape[0], 1), -(1 - label_smoothing), dtype=d.dtype, device=d.device))
    if label_smoothing:
        d.sub_(label_smoothing / d.shape[1])
    return d.mul_(scale).masked_fill_(~v[:, None], 0)


def _forward(hidden, weight, bias, targets, ignore_index, label_smoothing, chunk_size, with_grads):
    """(loss 0-d, lse (N,), grad_hidden, grad_weight, grad_bias): loss and lse float32 (float64 for
    float64). with_grads: the gradients of the loss too, formed from each chunk's logits while they
    are at hand (3 matmuls per chunk instead of the 4 of a separate backward); else empty tensors."""
    acc = _acc(hidden)
    n = hidden.shape[0]
    valid = targets != ignore_index
    count = valid.sum()
    lse = torch.empty(n, dtype=acc, device=hidden.device)
    total = torch.zeros((), dtype=acc, device=hidden.device)
    if with_grads:
        grads = _Grads(hidden, weight, bias)
        scale = 1.0 / count.to(acc)
    for s, e in _chunks(n, chunk_size):
        logits = _chunk_logits(hidden, weight, bias, s, e)
        lse_c = torch.logsumexp(logits, -1)
        lse[s:e] = lse_c
        v, t = valid[s:e], targets[s:e]
        z_t = logits.gather(1, torch.where(v, t, 0)[:, None])[:, 0]
        row = lse_c - z_t
        if label_smoothing:
            row = (1 - label_smoothing) * row + label_smoothing * (lse_c - logits.mean(-1))
        total = total + torch.where(v, row, 0).sum()
        if with_grads:
            grads.add(_chunk_grad_logits(logits, lse_c, v, t, scale, label_smoothing), hidden, weight, s, e)
        del logits
    loss = total / count
    if not with_grads:
        empty = hidden.new_empty(0)
        return loss, lse, empty, empty.clone(), empty.clone()
    return (loss, lse, *grads.result(weight))


class _Grads:
    """The gradients of hidden, weight and bias, chunk by chunk; weight's and bias's accumulated in
    fp32 (float64 for float64) across chunks, never in fp16/bf16."""

    def __init__(self, hidden, weight, bias):
        acc = _acc(hidden)
        self.hidden = torch.empty_like(hidden, memory_format=torch.contiguous_format)
        self.weight = torch.zeros(weight.shape, dtype=acc, device=weight.device)
        self.bias = torch.zeros(weight.shape[0], dtype=acc, device=weight.device) if bias is not None else None

    def add(self, d, hidden, weight, s, e):
        self.hidden[s:e] = d.to(weight.dtype) @ weight
        self.weight.addmm_(d.T, hidden[s:e].to(d.dtype))
        if self.bias is not None:
            self.bias += d.sum(0)

    def result(self, weight):
        gb = self.bias.to(weight.dtype) if self.bias is not None else weight.new_empty(0)
        return self.hidden, self.weight.to(weight.dtype), gb


def _backward_chunks(grad_loss, hidden, weight, bias, targets, lse, ignore_index, label_smoothing, chunk_size):
    """(grad_hidden like hidden, grad_weight like weight, grad_bias (V,) like weight (empty without
    bias)), recomputing each chunk's logits (the forward kept only lse)."""
    acc = _acc(hidden)
    valid = targets != ignore_index
    scale = grad_loss.to(acc) / valid.sum()
    grads = _Grads(hidden, weight, bias)
    for s, e in _chunks(hidden.shape[0], chunk_size):
        logits = _chunk_logits(hidden, weight, bias, s, e)
        grads.add(_chunk_grad_logits(logits, lse[s:e], valid[s:e], targets[s:e], scale, label_smoothing),
                  hidden, weight, s, e)
        del logits
    return grads.result(weight)


# ---- torch.library op + autograd ----------------------------------------------------------------
def _fake(hidden, weight, bias, targets, ignore_index, label_smoothing, chunk_size, with_grads):
    acc = _acc(hidden)
    if with_grads:
        grads = (torch.empty_like(hidden, memory_format=torch.contiguous_format),
                 torch.empty_like(weight, memory_format=torch.contiguous_format),
                 weight.new_empty((weight.shape[0],) if bias is not None else (0,)))
    else:
        grads = tuple(hidden.new_empty(0) for _ in range(3))
    return (hidden.new_empty((), dtype=acc), hidden.new_empty((hidden.shape[0],), dtype=acc), *grads)


def _backward_fake(grad_loss, hidden, weight, bias, targets, lse, ignore_index, label_smoothing, chunk_size):
    return (torch.empty_like(hidden, memory_format=torch.contiguous_format),
            torch.empty_like(weight, memory_format=torch.contiguous_format),
            weight.new_empty((weight.shape[0],) if bias is not None else (0,)))


def _setup_context(ctx, inputs, output):
    hidden, weight, bias, targets, ignore_index, label_smoothing, chunk_size, with_grads = inputs
    ctx.with_grads = with_grads
    if with_grads:  # the forward formed the gradients of the loss: the backward scales them
        ctx.save_for_backward(*output[2:])
    else:
        ctx.save_for_backward(hidden, weight, bias, targets, output[1])
    ctx.options = (ignore_index, label_smoothing, chunk_size)
    ctx.has_bias = bias is not None


def _backward(ctx, grad_loss, *_unused):
    if ctx.with_grads:
        gh, gw, gb = (g * grad_loss for g in ctx.saved_tensors)
    else:
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        gh, gw, gb = linear_cross_entropy_backward_op(grad_loss, hidden, weight, bias, targets, lse, *ctx.options)
    return gh, gw, gb if ctx.has_bias else None, None, None, None, None, None


linear_cross_entropy_op = define(
    "linear_cross_entropy(Tensor hidden, Tensor weight, Tensor? bias, Tensor targets, int ignore_index, "
    "float label_smoothing, int chunk_size, bool with_grads) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    impl=_forward, fake=_fake, setup_context=_setup_context, backward=_backward)
linear_cross_entropy_backward_op = define(
    "linear_cross_entropy_backward(Tensor grad_loss, Tensor hidden, Tensor weight, Tensor? bias, Tensor targets, "
    "Tensor lse, int ignore_index, float label_smoothing, int chunk_size) -> (Tensor, Tensor, Tensor)",
    impl=_backward_chunks, fake=_backward_fake)


# ---- public function ----------------------------------------------------------------------------
def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                         bias: torch.Tensor | None = None, ignore_index: int = -100,
                         label_smoothing: float = 0.0, chunk_size: int | None = None,
                         backward_in_forward: bool = True) -> torch.Tensor:
    """Mean cross-entropy of the logits hidden @ weight.T + bias against targets, without storing
    the (N, V) logits: F.cross_entropy(F.linear(hidden, weight, bias).float(), targets, ...).

    hidden      (N, D) float32 / float16 / bfloat16 / float64 (flatten (B, T, D) first)
    weight      (V, D) in hidden's dtype and on its device (a tied embedding works as is)
    targets     (N,) int64 class indices in [0, V), or ignore_index (those rows contribute nothing)
    bias        (V,) or None
    label_smoothing  in [0, 1]
    chunk_size  rows per chunk (default: about 2^22 / V, so a chunk's fp32 logits take 16 MiB)
    backward_in_forward  when a gradient will be needed, form it during the forward from each
                chunk's logits (3 matmuls per chunk; the backward then only scales it by the
                incoming gradient); False: keep only the (N,) log-sum-exp and recompute the logits
                in the backward (4 matmuls, nothing of size N x D or V x D held in between)
    Returns the 0-dim loss in float32 (float64 for float64 inputs); NaN when every row is ignored
    (as F.cross_entropy). Differentiable with respect to hidden, weight and bias.
    """
    args.check_tensor("hidden", hidden)
    if hidden.dim() != 2:
        raise ValueError(f"linear_cross_entropy: hidden must be (N, D), got shape {tuple(hidden.shape)}")
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"linear_cross_entropy: weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[1] or weight.shape[0] == 0:
        raise ValueError(f"linear_cross_entropy: weight must be (V, D) with D = {hidden.shape[1]} and V >= 1, got "
                         f"{tuple(weight.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"linear_cross_entropy: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != hidden.dtype:
            raise TypeError(f"linear_cross_entropy: {name} must have hidden's dtype ({hidden.dtype}), got {t.dtype}")
        if t.device != hidden.device:
            raise ValueError(f"linear_cross_entropy: {name} must be on hidden's device {hidden.device}, got {t.device}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"linear_cross_entropy: bias must be (V,) = ({weight.shape[0]},), got {tuple(bias.shape)}")
    if not isinstance(targets, torch.Tensor) or targets.dtype != torch.int64:
        got = targets.dtype if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise TypeError(f"linear_cross_entropy: targets must be an int64 tensor, got {got}")
    if tuple(targets.shape) != (hidden.shape[0],):
        raise ValueError(f"linear_cross_entropy: targets must be (N,) = ({hidden.shape[0]},), "
                         f"got {tuple(targets.shape)}")
    if targets.device != hidden.device:
        raise ValueError(f"linear_cross_entropy: targets must be on hidden's device {hidden.device}, "
                         f"got {targets.device}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"linear_cross_entropy: ignore_index must be an int, got {type(ignore_index).__name__}")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
            or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"linear_cross_entropy: label_smoothing must be a float in [0, 1], got {label_smoothing!r}")
    if chunk_size is None:
        chunk_size = max(1, _AUTO_CHUNK_ELEMENTS // weight.shape[0])
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"linear_cross_entropy: chunk_size must be a positive int or None, got {chunk_size!r}")
    if not isinstance(backward_in_forward, bool):
        raise TypeError(f"linear_cross_entropy: backward_in_forward must be a bool, "
                        f"got {type(backward_in_forward).__name__}")
    if targets.numel() and not torch.compiler.is_compiling():
        bad = (targets != ignore_index) & ((targets < 0) | (targets >= weight.shape[0]))
        if bool(bad.any()):
            raise ValueError(f"linear_cross_entropy: targets must lie in [0, V = {weight.shape[0]}) or equal "
                             f"ignore_index ({ignore_index}), got {int(targets[bad][0])}")
    # a gradient will be wanted: form it in the same pass over the chunks (backward_in_forward)
    with_grads = backward_in_forward and torch.is_grad_enabled() and (
        hidden.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad))
    return linear_cross_entropy_op(hidden, weight, bias, targets, ignore_index, float(label_smoothing), chunk_size,
                                   with_grads)[0]
