"""The fused LSTM cell step (Hochreiter & Schmidhuber 1997, torch.nn.LSTM's gate order i, f, g, o):

    gates = x W_ih^T + b_ih + h W_hh^T + b_hh                  (B, 4H), the matmuls stay in torch
    i, f, o = sigmoid(gates_i, gates_f, gates_o),  g = tanh(gates_g)
    c = f * c_prev + i * g,   h = o * tanh(c)

The pointwise math (and its gradient) is written once in csrc/lstm/lstm_math.h for the C++ CPU and
CUDA kernels: one pass reads the (B, 4H) pre-activations and c_prev and writes h and c; the
backward recomputes the activations from the same two inputs (the forward saves nothing else) and
writes the gates' and c_prev's gradients in one pass. Arithmetic in fp32 for fp16/bf16 storage.

This file also holds the recurrent-dropout mask of genkernels.nn.LSTM: keep(b, j) from Philox at
(seed, offset, row b, unit j), the bit layout of ops/philox.py, scaled by 1 / (1 - p). It does not
depend on the time step, so every step of a sequence drops the same units (variational dropout,
Gal & Ghahramani 2016); the cells draw it in-kernel, `lstm_dropout_mask` materialises it.

Reading order: reference -> host launchers -> torch.library op + autograd -> public function.
"""
from __future__ import annotations

import torch

from genkernels import _ext
from genkernels.ops import _args as args
from genkernels.ops._library import define
from genkernels.ops.philox import _check_seed, _philox4x32_10, _uniform24

_MASK32 = 0xFFFFFFFF


# ---- reference --------------------------------------------------------------------------------
def lstm_cell_ref(gates: torch.Tensor, c_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure-PyTorch cell in gates' dtype (eager ops, differentiable by autograd). Returns (h, c)."""
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def lstm_cell_backward_ref(grad_h, grad_c, gates, c_prev):
    """Closed-form gradients in float32 (float64 for float64): LstmCellBackward's twin
    (csrc/lstm/lstm_math.h). Returns (grad_gates, grad_c_prev) in gates' dtype."""
    acc = torch.promote_types(gates.dtype, torch.float32)
    a = gates.to(acc)
    i, f, g, o = a.chunk(4, 1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    cp = c_prev.to(acc)
    tc = torch.tanh(f * cp + i * g)
    dh = grad_h.to(acc)
    dct = grad_c.to(acc) + dh * o * (1 - tc * tc)
    grad_gates = torch.cat([dct * g * i * (1 - i), dct * cp * f * (1 - f), dct * i * (1 - g * g),
                            dh * tc * o * (1 - o)], 1)
    return grad_gates.to(gates.dtype).contiguous(), (dct * f).to(gates.dtype).contiguous()


def lstm_dropout_mask_ref(batch: int, hidden: int, p: float, seed: int, offset: int = 0, *, device=None,
                          dtype=torch.float32) -> torch.Tensor:
    """(batch, hidden) mask keep / (1 - p), bit-for-bit the kernels' Philox draw."""
    groups = (hidden + 3) // 4
    g = torch.arange(groups, device=device, dtype=torch.int64).unsqueeze(0)
    n = torch.arange(batch, device=device, dtype=torch.int64).unsqueeze(1)
    zeros = torch.zeros_like(g)
    k1 = ((seed >> 32) & _MASK32) ^ (n & _MASK32)
    r = _philox4x32_10(g & _MASK32, (g >> 32) & _MASK32, zeros + (offset & _MASK32),
                       zeros + ((offset >> 32) & _MASK32), seed & _MASK32, k1)
    u = torch.stack([_uniform24(x) for x in r], -1).reshape(batch, groups * 4)[:, :hidden]
    scale = torch.tensor(1.0 / (1.0 - p), dtype=torch.float64).to(torch.float32)
    keep = u >= torch.tensor(p, dtype=torch.float64).to(torch.float32)
    return torch.where(keep, scale.to(u.device), torch.zeros((), device=u.device)).to(dtype)


# ---- host launchers (validate what only they see, allocate, launch) --------------------------
def launch_forward(backend, gates, c_prev, h, c, h_rec=None, p=0.0, seed=0, offset=0):
    """Writes h, c (and h_rec = h * mask when given) of one step into the given dense tensors."""
    B, H = c.shape
    args.kernel(backend, "lstm_cell", like=gates)(
        gates=gates.data_ptr(), c_prev=c_prev.data_ptr(), h=h.data_ptr(), c=c.data_ptr(), h_rec=_ext.ptr(h_rec),
        B=B, H=H, p=float(p), seed=seed, offset=offset, dtype=_ext.dtype_code(gates))


def launch_backward(backend, grad_h, grad_c, gates, c_prev, grad_gates, grad_c_prev, grad_h_rec=None, p=0.0,
                    seed=0, offset=0):
    B, H = c_prev.shape
    args.kernel(backend, "lstm_cell_backward", like=gates)(
        grad_h=grad_h.data_ptr(), grad_h_rec=_ext.ptr(grad_h_rec), grad_c=grad_c.data_ptr(), gates=gates.data_ptr(),
        c_prev=c_prev.data_ptr(), grad_gates=grad_gates.data_ptr(), grad_c_prev=grad_c_prev.data_ptr(), B=B, H=H,
        p=float(p), seed=seed, offset=offset, dtype=_ext.dtype_code(gates))


def _lstm_cell_kernel(gates, c_prev):
    backend = args.choose_backend("lstm_cell", gates)
    if backend == "torch":
        h, c = lstm_cell_ref(gates, c_prev)
        return h.contiguous(), c.contiguous()
    h = torch.empty_like(c_prev, memory_format=torch.contiguous_format)
    c = torch.empty_like(h)
    if h.numel():
        gates_d, c_prev_d = gates.contiguous(), c_prev.contiguous()
        launch_forward(backend, gates_d, c_prev_d, h, c)
    return h, c


def _lstm_cell_backward_kernel(grad_h, grad_c, gates, c_prev):
    backend = args.choose_backend("lstm_cell", gates)
    if backend == "torch":
        return lstm_cell_backward_ref(grad_h, grad_c, gates, c_prev)
    grad_gates = torch.empty_like(gates, memory_format=torch.contiguous_format)
    grad_c_prev = torch.empty_like(c_prev, memory_format=torch.contiguous_format)
    if grad_c_prev.numel():
        gh, gc = grad_h.to(gates.dtype).contiguous(), grad_c.to(gates.dtype).contiguous()
        gates_d, c_prev_d = gates.contiguous(), c_prev.contiguous()
        launch_backward(backend, gh, gc, gates_d, c_prev_d, grad_gates, grad_c_prev)
    return grad_gates, grad_c_prev


def _lstm_dropout_mask_kernel(like, p, seed, offset):
    B, H = like.shape
    backend = args.choose_backend("lstm_dropout_mask", like)
    if backend == "torch":
        return lstm_dropout_mask_ref(B, H, p, seed, offset, device=like.device, dtype=like.dtype)
    out = torch.empty_like(like, memory_format=torch.contiguous_format)
    if out.numel():
        args.kernel(backend, "lstm_dropout_mask", like=like)(out=out.data_ptr(), B=B, H=H, p=float(p), seed=seed,
                                                             offset=offset, dtype=_ext.dtype_code(like))
    return out


# ---- fakes and autograd --------------------------------------------------------------------------
def _lstm_cell_fake(gates, c_prev):
    h = torch.empty_like(c_prev, memory_format=torch.contiguous_format)
    return h, torch.empty_like(h)


def _lstm_cell_backward_fake(grad_h, grad_c, gates, c_prev):
    return (torch.empty_like(gates, memory_format=torch.contiguous_format),
            torch.empty_like(c_prev, memory_format=torch.contiguous_format))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_h, grad_c):
    gates, c_prev = ctx.saved_tensors
    if grad_h is None:
        grad_h = torch.zeros_like(c_prev)
    if grad_c is None:
        grad_c = torch.zeros_like(c_prev)
    return lstm_cell_backward_op(grad_h, grad_c, gates, c_prev)


# ---- registration (routing: ops/_library.py) ------------------------------------------------------
lstm_cell_op = define("lstm_cell(Tensor gates, Tensor c_prev) -> (Tensor, Tensor)",
                      impl=_lstm_cell_kernel, fake=_lstm_cell_fake, setup_context=_setup_context,
                      backward=_backward)
lstm_cell_backward_op = define(
    "lstm_cell_backward(Tensor grad_h, Tensor grad_c, Tensor gates, Tensor c_prev) -> (Tensor, Tensor)",
    impl=_lstm_cell_backward_kernel, fake=_lstm_cell_backward_fake)
lstm_dropout_mask_op = define("lstm_dropout_mask(Tensor like, float p, int seed, int offset) -> Tensor",
                              impl=_lstm_dropout_mask_kernel,
                              fake=lambda like, p, seed, offset: torch.empty_like(like))


# ---- public functions --------------------------------------------------------------------------
def lstm_cell(gates: torch.Tensor, c_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One fused LSTM step from the summed gate pre-activations.

    gates   (B, 4H) = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh, in torch.nn.LSTM's order i, f, g, o
    c_prev  (B, H), gates' dtype and device (float32 / float16 / bfloat16 / float64)

    Returns (h, c), each (B, H): c = sigmoid(f) c_prev + sigmoid(i) tanh(g), h = sigmoid(o) tanh(c).
    Differentiable with respect to gates and c_prev, through h and c.
    """
    check_cell_inputs(gates, c_prev)
    return lstm_cell_op(gates, c_prev)


def lstm_dropout_mask(like: torch.Tensor, p: float, seed: int, offset: int = 0) -> torch.Tensor:
    """The (B, H) recurrent-dropout mask (0 or 1 / (1 - p)) genkernels.nn.LSTM applies to h at every
    step of a sequence, in like's dtype and on its device (like is (B, H))."""
    args.check_tensor("like", like)
    if like.dim() != 2:
        raise ValueError(f"like must be (B, H), got shape {tuple(like.shape)}")
    check_dropout(p, "p")
    _check_seed(seed, offset)
    return lstm_dropout_mask_op(like, float(p), seed, offset)


def check_dropout(p, name: str) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {p!r}")


def check_cell_inputs(gates, c_prev, gates_name: str = "gates") -> None:
    args.check_tensor(gates_name, gates)
    if gates.dim() != 2 or gates.shape[1] % 4:
        raise ValueError(f"{gates_name} must be (B, 4H) (the i, f, g, o pre-activations), got shape "
                         f"{tuple(gates.shape)}")
    if not isinstance(c_prev, torch.Tensor):
        raise TypeError(f"c_prev must be a torch.Tensor, got {type(c_prev).__name__}")
    expected = (gates.shape[0], gates.shape[1] // 4)
    if tuple(c_prev.shape) != expected:
        raise ValueError(f"c_prev must have shape (B, H) = {expected} for {gates_name} of shape "
                         f"{tuple(gates.shape)}, got {tuple(c_prev.shape)}")
    if c_prev.dtype != gates.dtype:
        raise TypeError(f"c_prev must have {gates_name}'s dtype ({gates.dtype}), got {c_prev.dtype}")
    if c_prev.device != gates.device:
        raise ValueError(f"c_prev must be on {gates_name}'s device {gates.device}, got {c_prev.device}")


def backend_for(x: torch.Tensor) -> str:
    """The backend the cell kernels use for tensors like x ("torch", "cpu" or "cuda")."""
    return args.choose_backend("lstm_cell", x)


__all__ = ["lstm_cell", "lstm_cell_ref", "lstm_dropout_mask", "lstm_dropout_mask_ref"]
