"""The fused LayerNorm-LSTM cell step (Ba, Kiros & Hinton 2016, "Layer normalization", sec. 3.1):

    gates = gates_x + LN(gates_h) * weight_h           LN over the 4H gates, gates_h = h W_hh^T
    i, f, o = sigmoid(.), g = tanh(.)                   (torch.nn.LSTM's order i, f, g, o)
    c = f * c_prev + i * g
    h = o * tanh(LN(c) * weight_c + bias_c)             LN over the H cells; c itself is carried

gates_x is the input side, LN(x W_ih^T) * weight_x + b (genkernels.nn.LSTM computes it for every
time step in one batched op); the bias lives there, so LN(gates_h) has a gain only. Neither cuDNN
nor oneDNN has this cell. The math is written once in csrc/lstm/lstm_math.h for the C++ CPU and
CUDA kernels: one pass per batch row computes both layer norms (fp32 statistics, two passes each)
and writes h and c; the backward recomputes everything from the inputs and writes the gradients of
gates_x, gates_h and c_prev plus per-row fp32 terms of the weight_h / weight_c / bias_c gradients,
which the host sums over rows in a fixed order (deterministic, independent of the thread count).

Reading order: reference -> host launchers -> torch.library op + autograd -> public function.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from genkernels import _ext
from genkernels.ops import _args as args
from genkernels.ops._library import define
from genkernels.ops.lstm_cell import check_cell_inputs


# ---- reference --------------------------------------------------------------------------------
def layernorm_lstm_cell_ref(gates_x, gates_h, c_prev, weight_h, weight_c, bias_c, eps=1e-5):
    """Pure-PyTorch LayerNorm-LSTM cell in gates_x's dtype (differentiable by autograd). Returns (h, c)."""
    G, H = gates_h.shape[-1], c_prev.shape[-1]
    a = gates_x + F.layer_norm(gates_h, (G,), weight_h, None, eps)
    i, f, g, o = a.chunk(4, 1)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(F.layer_norm(c, (H,), weight_c, bias_c, eps))
    return h, c


def layernorm_lstm_cell_backward_ref(grad_h, grad_c, gates_x, gates_h, c_prev, weight_h, weight_c, bias_c, eps):
    """Closed-form gradients in float32 (float64 for float64): LnLstmCellBackward's twin
    (csrc/lstm/lstm_math.h). Returns (grad_gates_x, grad_gates_h, grad_c_prev, grad_weight_h,
    grad_weight_c, grad_bias_c) in the inputs' dtype."""
    acc = torch.promote_types(gates_x.dtype, torch.float32)
    gx, gh, cp = gates_x.to(acc), gates_h.to(acc), c_prev.to(acc)
    wh, wc, bc = weight_h.to(acc), weight_c.to(acc), bias_c.to(acc)

    def normalise(x):
        m = x.mean(-1, keepdim=True)
        r = torch.rsqrt((x - m).square().mean(-1, keepdim=True) + eps)
        return (x - m) * r, r

    hh, rh = normalise(gh)
    i, f, g, o = (gx + hh * wh).chunk(4, 1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    ch, rc = normalise(f * cp + i * g)
    tc = torch.tanh(ch * wc + bc)
    dh = grad_h.to(acc)
    dcn = dh * o * (1 - tc * tc)
    dch = dcn * wc
    dct = grad_c.to(acc) + rc * (dch - dch.mean(-1, keepdim=True) - ch * (dch * ch).mean(-1, keepdim=True))
    da = torch.cat([dct * g * i * (1 - i), dct * cp * f * (1 - f), dct * i * (1 - g * g), dh * tc * o * (1 - o)], 1)
    dhh = da * wh
    d_gh = rh * (dhh - dhh.mean(-1, keepdim=True) - hh * (dhh * hh).mean(-1, keepdim=True))
    out = (da, d_gh, dct * f, (da * hh).sum(0), (dcn * ch).sum(0), dcn.sum(0))
    return tuple(t.to(gates_x.dtype).contiguous() for t in out)


# ---- host launchers (validate what only they see, allocate, launch) --------------------------
def launch_forward(backend, gates_x, gates_h, c_prev, weight_h, weight_c, bias_c, h, c, eps, h_rec=None, p=0.0,
                   seed=0, offset=0):
    """Writes h, c (and h_rec = h * mask when given) of one step into the given dense tensors."""
    B, H = c.shape
    args.kernel(backend, "ln_lstm_cell", like=gates_x)(
        gates_x=gates_x.data_ptr(), gates_h=gates_h.data_ptr(), c_prev=c_prev.data_ptr(),
        weight_h=weight_h.data_ptr(), weight_c=weight_c.data_ptr(), bias_c=bias_c.data_ptr(), h=h.data_ptr(),
        c=c.data_ptr(), h_rec=_ext.ptr(h_rec), B=B, H=H, eps=float(eps), p=float(p), seed=seed, offset=offset,
        dtype=_ext.dtype_code(gates_x))


def launch_backward(backend, grad_h, grad_c, gates_x, gates_h, c_prev, weight_h, weight_c, bias_c, grad_gates_x,
                    grad_gates_h, grad_c_prev, terms_h, terms_c, terms_b, eps, grad_h_rec=None, p=0.0, seed=0,
                    offset=0):
    B, H = c_prev.shape
    args.kernel(backend, "ln_lstm_cell_backward", like=gates_x)(
        grad_h=grad_h.data_ptr(), grad_h_rec=_ext.ptr(grad_h_rec), grad_c=grad_c.data_ptr(),
        gates_x=gates_x.data_ptr(), gates_h=gates_h.data_ptr(), c_prev=c_prev.data_ptr(),
        weight_h=weight_h.data_ptr(), weight_c=weight_c.data_ptr(), bias_c=bias_c.data_ptr(),
        grad_gates_x=grad_gates_x.data_ptr(), grad_gates_h=grad_gates_h.data_ptr(),
        grad_c_prev=grad_c_prev.data_ptr(), terms_h=terms_h.data_ptr(), terms_c=terms_c.data_ptr(),
        terms_b=terms_b.data_ptr(), B=B, H=H, eps=float(eps), p=float(p), seed=seed, offset=offset,
        dtype=_ext.dtype_code(gates_x))


def _dense(*tensors):
    return [t.contiguous() for t in tensors]


def _ln_lstm_cell_kernel(gates_x, gates_h, c_prev, weight_h, weight_c, bias_c, eps):
    backend = args.choose_backend("ln_lstm_cell", gates_x)
    if backend == "torch":
        h, c = layernorm_lstm_cell_ref(gates_x, gates_h, c_prev, weight_h, weight_c, bias_c, eps)
        return h.contiguous(), c.contiguous()
    h = torch.empty_like(c_prev, memory_format=torch.contiguous_format)
    c = torch.empty_like(h)
    if h.numel():
        launch_forward(backend, *_dense(gates_x, gates_h, c_prev, weight_h, weight_c, bias_c), h, c, eps)
    return h, c


def _ln_lstm_cell_backward_kernel(grad_h, grad_c, gates_x, gates_h, c_prev, weight_h, weight_c, bias_c, eps):
    backend = args.choose_backend("ln_lstm_cell", gates_x)
    if backend == "torch":
        return layernorm_lstm_cell_backward_ref(grad_h, grad_c, gates_x, gates_h, c_prev, weight_h, weight_c,
                                                bias_c, eps)
    B, H = c_prev.shape
    grad_gates_x = torch.empty_like(gates_x, memory_format=torch.contiguous_format)
    grad_gates_h = torch.empty_like(grad_gates_x)
    grad_c_prev = torch.empty_like(c_prev, memory_format=torch.contiguous_format)
    f32 = dict(dtype=torch.float32, device=gates_x.device)
    terms_h, terms_c, terms_b = torch.zeros(B, 4 * H, **f32), torch.zeros(B, H, **f32), torch.zeros(B, H, **f32)
    if grad_c_prev.numel():
        gh, gc = grad_h.to(gates_x.dtype).contiguous(), grad_c.to(gates_x.dtype).contiguous()
        launch_backward(backend, gh, gc, *_dense(gates_x, gates_h, c_prev, weight_h, weight_c, bias_c), grad_gates_x,
                        grad_gates_h, grad_c_prev, terms_h, terms_c, terms_b, eps)
    dt = weight_h.dtype
    return (grad_gates_x, grad_gates_h, grad_c_prev, terms_h.sum(0).to(dt), terms_c.sum(0).to(dt),
            terms_b.sum(0).to(dt))


# ---- fakes and autograd --------------------------------------------------------------------------
def _ln_lstm_cell_fake(gates_x, gates_h, c_prev, weight_h, weight_c, bias_c, eps):
    h = torch.empty_like(c_prev, memory_format=torch.contiguous_format)
    return h, torch.empty_like(h)


def _ln_lstm_cell_backward_fake(grad_h, grad_c, gates_x, gates_h, c_prev, weight_h, weight_c, bias_c, eps):
    like = lambda t: torch.empty_like(t, memory_format=torch.contiguous_format)  # noqa: E731
    return like(gates_x), like(gates_h), like(c_prev), like(weight_h), like(weight_c), like(bias_c)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:6])
    ctx.eps = inputs[6]


def _backward(ctx, grad_h, grad_c):
    saved = ctx.saved_tensors
    c_prev = saved[2]
    if grad_h is None:
        grad_h = torch.zeros_like(c_prev)
    if grad_c is None:
        grad_c = torch.zeros_like(c_prev)
    return (*ln_lstm_cell_backward_op(grad_h, grad_c, *saved, ctx.eps), None)


# ---- registration (routing: ops/_library.py) ------------------------------------------------------
ln_lstm_cell_op = define(
    "ln_lstm_cell(Tensor gates_x, Tensor gates_h, Tensor c_prev, Tensor weight_h, Tensor weight_c, Tensor bias_c, "
    "float eps) -> (Tensor, Tensor)",
    impl=_ln_lstm_cell_kernel, fake=_ln_lstm_cell_fake, setup_context=_setup_context, backward=_backward)
ln_lstm_cell_backward_op = define(
    "ln_lstm_cell_backward(Tensor grad_h, Tensor grad_c, Tensor gates_x, Tensor gates_h, Tensor c_prev, "
    "Tensor weight_h, Tensor weight_c, Tensor bias_c, float eps) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
    impl=_ln_lstm_cell_backward_kernel, fake=_ln_lstm_cell_backward_fake)


# ---- public function --------------------------------------------------------------------------
def layernorm_lstm_cell(gates_x: torch.Tensor, gates_h: torch.Tensor, c_prev: torch.Tensor,
                        weight_h: torch.Tensor, weight_c: torch.Tensor, bias_c: torch.Tensor,
                        eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """One fused LayerNorm-LSTM step.

    gates_x   (B, 4H) the input side, e.g. LN(x @ W_ih.T) * weight_x + b_ih + b_hh
    gates_h   (B, 4H) the recurrent matmul h @ W_hh.T (normalised here over its 4H values)
    c_prev    (B, H)
    weight_h  (4H,) gain of LN(gates_h);  weight_c, bias_c (H,) gain and bias of LN(c)
    All in one dtype (float32 / float16 / bfloat16 / float64) and on one device.

    Returns (h, c), each (B, H): c = f c_prev + i g, h = o tanh(LN(c) weight_c + bias_c) with
    i, f, g, o from gates_x + LN(gates_h) weight_h. Differentiable with respect to every tensor.
    """
    check_cell_inputs(gates_x, c_prev, "gates_x")
    args.check_tensor("gates_h", gates_h, like=gates_x, like_name="gates_x")
    G, H = gates_x.shape[1], c_prev.shape[1]
    for name, t, n in (("weight_h", weight_h, G), ("weight_c", weight_c, H), ("bias_c", bias_c, H)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if tuple(t.shape) != (n,):
            raise ValueError(f"{name} must have shape ({n},) for gates_x of shape {tuple(gates_x.shape)}, "
                             f"got {tuple(t.shape)}")
        if t.dtype != gates_x.dtype:
            raise TypeError(f"{name} must have gates_x's dtype ({gates_x.dtype}), got {t.dtype}")
        if t.device != gates_x.device:
            raise ValueError(f"{name} must be on gates_x's device {gates_x.device}, got {t.device}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    return ln_lstm_cell_op(gates_x, gates_h, c_prev, weight_h, weight_c, bias_c, float(eps))
