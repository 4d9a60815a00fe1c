"""Drop-in LSTM layers over the fused cell kernels (genkernels/ops/lstm_cell.py,
genkernels/ops/layernorm_lstm_cell.py).

`LSTM` takes torch.nn.LSTM's constructor and forward signature and parameter names, so it loads a
torch.nn.LSTM state dict (`weight_ih_l0`, `bias_hh_l1_reverse`, ...), and adds

  layer_norm=True          the LayerNorm-LSTM of Ba et al. 2016: gates = LN(x W_ih^T) w_x + b +
                           LN(h W_hh^T) w_h, h = o tanh(LN(c) w_c + b_c) (c itself is carried);
                           extra parameters ln_weight_ih_l*, ln_weight_hh_l*, ln_weight_c_l*,
                           ln_bias_c_l* (load a torch state dict with strict=False)
  recurrent_dropout=p      variational dropout on the recurrent input h_{t-1} (Gal & Ghahramani
                           2016): one Philox mask per sequence, layer and direction, the same at
                           every step, drawn inside the cell kernel; none in eval mode

A layer's sequence runs as: the input projection for all T steps in one matmul (and, LayerNorm,
one batched layer norm), then a loop of one matmul and one fused cell kernel per step. On CPU
the step matmul goes through a oneDNN weight prepacked once per sequence (about 2x aten's addmm
at small batch; see _RecurrentMatmul), elsewhere through torch.addmm into a preallocated
(T, B, 4H) buffer. Its backward is one autograd node per layer and direction: a reverse loop of
one fused cell-backward kernel and one matmul (W_hh^T prepacked on CPU) per step, then the
weight gradients as single (T B)-long matmuls. Tensors the kernels cannot take (float64, or the
"torch" backend) run the same recurrence with the pure-PyTorch reference cells under autograd.
Packed sequences and proj_size are not supported (a clear error).
"""
from __future__ import annotations

import importlib
import math
import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F

# the modules (genkernels.ops binds the names lstm_cell / layernorm_lstm_cell to the functions)
_cell = importlib.import_module("genkernels.ops.lstm_cell")
_ln = importlib.import_module("genkernels.ops.layernorm_lstm_cell")


# ---- the recurrent matmul ---------------------------------------------------------------------------
# On CPU the per-step matmul h_{t-1} W_hh^T has a small M (the batch) and the same weight at every step:
# oneDNN's linear with the weight reordered once into its blocked layout ("prepacked", what inductor's
# CPU freezing pass uses) runs it about 2x faster than aten's addmm at hidden >= 512 (measured on this
# package's 2-core CI machine: 64 steps at B 32, H 1024: 1.9 ms vs 3.6 ms per step). The reorder costs
# about as much as a few steps, so a sequence packs once (forward: W_hh, backward: W_hh^T) and
# step-by-step generation reuses the packed weight while the parameter is unchanged (same tensor object,
# same version counter: an optimizer step or load_state_dict repacks it).
_MKLDNN_LINEAR = (hasattr(torch.ops, "mkldnn") and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
                  and hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.backends.mkldnn.is_available())
_PACK_MIN_STEPS = 8  # a sequence this long packs; shorter ones use a packed weight only when cached
_PACK_MIN_HIDDEN = 256
_pack_cache: dict = {}  # id(weight) -> (weakref(weight), version, transpose, batch, packed)
_PACK_CACHE_SIZE = 16


def _packable(w: torch.Tensor, B: int) -> bool:
    if not (_MKLDNN_LINEAR and w.device.type == "cpu" and torch.backends.mkldnn.enabled):
        return False
    # below hidden 256 the matmul is too small to gain, and oneDNN splits it over the threads where
    # aten's addmm runs it on one: on a loaded machine the split waits on descheduled threads
    if min(w.shape) < _PACK_MIN_HIDDEN:
        return False
    if w.dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return w.dtype == torch.float32


class _RecurrentMatmul:
    """x (B, K) -> other + x @ W^T (or x @ W with transpose=True), W (N, K): through a prepacked
    oneDNN weight where that pays (see above), else torch.addmm / torch.mm."""

    __slots__ = ("w", "transpose", "packed")

    def __init__(self, w: torch.Tensor, B: int, steps: int, transpose: bool = False, reuse: bool = False):
        """steps: the matmuls this object will run; reuse: inference, where the packed weight is kept
        for later calls (step-by-step generation packs on its first step)."""
        self.w, self.transpose, self.packed = w, transpose, None
        if _packable(w, B):
            self.packed = _cached_pack(w, B, transpose, create=reuse or steps >= _PACK_MIN_STEPS)

    def __call__(self, x: torch.Tensor, other: torch.Tensor | None, out: torch.Tensor | None) -> torch.Tensor:
        """The result: `out` (B, N) when given and not packed; a new tensor from the packed path (the
        callers keep it, so nothing is copied), or when out is None."""
        if self.packed is not None:
            if other is None:
                return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")
            return torch.ops.mkldnn._linear_pointwise.binary(x, other, self.packed, None, "add")
        w = self.w if self.transpose else self.w.t()
        if out is None:
            return torch.mm(x, w) if other is None else torch.addmm(other, x, w)
        if other is None:
            return torch.mm(x, w, out=out)
        return torch.addmm(other, x, w, out=out)


def _cached_pack(w: torch.Tensor, B: int, transpose: bool, create: bool):
    key = (id(w), transpose)
    entry = _pack_cache.get(key)
    if entry is not None:
        ref, version, batch, packed = entry
        if ref() is w and version == w._version and batch == B:
            return packed
    if not create:
        return None
    weight = (w.t() if transpose else w).detach().contiguous()
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, B)
    while len(_pack_cache) >= _PACK_CACHE_SIZE:
        _pack_cache.pop(next(iter(_pack_cache)))
    _pack_cache[key] = (weakref.ref(w), w._version, B, packed)
    return packed


# ---- the sequence recurrence ---------------------------------------------------------------------
class _Config:
    __slots__ = ("layer_norm", "eps", "p", "seed", "offset", "backend")

    def __init__(self, layer_norm, eps, p, seed, offset, backend):
        self.layer_norm, self.eps, self.p = layer_norm, eps, p
        self.seed, self.offset, self.backend = seed, offset, backend


def _mask(cfg, B, H, device):
    like = torch.empty(B, H, dtype=torch.float32, device=device)
    return _cell._lstm_dropout_mask_kernel(like, cfg.p, cfg.seed, cfg.offset)


def _sequence_forward(xg, w_hh, h0, c0, ln, cfg, reuse=False):
    """Runs the recurrence with the kernels (no autograd). Returns (hs, cs, hr, gates, h0r, mask):
    hs, cs (T, B, H) every step's h and c; hr the recurrent inputs h * mask (hs itself without
    dropout); gates T tensors (B, 4H): the gates (plain) or gates_h = h_rec W_hh^T (LayerNorm), rows of
    one (T, B, 4H) buffer or, from the prepacked matmul, its T results as they came."""
    T, B, G = xg.shape
    H = G // 4
    hs = torch.empty(T, B, H, dtype=xg.dtype, device=xg.device)
    cs = torch.empty_like(hs)
    drop = cfg.p > 0
    mask = _mask(cfg, B, H, xg.device) if drop else None
    hr = torch.empty_like(hs) if drop else hs
    h0r = (h0.float() * mask).to(xg.dtype) if drop else h0
    matmul = _RecurrentMatmul(w_hh, B, T, reuse=reuse)
    buf = None if matmul.packed is not None else torch.empty(T, B, G, dtype=xg.dtype, device=xg.device)
    gates = []
    h_prev, c_prev = h0r, c0
    p, seed, offset, backend = cfg.p, cfg.seed, cfg.offset, cfg.backend
    if cfg.layer_norm:
        w_h, w_c, b_c = ln
        for t in range(T):
            g, h_t, c_t = matmul(h_prev, None, None if buf is None else buf[t]), hs[t], cs[t]
            gates.append(g)
            _ln.launch_forward(backend, xg[t], g, c_prev, w_h, w_c, b_c, h_t, c_t, cfg.eps,
                               hr[t] if drop else None, p, seed, offset)
            h_prev, c_prev = (hr[t] if drop else h_t), c_t
    else:
        for t in range(T):
            g, h_t, c_t = matmul(h_prev, xg[t], None if buf is None else buf[t]), hs[t], cs[t]
            gates.append(g)
            _cell.launch_forward(backend, g, c_prev, h_t, c_t, hr[t] if drop else None, p, seed, offset)
            h_prev, c_prev = (hr[t] if drop else h_t), c_t
    return hs, cs, hr, gates, h0r, mask


class _LSTMSequence(torch.autograd.Function):
    """One layer and direction: (xg, w_hh, h0, c0, ln_w_h, ln_w_c, ln_b_c) -> (hs, h_n, c_n)."""

    @staticmethod
    def forward(ctx, xg, w_hh, h0, c0, ln_w_h, ln_w_c, ln_b_c, cfg):
        ln = (ln_w_h, ln_w_c, ln_b_c) if cfg.layer_norm else None
        hs, cs, hr, gates, h0r, mask = _sequence_forward(xg, w_hh, h0, c0, ln, cfg)
        ctx.cfg, ctx.gates = cfg, gates  # made here, never seen by the caller: no version check needed
        ctx.save_for_backward(xg if cfg.layer_norm else None, w_hh, c0, cs, hr, h0r, mask,
                              *(ln if ln else ()))
        return hs, hs[-1].clone(), cs[-1].clone()

    @staticmethod
    def backward(ctx, d_hs, d_hn, d_cn):
        cfg = ctx.cfg
        xg, w_hh, c0, cs, hr, h0r, mask, *ln = ctx.saved_tensors
        buf, ctx.gates = ctx.gates, None
        T, (B, G) = len(buf), buf[0].shape
        H = G // 4
        dt, dev = buf[0].dtype, buf[0].device
        drop = cfg.p > 0
        d_hs = torch.zeros(T, B, H, dtype=dt, device=dev) if d_hs is None else d_hs.to(dt).contiguous()
        dc = torch.zeros(B, H, dtype=dt, device=dev)
        if d_cn is not None:
            dc.copy_(d_cn)
        dc_next = torch.empty_like(dc)
        dh_buf = torch.empty_like(dc)
        zero = torch.zeros_like(dc) if drop else None
        d_gx = torch.empty(T, B, G, dtype=dt, device=dev)  # grad of gates (plain) / gates_x (LayerNorm)
        d_gh = torch.empty_like(d_gx) if cfg.layer_norm else d_gx
        if cfg.layer_norm:
            f32 = dict(dtype=torch.float32, device=dev)
            terms_h = torch.empty(T, B, G, **f32)  # per-row fp32 terms of the LN parameters' gradients
            terms_c, terms_b = torch.empty(T, B, H, **f32), torch.empty(T, B, H, **f32)
            w_h, w_c, b_c = ln
        p, seed, offset, backend = cfg.p, cfg.seed, cfg.offset, cfg.backend
        matmul = _RecurrentMatmul(w_hh, B, T, transpose=True)  # d_gates (B, 4H) -> d_gates @ W_hh (B, H)
        for t in range(T - 1, -1, -1):
            base = d_hs[t]
            if t == T - 1 and d_hn is not None:
                base = base + d_hn.to(dt)
            if t == T - 1:
                grad_h, grad_h_rec = base, zero
            elif drop:
                grad_h, grad_h_rec = base, matmul(d_gh[t + 1], None, dh_buf)
            else:
                grad_h, grad_h_rec = matmul(d_gh[t + 1], base, dh_buf), None
            c_prev = cs[t - 1] if t else c0
            if cfg.layer_norm:
                _ln.launch_backward(backend, grad_h, dc, xg[t], buf[t], c_prev, w_h, w_c, b_c, d_gx[t], d_gh[t],
                                    dc_next, terms_h[t], terms_c[t], terms_b[t], cfg.eps, grad_h_rec, p, seed, offset)
            else:
                _cell.launch_backward(backend, grad_h, dc, buf[t], c_prev, d_gx[t], dc_next, grad_h_rec, p, seed,
                                      offset)
            dc, dc_next = dc_next, dc
        need = ctx.needs_input_grad
        d_w = d_h0 = None
        if need[1]:
            d_w = d_gh[0].t() @ h0r
            if T > 1:
                d_w = torch.addmm(d_w, d_gh[1:].reshape(-1, G).t(), hr[:-1].reshape(-1, H))
        if need[2]:
            d_h0 = d_gh[0] @ w_hh
            if drop:
                d_h0 = (d_h0.float() * mask).to(dt)
        grads_ln = (None, None, None)
        if cfg.layer_norm:
            grads_ln = tuple(x.sum((0, 1)).to(dt) if need[4 + i] else None
                             for i, x in enumerate((terms_h, terms_c, terms_b)))
        return (d_gx if need[0] else None), d_w, d_h0, (dc if need[3] else None), *grads_ln, None


def _reference_sequence(xg, w_hh, h0, c0, ln, cfg):
    """The same recurrence with the pure-PyTorch cells (autograd records it)."""
    T, B, G = xg.shape
    H = G // 4
    mask = None
    if cfg.p > 0:
        mask = _cell.lstm_dropout_mask_ref(B, H, cfg.p, cfg.seed, cfg.offset, device=xg.device, dtype=xg.dtype)
    h, c, outs = h0, c0, []
    for t in range(T):
        hr = h * mask if mask is not None else h
        if cfg.layer_norm:
            h, c = _ln.layernorm_lstm_cell_ref(xg[t], hr @ w_hh.t(), c, *ln, cfg.eps)
        else:
            h, c = _cell.lstm_cell_ref(torch.addmm(xg[t], hr, w_hh.t()), c)
        outs.append(h)
    return torch.stack(outs), h, c


def lstm_sequence(xg, w_hh, h0, c0, ln=None, *, eps=1e-5, p=0.0, seed=0, offset=0):
    """One LSTM layer and direction over a whole sequence from its input-side gates.

    xg      (T, B, 4H) input-side pre-activations: x W_ih^T + b_ih + b_hh (plain) or
            LN(x W_ih^T) w_x + b (LayerNorm; `ln` given)
    w_hh    (4H, H);  h0, c0 (B, H)
    ln      None, or (weight_h (4H,), weight_c (H,), bias_c (H,)) for the LayerNorm cell
    p, seed, offset   recurrent dropout on h_{t-1} (the same mask at every step); p = 0: none

    Returns (hs (T, B, H), h_T, c_T), differentiable with respect to every tensor.
    """
    backend = _cell.backend_for(xg)
    cfg = _Config(ln is not None, float(eps), float(p), int(seed), int(offset), backend)
    if backend == "torch":
        return _reference_sequence(xg, w_hh, h0, c0, ln, cfg)
    xg, w_hh, h0, c0 = xg.contiguous(), w_hh.contiguous(), h0.contiguous(), c0.contiguous()
    ln_args = tuple(t.contiguous() for t in ln) if ln is not None else (None, None, None)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (xg, w_hh, h0, c0, *ln_args)):
        return _LSTMSequence.apply(xg, w_hh, h0, c0, *ln_args, cfg)
    hs, cs, *_ = _sequence_forward(xg, w_hh, h0, c0, ln, cfg, reuse=True)
    return hs, hs[-1], cs[-1]


# ---- modules -----------------------------------------------------------------------------------------
def _check_sizes(input_size, hidden_size):
    for name, v in (("input_size", input_size), ("hidden_size", hidden_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


class LSTM(nn.Module):
    """torch.nn.LSTM over the fused cell kernels, plus layer_norm=True and recurrent_dropout=p.

    forward(input, (h_0, c_0)=None) -> output, (h_n, c_n), shapes as torch.nn.LSTM's:
    input (T, B, input_size) ((B, T, input_size) with batch_first; (T, input_size) unbatched),
    h_0 / c_0 / h_n / c_n (num_layers * num_directions, B, hidden_size), output (T, B, D * hidden_size).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, layer_norm: bool = False,
                 recurrent_dropout: float = 0.0, eps: float = 1e-5):
        super().__init__()
        _check_sizes(input_size, hidden_size)
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        _cell.check_dropout(recurrent_dropout, "recurrent_dropout")
        if proj_size:
            raise ValueError(f"proj_size is not supported by genkernels.nn.LSTM (got {proj_size!r}); use "
                             "torch.nn.LSTM for projected LSTMs")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bool(bias), bool(batch_first), float(dropout)
        self.bidirectional, self.proj_size = bool(bidirectional), 0
        self.layer_norm, self.recurrent_dropout, self.eps = bool(layer_norm), float(recurrent_dropout), float(eps)
        kw = dict(device=device, dtype=dtype)
        H, G = hidden_size, 4 * hidden_size
        for layer in range(num_layers):
            for sfx in self._suffixes():
                in_size = input_size if layer == 0 else H * self.num_directions
                self.register_parameter(f"weight_ih_l{layer}{sfx}", nn.Parameter(torch.empty(G, in_size, **kw)))
                self.register_parameter(f"weight_hh_l{layer}{sfx}", nn.Parameter(torch.empty(G, H, **kw)))
                if bias:
                    self.register_parameter(f"bias_ih_l{layer}{sfx}", nn.Parameter(torch.empty(G, **kw)))
                    self.register_parameter(f"bias_hh_l{layer}{sfx}", nn.Parameter(torch.empty(G, **kw)))
        if self.layer_norm:
            for layer in range(num_layers):
                for sfx in self._suffixes():
                    self.register_parameter(f"ln_weight_ih_l{layer}{sfx}", nn.Parameter(torch.empty(G, **kw)))
                    self.register_parameter(f"ln_weight_hh_l{layer}{sfx}", nn.Parameter(torch.empty(G, **kw)))
                    self.register_parameter(f"ln_weight_c_l{layer}{sfx}", nn.Parameter(torch.empty(H, **kw)))
                    self.register_parameter(f"ln_bias_c_l{layer}{sfx}", nn.Parameter(torch.empty(H, **kw)))
        self.reset_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _suffixes(self):
        return ("", "_reverse") if self.bidirectional else ("",)

    def reset_parameters(self) -> None:
        k = 1.0 / math.sqrt(self.hidden_size)
        for name, p in self.named_parameters():
            if name.startswith("ln_bias"):
                nn.init.zeros_(p)
            elif name.startswith("ln_"):
                nn.init.ones_(p)
            else:
                nn.init.uniform_(p, -k, k)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.layer_norm:
            s += ", layer_norm=True"
        if self.recurrent_dropout:
            s += f", recurrent_dropout={self.recurrent_dropout}"
        return s

    def _input_gates(self, x, layer, sfx):
        w_ih = getattr(self, f"weight_ih_l{layer}{sfx}")
        b = None
        if self.bias:
            b = getattr(self, f"bias_ih_l{layer}{sfx}") + getattr(self, f"bias_hh_l{layer}{sfx}")
        if self.layer_norm:
            return F.layer_norm(F.linear(x, w_ih), (w_ih.shape[0],), getattr(self, f"ln_weight_ih_l{layer}{sfx}"),
                                b, self.eps)
        return F.linear(x, w_ih, b)

    def forward(self, input, hx=None):
        if isinstance(input, nn.utils.rnn.PackedSequence):
            raise TypeError("genkernels.nn.LSTM does not take packed sequences; pass the padded (T, B, input_size) "
                            "tensor (and mask the padded steps of the output yourself)")
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise ValueError(f"input must be (T, B, input_size), (B, T, input_size) with batch_first, or unbatched "
                             f"(T, input_size), got shape {tuple(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"input must have input_size={self.input_size} features in its last dim, got shape "
                             f"{tuple(input.shape)}")
        batched = input.dim() == 3
        x = input if batched else input.unsqueeze(1)
        if batched and self.batch_first:
            x = x.transpose(0, 1)
        T, B = x.shape[0], x.shape[1]
        if T == 0:
            raise ValueError(f"input must have at least one time step, got shape {tuple(input.shape)}")
        LD, H = self.num_layers * self.num_directions, self.hidden_size
        if hx is None:
            h0 = c0 = torch.zeros(LD, B, H, dtype=x.dtype, device=x.device)
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError("hx must be a tuple (h_0, c_0)")
            h0, c0 = hx
            expected = (LD, B, H) if batched else (LD, H)
            for name, t in (("h_0", h0), ("c_0", c0)):
                if not isinstance(t, torch.Tensor):
                    raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
                if tuple(t.shape) != expected:
                    raise ValueError(f"{name} must have shape {expected} (num_layers * num_directions, batch, "
                                     f"hidden_size), got {tuple(t.shape)}")
                if t.dtype != x.dtype or t.device != x.device:
                    raise ValueError(f"{name} must have input's dtype {x.dtype} and device {x.device}, got "
                                     f"{t.dtype} on {t.device}")
            if not batched:
                h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
        p = self.recurrent_dropout if self.training else 0.0
        seed = int(torch.randint(0, 2**62, (1,)).item()) if p > 0 else 0
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outs = []
            for d, sfx in enumerate(self._suffixes()):
                idx = layer * self.num_directions + d
                xin = x if d == 0 else x.flip(0)
                xg = self._input_gates(xin, layer, sfx)
                ln = None
                if self.layer_norm:
                    ln = tuple(getattr(self, f"{n}_l{layer}{sfx}")
                               for n in ("ln_weight_hh", "ln_weight_c", "ln_bias_c"))
                hs, h, c = lstm_sequence(xg, getattr(self, f"weight_hh_l{layer}{sfx}"), h0[idx], c0[idx], ln,
                                         eps=self.eps, p=p, seed=seed, offset=idx)
                outs.append(hs if d == 0 else hs.flip(0))
                h_n.append(h)
                c_n.append(c)
            x = outs[0] if len(outs) == 1 else torch.cat(outs, -1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        h_n, c_n = torch.stack(h_n), torch.stack(c_n)
        if not batched:
            return x.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        if self.batch_first:
            x = x.transpose(0, 1)
        return x, (h_n, c_n)


class LSTMCell(nn.Module):
    """torch.nn.LSTMCell over the fused cell (same parameter names: loads its state dict), plus
    layer_norm=True (the LayerNorm-LSTM cell, extra parameters ln_weight_ih, ln_weight_hh,
    ln_weight_c, ln_bias_c). forward(input (B, input_size) or (input_size,), (h, c)=None) -> (h', c')."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None, *,
                 layer_norm: bool = False, eps: float = 1e-5):
        super().__init__()
        _check_sizes(input_size, hidden_size)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bool(bias)
        self.layer_norm, self.eps = bool(layer_norm), float(eps)
        kw = dict(device=device, dtype=dtype)
        G = 4 * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(G, hidden_size, **kw))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(G, **kw))
            self.bias_hh = nn.Parameter(torch.empty(G, **kw))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        if layer_norm:
            self.ln_weight_ih = nn.Parameter(torch.ones(G, **kw))
            self.ln_weight_hh = nn.Parameter(torch.ones(G, **kw))
            self.ln_weight_c = nn.Parameter(torch.ones(hidden_size, **kw))
            self.ln_bias_c = nn.Parameter(torch.zeros(hidden_size, **kw))
        k = 1.0 / math.sqrt(hidden_size)
        for w in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            if w is not None:
                nn.init.uniform_(w, -k, k)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")
                + (", layer_norm=True" if self.layer_norm else ""))

    def forward(self, input, hx=None):
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
        if input.dim() not in (1, 2) or input.shape[-1] != self.input_size:
            raise ValueError(f"input must be (B, {self.input_size}) or ({self.input_size},), got shape "
                             f"{tuple(input.shape)}")
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        B, H = x.shape[0], self.hidden_size
        if hx is None:
            h = c = torch.zeros(B, H, dtype=x.dtype, device=x.device)
        else:
            h, c = hx
            for name, t in (("h", h), ("c", c)):
                if not isinstance(t, torch.Tensor) or tuple(t.shape) != ((B, H) if batched else (H,)):
                    raise ValueError(f"hx's {name} must be a tensor of shape {(B, H) if batched else (H,)}, got "
                                     f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
            if not batched:
                h, c = h.unsqueeze(0), c.unsqueeze(0)
        if self.layer_norm:
            b = self.bias_ih + self.bias_hh if self.bias else None
            gx = F.layer_norm(F.linear(x, self.weight_ih), (4 * H,), self.ln_weight_ih, b, self.eps)
            h1, c1 = _ln.ln_lstm_cell_op(gx, h @ self.weight_hh.t(), c, self.ln_weight_hh, self.ln_weight_c,
                                         self.ln_bias_c, self.eps)
        else:
            if not torch.is_grad_enabled() and _cell.backend_for(x) == "cpu" and h.dtype == self.weight_hh.dtype:
                # inference (step-by-step generation): W_hh prepacked once and reused (see _RecurrentMatmul)
                b = self.bias_ih + self.bias_hh if self.bias else None
                gates = _RecurrentMatmul(self.weight_hh, B, 1, reuse=True)(h.contiguous(),
                                                                            F.linear(x, self.weight_ih, b), None)
            else:
                gates = torch.addmm(F.linear(x, self.weight_ih, self.bias_ih), h, self.weight_hh.t())
                if self.bias:
                    gates = gates + self.bias_hh
            _cell.check_cell_inputs(gates, c)
            h1, c1 = _cell.lstm_cell_op(gates, c)
        if not batched:
            return h1.squeeze(0), c1.squeeze(0)
        return h1, c1
