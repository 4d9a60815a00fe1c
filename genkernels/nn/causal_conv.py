"""Causal dilated 1D convolution and the WaveNet residual layer (van den Oord et al. 2016), each
with an incremental `step` for sample-by-sample generation (Paine et al. 2016, "Fast WaveNet").

    CausalConv1d:  y[t] = b + sum_{j=0}^{k-1} W[:, :, j] x[t - (k - 1 - j) d]     (x[s < 0] = 0)

so y[t] sees x[t - (k-1) d .. t] and nothing later. `forward` runs genkernels.ops.causal_conv1d,
the Triton kernel (WaveNetLayer: the gate and the conditioning bias fused), where the backend is
"triton" (CUDA tensors), and a plain conv1d on the input left-padded by (k - 1) d elsewhere; the
module is an nn.Conv1d (padding 0) and loads an nn.Conv1d state dict.

Incremental generation. A naive sampler recomputes the whole network over the receptive field
for every new sample: O(receptive field) work per sample. The taps a causal conv needs at time t
are inputs it has already seen, so each conv keeps its last (k - 1) d inputs in a ring buffer
(`RingBuffer`) and `step(x_t, buffer)` computes y[t] from x_t and k - 1 buffered taps: O(layers)
work per sample. The buffers start at zero, exactly the zero left-padding of `forward`, so
stepping through a sequence gives forward's outputs (to float rounding).

`ClockedRingBuffer` is the same ring addressed by a step counter held on the device (a
`StepClock` shared by the network's buffers) instead of a Python-side head: every step then
launches the same kernels on the same addresses, which is what a CUDA graph captures and replays
(genkernels.models.wavenet's generate).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genkernels.ops.causal_conv1d import TRITON_DTYPES, _backend_for, causal_conv1d
from genkernels.ops.gated_activation import gated_activation

__all__ = ["CausalConv1d", "WaveNetLayer", "RingBuffer", "ClockedRingBuffer", "StepClock", "WaveNetLayerState",
           "receptive_field"]


def _use_op(x: torch.Tensor) -> bool:
    """genkernels.ops.causal_conv1d where its backend is Triton (CUDA tensors, or forced under the
    interpreter) and takes x's dtype; elsewhere (float64 too) conv1d on the left-padded input, the
    op's reference, without the op's argument checks (the module has checked its input)."""
    return x.dtype in TRITON_DTYPES and _backend_for(x.device.type) == "triton"


def _gate(x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    """tanh(a + ca) * sigmoid(b + cb) over the two channel halves of x (N, 2C, ...)."""
    return gated_activation(x, cond, dim=1)


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


class RingBuffer:
    """The last `length` inputs of a causal conv, time-major (length, N, C).

    Slot `head` holds the oldest input x[t - length] and is where x[t] goes after step t, so
    x[t - lag] (1 <= lag <= length) sits in slot (head - lag) mod length. Starts at zero: the
    zero left-padding of the full convolution.
    """

    def __init__(self, length: int, batch: int, channels: int, *, device=None, dtype=None):
        self.data = torch.zeros(length, batch, channels, device=device, dtype=dtype)  # (L, N, C)
        self.length = length
        self.head = 0

    def past(self, lag: int) -> torch.Tensor:
        """x[t - lag], (N, C), a view into the buffer."""
        return self.data[(self.head - lag) % self.length]

    def push(self, x_t: torch.Tensor) -> None:
        """Store x[t] (N, C) over the oldest entry, which no later step needs."""
        self.data[self.head].copy_(x_t)
        self.head = (self.head + 1) % self.length


class StepClock:
    """The step counter t of a network's ClockedRingBuffers, a 0-d int64 tensor on the device, and
    the ring slots every buffer reads at t, computed for all of them at once into one tensor (the
    buffers keep views of their part).

    Per step: `tick()` (slots at t, two kernels for the whole network), the buffers' steps, then
    `advance()` (t += 1, on the device). Nothing on the host changes between steps. Register every
    buffer before the first tick.
    """

    def __init__(self, device=None):
        self.t = torch.zeros((), dtype=torch.long, device=device)
        self._lags, self._lengths = [], []
        self._table = None
        self.slots = None  # (taps of every buffer,) int64, allocated at the first tick()

    def register(self, lags: list[int], length: int) -> slice:
        """Where a buffer's taps sit in `slots`."""
        if self._table is not None:
            raise RuntimeError("StepClock.register: every buffer must be registered before the first tick()")
        begin = len(self._lags)
        self._lags += lags
        self._lengths += [length] * len(lags)
        return slice(begin, len(self._lags))

    def tick(self) -> None:
        """slots[i] = (t - lag_i) mod length_i: where x[t - lag_i] of tap i's buffer sits."""
        if self._table is None:
            self._table = torch.tensor([self._lags, self._lengths], dtype=torch.long, device=self.t.device)
            self.slots = torch.empty(len(self._lags), dtype=torch.long, device=self.t.device)
        torch.remainder(self.t - self._table[0], self._table[1], out=self.slots)

    def advance(self) -> None:
        self.t.add_(1)


class ClockedRingBuffer:
    """A causal conv's last `length` = (k - 1) d inputs, (length, N, C), addressed by a StepClock
    instead of a Python-side head.

    x[t - lag] sits in slot (t - lag) mod length. `taps()` gathers the k - 1 past taps
    x[t - (k-1) d], ..., x[t - d] at the slots the clock computed; `push(x_t)` then writes x[t]
    over the oldest, x[t - (k-1) d], whose slot (t - length) mod length = t mod length is the
    first of them. No Python-side state changes between steps, so a CUDA graph of a step replays
    correctly at every t. Starts at zero like RingBuffer.
    """

    def __init__(self, kernel_size: int, dilation: int, batch: int, channels: int, clock: StepClock, *,
                 dtype=None):
        self.length = (kernel_size - 1) * dilation
        self.data = torch.zeros(self.length, batch, channels, device=clock.t.device, dtype=dtype)  # (L, N, C)
        self.clock = clock
        self._taps = clock.register([(kernel_size - 1 - j) * dilation for j in range(kernel_size - 1)], self.length)
        self._read = self._write = None  # views of clock.slots (allocated at its first tick)

    def taps(self) -> torch.Tensor:
        """[x[t - (k-1) d], ..., x[t - d]] side by side, (N, (k - 1) C)."""
        if self._read is None:
            self._read = self.clock.slots[self._taps]
            self._write = self._read[:1]
        past = self.data.index_select(0, self._read)  # (k-1, N, C)
        return past[0] if past.shape[0] == 1 else past.transpose(0, 1).reshape(past.shape[1], -1)

    def push(self, x_t: torch.Tensor) -> None:
        """Store x[t] (N, C) in the oldest tap's slot (after taps())."""
        self.data.index_copy_(0, self._write, x_t.unsqueeze(0))


class CausalConv1d(nn.Conv1d):
    """Left-padded dilated 1D convolution: output t sees inputs t - (k-1) dilation .. t only.

    Constructor as nn.Conv1d (no padding / stride / groups: a causal conv keeps the length);
    `state_dict` is nn.Conv1d's ("weight" (out, in, k), "bias" (out,)).
    forward(x (N, in, T)) -> (N, out, T).  step(x_t (N, in), buffer) -> (N, out) for one time step.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1,
                 bias: bool = True, *, device=None, dtype=None):
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("kernel_size", kernel_size), ("dilation", dilation)):
            _check_positive_int(name, value)
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation, padding=0, bias=bias,
                         device=device, dtype=dtype)

    @property
    def history(self) -> int:
        """Past inputs an output needs besides the current one: (k - 1) * dilation."""
        return (self.kernel_size[0] - 1) * self.dilation[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be (N, {self.in_channels}, T), got {tuple(x.shape)}")
        if _use_op(x):
            return causal_conv1d(x, self.weight, self.bias, self.dilation[0])  # (N, out, T)
        return super().forward(F.pad(x, (self.history, 0)))  # (N, out, T)

    # -- incremental ----------------------------------------------------------------------------
    def init_state(self, batch: int, *, device=None, dtype=None,
                   clock: StepClock | None = None) -> RingBuffer | ClockedRingBuffer | None:
        """An empty (zero) ring buffer for `step`; None when the kernel has no past taps. With
        `clock`: a ClockedRingBuffer on the clock's device."""
        device = self.weight.device if device is None else device
        dtype = self.weight.dtype if dtype is None else dtype
        if not self.history:
            return None
        if clock is not None:
            return ClockedRingBuffer(self.kernel_size[0], self.dilation[0], batch, self.in_channels, clock,
                                     dtype=dtype)
        return RingBuffer(self.history, batch, self.in_channels, device=device, dtype=dtype)

    def step_weight(self) -> torch.Tensor:
        """The weight as one matrix (k * in, out) over the taps [x[t-(k-1)d], ..., x[t]] concatenated
        in time order (what `step` multiplies; prepare it once per generation)."""
        out_channels, in_channels, k = self.weight.shape
        return self.weight.permute(2, 1, 0).reshape(k * in_channels, out_channels)

    def step(self, x_t: torch.Tensor, buffer: RingBuffer | ClockedRingBuffer | None,
             weight: torch.Tensor | None = None) -> torch.Tensor:
        """y[t] (N, out) from x[t] (N, in) and the buffered past; pushes x[t] into the buffer.

        weight: `step_weight()` prepared once (computed here when None).
        """
        k, d = self.kernel_size[0], self.dilation[0]
        weight = self.step_weight() if weight is None else weight
        if k == 1:
            stacked = x_t
        elif isinstance(buffer, ClockedRingBuffer):
            stacked = torch.cat([buffer.taps(), x_t], dim=1)  # (N, k * in)
        else:
            stacked = torch.cat([buffer.past((k - 1 - j) * d) for j in range(k - 1)] + [x_t], dim=1)
        y_t = torch.addmm(self.bias, stacked, weight) if self.bias is not None else stacked @ weight
        if buffer is not None:
            buffer.push(x_t)
        return y_t


class WaveNetLayerState:
    """What `WaveNetLayer.step` keeps between samples: the dilated conv's ring buffer, its weights
    as matrices (prepared once per generation) and the per-sequence conditioning bias."""

    def __init__(self, buffer: RingBuffer | None, conv_weight: torch.Tensor, out_weight: torch.Tensor,
                 out_bias: torch.Tensor, cond_bias: torch.Tensor | None):
        self.buffer = buffer
        self.conv_weight = conv_weight  # (k * R, 2R)
        self.out_weight = out_weight    # (R, R + S): residual and skip 1x1 convs side by side
        self.out_bias = out_bias        # (R + S,)
        self.cond_bias = cond_bias      # (N, 2R) or None


class WaveNetLayer(nn.Module):
    """One WaveNet residual block:

        z = tanh(W_f * x + V_f c) * sigmoid(W_g * x + V_g c)     (* dilated causal conv, c global)
        residual_out = x + W_res z,   skip = W_skip z            (1x1 convs)

    residual_channels R, skip_channels S; the dilated conv maps R -> 2R (filter and gate halves,
    gated by genkernels.ops.gated_activation, or in the epilogue of genkernels.ops.causal_conv1d's
    Triton kernel, with the conditioning bias, where the backend is Triton); cond_channels: size of
    a per-sequence conditioning vector c (N, cond_channels) mapped linearly to the 2R gate bias.
    `dropout` drops z in training. The two 1x1 convs run as one over [W_res; W_skip] (R + S
    outputs): z is read once; the parameters stay two nn.Conv1d ("residual", "skip") in the state dict.
    forward(x (N, R, T), cond=None) -> (residual_out (N, R, T), skip (N, S, T)).
    """

    def __init__(self, residual_channels: int, skip_channels: int, kernel_size: int = 2, dilation: int = 1,
                 cond_channels: int | None = None, dropout: float = 0.0):
        super().__init__()
        _check_positive_int("residual_channels", residual_channels)
        _check_positive_int("skip_channels", skip_channels)
        if cond_channels is not None:
            _check_positive_int("cond_channels", cond_channels)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.residual_channels, self.skip_channels = residual_channels, skip_channels
        self.conv = CausalConv1d(residual_channels, 2 * residual_channels, kernel_size, dilation)
        self.cond = nn.Linear(cond_channels, 2 * residual_channels, bias=False) if cond_channels else None
        self.residual = nn.Conv1d(residual_channels, residual_channels, 1)
        self.skip = nn.Conv1d(residual_channels, skip_channels, 1)
        self.dropout = nn.Dropout(dropout) if dropout else None

    def _cond_bias(self, cond: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if self.cond is None:
            if cond is not None:
                raise ValueError("cond given, but this layer was built without cond_channels")
            return None
        if cond is None or cond.ndim != 2 or cond.shape != (batch, self.cond.in_features):
            shape = None if cond is None else tuple(cond.shape)
            raise ValueError(f"cond must be ({batch}, {self.cond.in_features}), got {shape}")
        return self.cond(cond)  # (N, 2R)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 3 or x.shape[1] != self.residual_channels:
            raise ValueError(f"x must be (N, {self.residual_channels}, T), got {tuple(x.shape)}")
        cond_bias = self._cond_bias(cond, x.shape[0])  # (N, 2R) or None
        if _use_op(x):  # conv, conditioning bias and gate in one kernel
            z = causal_conv1d(x, self.conv.weight, self.conv.bias, self.conv.dilation[0], gated=True, cond=cond_bias)
        else:
            z = _gate(self.conv(x), cond_bias)  # (N, R, T)
        if self.dropout is not None:
            z = self.dropout(z)
        out = F.conv1d(z, torch.cat([self.residual.weight, self.skip.weight]),
                       torch.cat([self.residual.bias, self.skip.bias]))  # (N, R + S, T)
        return x + out[:, :self.residual_channels], out[:, self.residual_channels:]

    # -- incremental ----------------------------------------------------------------------------
    @torch.no_grad()
    def init_state(self, batch: int, cond: torch.Tensor | None = None,
                   clock: StepClock | None = None) -> WaveNetLayerState:
        """Zero history for `step`; snapshots the current weights (re-init after changing them).
        clock: a StepClock, for a ClockedRingBuffer (CUDA graphs)."""
        weight = lambda conv: conv.weight[:, :, 0].t()  # noqa: E731  (out, in, 1) -> (in, out)
        return WaveNetLayerState(
            self.conv.init_state(batch, clock=clock), self.conv.step_weight().contiguous(),
            torch.cat([weight(self.residual), weight(self.skip)], dim=1).contiguous(),
            torch.cat([self.residual.bias, self.skip.bias]), self._cond_bias(cond, batch))

    def step(self, x_t: torch.Tensor, state: WaveNetLayerState) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step: x[t] (N, R) -> (residual_out[t] (N, R), skip[t] (N, S)); O(1) in the
        dilation. Equals column t of `forward` on the whole sequence (eval mode: no dropout)."""
        h_t = self.conv.step(x_t, state.buffer, state.conv_weight)  # (N, 2R)
        z_t = _gate(h_t, state.cond_bias)  # (N, R)
        out = torch.addmm(state.out_bias, z_t, state.out_weight)  # (N, R + S)
        return x_t + out[:, :self.residual_channels], out[:, self.residual_channels:]


def receptive_field(kernel_size: int, dilations) -> int:
    """Inputs one output of a stack of causal convs sees: 1 + sum (k - 1) d."""
    return 1 + sum((kernel_size - 1) * d for d in dilations)

