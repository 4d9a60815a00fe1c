"""WaveNet (van den Oord et al. 2016): an autoregressive model of raw audio, one sample at a time.

    p(x) = prod_t p(x_t | x_<t),   x_t a mu-law code in 0..L-1 (L = 256: ITU-T G.711 companding)

Network: the previous codes are embedded (R channels), pass a stack of `WaveNetLayer`s (dilated
causal conv -> gated activation -> 1x1 residual and 1x1 skip; genkernels.nn.causal_conv) with
dilations 1, 2, ..., 2^(layers_per_cycle - 1), repeated `cycles` times, and the summed skips go
through ReLU -> 1x1 -> ReLU -> 1x1 to L logits: a softmax over the next code. The receptive
field is 1 + cycles (k - 1)(2^layers_per_cycle - 1) samples (511 for the defaults). Optional
global conditioning: a class embedding added to every layer's gate (num_classes > 0).

Position t of the network sees codes x_<t: its input sequence is [silence, x_0, ..., x_{T-2}]
(silence = the mu-law code of 0.0), so every code of a clip, the first too, is predicted.

Training cuts a random window from each clip: `train_length` scored positions after up to
receptive_field - 1 positions of real context (or the clip start), so the loss on a crop equals
the full clip's conditional NLL at those positions. Evaluation uses whole clips.

Generation (`generate`, `sample`) runs on the incremental path: each layer keeps a ring buffer of
its past inputs and one step costs O(layers), not O(receptive field) (Paine et al. 2016). A step
(every layer, the head and the draw) is one function, `_sample_step`, over buffers allocated once
per generation (`_SamplerState`: ring buffers addressed by a step counter on the device, the
uniforms of every draw, the codes): on a CPU it runs eagerly, on CUDA it is captured once as a
CUDA graph and replayed once per sample (`generate(cuda_graph=...)`): one launch per sample
instead of several per layer, the launch overhead that dominates a batch-1 step.
`generate(..., incremental=False)` is the naive sampler that recomputes the network over the
receptive field for every sample; given the same seed both draw the same codes: each step turns
the same uniform number u into a code by inverting the categorical CDF.

Output likelihood (config.likelihood): "categorical", the L-way softmax above (the paper), or
"logistic_mixture", a mixture of K = num_mixtures discretised logistics over the L levels (PixelCNN++,
Parallel WaveNet; genkernels.nn.likelihoods): the head emits 3K numbers per sample instead of L. The
input side (the code embedding) is the same for both. The mixture sampler uses two uniforms per step:
the first picks the component by inverting the CDF of softmax(mixture logits / T), the second draws
the logistic by its inverse CDF (scale times T), rounded and clamped to a level; T = 0 takes the
location of the most likely component. Deterministic in the uniforms, so both samplers agree.

Units: "loss" is the NLL in nats per sample (batch mean), "bits_per_sample" the same in bits;
`log_prob` is nats per clip. The uniform model scores log2 L bits per sample (8 for L = 256).
"""
from __future__ import annotations

import dataclasses
import functools
import io
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genkernels.models._validate import (check_bool, check_choice, check_int,
                                          check_real, class_labels, evaluation_count)
from genkernels.models.base import GenerativeModel
from genkernels.nn.causal_conv import StepClock, WaveNetLayer, WaveNetLayerState, receptive_field
from genkernels.nn.likelihoods import get_likelihood

LIKELIHOODS = ("categorical", "logistic_mixture")


def _spectrogram_db(clip, nfft: int = 256):
    """Power spectrogram in dB (frequencies, frames) of a clip in [-1, 1]: Hann frames of `nfft`
    (shorter for short clips), hop nfft / 2, 0 dB = a full-scale sine, floored at -100 dB (silence)."""
    import numpy as np

    nfft = max(2, min(nfft, 2 ** int(math.log2(max(len(clip), 2)))))
    hop = max(1, nfft // 2)
    window = np.hanning(nfft)
    starts = range(0, len(clip) - nfft + 1, hop)
    frames = np.stack([clip[i:i + nfft] * window for i in starts])  # (frames, nfft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 / (window.sum() / 2) ** 2
    return 10.0 * np.log10(np.maximum(power.T, 1e-10))


@dataclasses.dataclass
class WaveNetConfig:
    """residual_channels  R, width of the residual stream (and of the code embedding)
    skip_channels      S, width of the skip connections and of the output head
    kernel_size        taps of each dilated causal conv (2 in the paper)
    layers_per_cycle   layers per dilation cycle: dilations 1, 2, 4, ..., 2^(layers_per_cycle - 1)
    cycles             repetitions of the dilation cycle
    num_levels         mu-law levels L of the codes (256)
    likelihood         output head: "categorical" (an L-way softmax) or "logistic_mixture" (a mixture
                       of num_mixtures discretised logistics over the L levels, 3 numbers each)
    num_mixtures       K, components of the logistic mixture (used by "logistic_mixture" only)
    num_classes        0: unconditional; else global conditioning on a class label 0..num_classes-1
                       (the data must yield (audio, label) pairs)
    cond_dim           size of the class embedding (conditional only)
    dropout            dropout on each layer's gated activations during training
    sample_rate        Hz of the data (from the dataset); used for the figures and WAV files
    train_length       scored samples per training crop (0: whole clips)
    sample_length      samples `sample` generates by default
    """

    residual_channels: int = 32
    skip_channels: int = 64
    kernel_size: int = 2
    layers_per_cycle: int = 8
    cycles: int = 2
    num_levels: int = 256
    likelihood: str = "categorical"
    num_mixtures: int = 10
    num_classes: int = 0
    cond_dim: int = 16
    dropout: float = 0.0
    sample_rate: int = 8000
    train_length: int = 1024
    sample_length: int = 8000

    def __post_init__(self):
        for name, minimum in (("residual_channels", 1), ("skip_channels", 1), ("kernel_size", 1),
                              ("layers_per_cycle", 1), ("cycles", 1), ("num_levels", 2), ("num_mixtures", 1),
                              ("num_classes", 0), ("cond_dim", 1), ("sample_rate", 1), ("train_length", 0),
                              ("sample_length", 1)):
            setattr(self, name, check_int(f"WaveNetConfig.{name}", getattr(self, name), minimum))
        if self.layers_per_cycle > 24:
            raise ValueError(f"WaveNetConfig.layers_per_cycle must be <= 24 (dilation 2^23), "
                             f"got {self.layers_per_cycle}")
        self.likelihood = check_choice("WaveNetConfig.likelihood", self.likelihood, LIKELIHOODS)
        self.dropout = check_real("WaveNetConfig.dropout", self.dropout, 0.0)
        if self.dropout >= 1.0:
            raise ValueError(f"WaveNetConfig.dropout must be < 1, got {self.dropout}")

    @property
    def dilations(self) -> list[int]:
        return [2 ** i for _ in range(self.cycles) for i in range(self.layers_per_cycle)]

    @property
    def receptive_field(self) -> int:
        return receptive_field(self.kernel_size, self.dilations)


@dataclasses.dataclass
class _SamplerState:
    """Every tensor a generation step reads or writes, allocated once per `generate` call, so a step
    touches the same addresses at every t (what a CUDA graph replays)."""

    clock: StepClock                    # the step t (on the device) and the ring slots at t
    uniforms: torch.Tensor              # (length, N) float64, or (length, N, 2) for the mixture
    codes: torch.Tensor                 # (N, length) int64: code t written at step t
    previous: torch.Tensor              # (N,) int64: the input of step t (silence at t = 0)
    layers: list[WaveNetLayerState]     # ring buffers (on `clock`), weights as matrices, cond bias
    head: tuple[torch.Tensor, ...]      # hidden (S, S), (S,); out (S, P), (P,): the 1x1 convs as matrices
    temperature: float


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


class WaveNet(GenerativeModel):
    """WaveNet over mu-law codes; see the module docstring for the network, units and sampling."""

    name = "wavenet"
    config_class = WaveNetConfig
    default_data = "audio"
    data_kinds = ("audio",)
    # one clip is 8,000 samples: small batches of crops keep a step well under a second on a CPU
    train_defaults = {"steps": 300, "batch_size": 8, "lr": 3e-3, "warmup_steps": 20, "eval_every": 100,
                      "eval_max_items": 16, "num_samples": 4, "weight_decay": 0.0}
    metric_units = {"loss": "nats/sample", "bits_per_sample": "bits/sample",
                    "nll_bits_per_sample": "bits/sample", "uniform_bits_per_sample": "bits/sample"}

    def __init__(self, config: WaveNetConfig | None = None):
        super().__init__(config if config is not None else WaveNetConfig())
        c = self.config
        self.embed = nn.Embedding(c.num_levels, c.residual_channels)
        self.class_embed = nn.Embedding(c.num_classes, c.cond_dim) if c.num_classes else None
        self.layers = nn.ModuleList(
            WaveNetLayer(c.residual_channels, c.skip_channels, c.kernel_size, d,
                         cond_channels=c.cond_dim if c.num_classes else None, dropout=c.dropout)
            for d in c.dilations)
        self.head_hidden = nn.Conv1d(c.skip_channels, c.skip_channels, 1)
        # categorical: L logits per sample; mixture: 3K numbers (genkernels.nn.likelihoods layout)
        self.head = (get_likelihood("logistic_mixture", c.num_levels, c.num_mixtures)
                     if c.likelihood == "logistic_mixture" else None)
        self.head_out = nn.Conv1d(c.skip_channels, c.num_levels if self.head is None
                                  else self.head.params_per_channel, 1)

    @property
    def start_code(self) -> int:
        """The mu-law code of silence (0.0), the input before the first sample."""
        return self.config.num_levels // 2

    # -- data conversion ------------------------------------------------------------------------
    def _codes_and_labels(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(codes (N, T) int64, labels (N,) or None) from audio (N, T) in [-1, 1] or integer codes."""
        from genkernels.data.audio import mu_law_encode

        audio, labels = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        if not isinstance(audio, torch.Tensor) or audio.ndim != 2:
            shape = tuple(audio.shape) if isinstance(audio, torch.Tensor) else type(audio).__name__
            raise ValueError(f"audio must be a (N, T) tensor of samples or mu-law codes, got {shape}")
        if audio.is_floating_point():
            codes = mu_law_encode(audio, self.config.num_levels).to(audio.device)
        else:
            codes = audio.long()
            if codes.numel() and (codes.min() < 0 or codes.max() >= self.config.num_levels):
                raise ValueError(f"mu-law codes must be in 0..{self.config.num_levels - 1}")
        if self.config.num_classes and labels is None:
            raise ValueError(f"this WaveNet is conditioned on {self.config.num_classes} classes: the data "
                             f"must give (audio, label) pairs")
        return codes, (labels.long().to(codes.device) if self.config.num_classes else None)

    def _cond(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        return self.class_embed(labels) if self.class_embed is not None else None  # (N, cond_dim)

    def _shifted(self, codes: torch.Tensor) -> torch.Tensor:
        """Network inputs (N, T): [silence, x_0, ..., x_{T-2}]."""
        start = torch.full_like(codes[:, :1], self.start_code)
        return torch.cat([start, codes[:, :-1]], dim=1)

    # -- network ----------------------------------------------------------------------------------
    def network(self, inputs: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Output parameters (N, P, T) from input codes (N, T): P = L logits (categorical) or 3K mixture
        parameters (logistic_mixture); position t sees inputs[:, :t+1] only."""
        h = self.embed(inputs).transpose(1, 2)  # (N, R, T)
        skips = 0
        for layer in self.layers:
            h, skip = layer(h, cond)
            skips = skips + skip  # (N, S, T)
        return self.head_out(F.relu(self.head_hidden(F.relu(skips))))

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Parameters (N, P, T) of p(x_t | x_<t) for codes (N, T) (logits (N, L, T) if categorical)."""
        return self.network(self._shifted(codes), self._cond(labels))

    # -- training -------------------------------------------------------------------------------
    def _crop(self, inputs: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """A random window: (inputs with context, targets, scored length)."""
        length, total = self.config.train_length, codes.shape[1]
        if not self.training or not length or total <= length:
            return inputs, codes, total
        start = int(torch.randint(0, total - length + 1, ()))
        context_start = max(0, start - (self.config.receptive_field - 1))
        return inputs[:, context_start:start + length], codes[:, start:start + length], length

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """{"loss": NLL in nats/sample (batch mean), "bits_per_sample": the same in bits}."""
        codes, labels = self._codes_and_labels(batch)
        inputs, targets, length = self._crop(self._shifted(codes), codes)
        logits = self.network(inputs, self._cond(labels))[:, :, -length:]  # (N, P, length)
        if self.head is None:
            nll = F.cross_entropy(logits.float(), targets)
        else:
            nll = -self._mixture_log_prob(logits, targets).mean()
        return {"loss": nll, "bits_per_sample": nll.detach() / math.log(2)}

    def log_prob(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) per clip in nats, (N,), for audio (N, T) in [-1, 1] or mu-law codes."""
        codes, labels = self._codes_and_labels(x if labels is None else (x, labels))
        logits = self.forward(codes, labels)
        if self.head is not None:
            return self._mixture_log_prob(logits, codes).sum(dim=1)
        return -F.cross_entropy(logits.float(), codes, reduction="none").sum(dim=1)

    def _mixture_log_prob(self, params: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """log p(code) in nats, (N, T), from mixture parameters (N, 3K, T) (float32, or float64 for a
        float64 model)."""
        params = params if params.dtype == torch.float64 else params.float()
        return self.head.log_prob(params.unsqueeze(2), codes.unsqueeze(1)).squeeze(1)

    @torch.no_grad()
    def evaluate(self, dataset, *, max_items: int | None = None, batch_size: int = 8) -> dict[str, float]:
        """Held-out NLL in bits per sample over whole clips, beside the uniform model's log2 L."""
        count = evaluation_count(dataset, max_items, batch_size)
        device = next(self.parameters()).device
        total_nats, total_samples = 0.0, 0
        for begin in range(0, count, batch_size):
            items = [dataset[i] for i in range(begin, min(count, begin + batch_size))]
            if isinstance(items[0], (tuple, list)):
                batch = (torch.stack([a for a, _ in items]).to(device), torch.as_tensor([y for _, y in items]))
            else:
                batch = torch.stack(items).to(device)
            codes, labels = self._codes_and_labels(batch)
            total_nats -= self.log_prob(codes, labels).sum().item()
            total_samples += codes.numel()
        return {"nll_bits_per_sample": total_nats / total_samples / math.log(2),
                "uniform_bits_per_sample": math.log2(self.config.num_levels)}

    # -- generation -------------------------------------------------------------------------------
    def _draw(self, logits: torch.Tensor, u: torch.Tensor, temperature: float) -> torch.Tensor:
        """Codes (N,) from logits (N, L) and uniforms u (N,): the inverse CDF of softmax(logits / T)
        (argmax at temperature 0). Deterministic in u, so two samplers given the same u agree.
        Mixture: params (N, 3K) and u (N, 2), see _draw_mixture."""
        if self.head is not None:
            return self._draw_mixture(logits, u, temperature)
        if temperature == 0:
            return logits.argmax(dim=1)
        cdf = torch.softmax(logits.double() / temperature, dim=1).cumsum(dim=1)  # (N, L)
        return torch.searchsorted(cdf, u.unsqueeze(1)).squeeze(1).clamp_(max=self.config.num_levels - 1)

    def _draw_mixture(self, params: torch.Tensor, u: torch.Tensor, temperature: float) -> torch.Tensor:
        """Codes (N,) from mixture parameters (N, 3K) and uniforms u (N, 2): u[:, 0] picks the component
        by the inverse CDF of softmax(mixture logits / T), u[:, 1] draws logistic(location, T scale) by
        its inverse CDF, rounded and clamped to a level (the head's `draw`, but deterministic in u).
        T = 0: the location of the most likely component."""
        log_weights, location, log_scale = self.head.components(params.double())  # each (N, K)
        top = self.config.num_levels - 1
        if temperature == 0:
            x = location.gather(1, log_weights.argmax(dim=1, keepdim=True)).squeeze(1)
        else:
            cdf = torch.softmax(log_weights / temperature, dim=1).cumsum(dim=1)  # (N, K)
            chosen = torch.searchsorted(cdf, u[:, :1].contiguous())  # (N, 1)
            chosen = chosen.clamp_(max=self.head.num_mixtures - 1)  # u beyond a rounded cdf[-1]
            loc, scale = location.gather(1, chosen).squeeze(1), log_scale.gather(1, chosen).squeeze(1).exp()
            v = u[:, 1].clamp(1e-5, 1 - 1e-5)
            x = loc + temperature * scale * (torch.log(v) - torch.log1p(-v))  # inverse logistic CDF
        return (((x + 1) / 2) * top).round().clamp(0, top).long()

    def _check_labels(self, labels, n: int, device) -> torch.Tensor | None:
        return class_labels(labels, n, self.config.num_classes, model="WaveNet", device=device)

    @torch.no_grad()
    def generate(self, n_samples: int, length: int, *, temperature: float = 1.0, labels=None,
                 seed: int | None = None, incremental: bool = True, cuda_graph: bool | None = None) -> torch.Tensor:
        """n_samples sequences of `length` mu-law codes, int64 (n_samples, length).

        seed: the uniform numbers of the draws come from a torch.Generator seeded with it (the same
        stream on both paths; one per draw, two with the logistic mixture); None draws the seed from
        torch's global RNG. incremental=False recomputes the whole network over the receptive field at
        each step (the naive sampler).
        labels: one class or one per sequence (conditional models; default random classes).
        cuda_graph: replay the incremental step as a captured CUDA graph (None: on for a CUDA model;
        True needs one; should the capture fail under None, the step runs eagerly, with a warning).
        """
        check_int("n_samples", n_samples, 1)
        check_int("length", length, 1)
        temperature = check_real("temperature", temperature, 0.0)
        check_bool("incremental", incremental)
        device = next(self.parameters()).device
        if cuda_graph is not None:
            check_bool("cuda_graph", cuda_graph)
            if cuda_graph and device.type != "cuda":
                raise ValueError(f"cuda_graph=True replays the sampling step as a CUDA graph: it needs a model on "
                                 f"a CUDA device, this one is on {device}; pass cuda_graph=None or False")
            if cuda_graph and not incremental:
                raise ValueError("cuda_graph=True captures the incremental step; the naive sampler "
                                 "(incremental=False) runs eagerly: pass cuda_graph=None or False")
        labels = self._check_labels(labels, n_samples, device)
        if seed is None:
            seed = int(torch.randint(0, 2 ** 62, ()))
        generator = torch.Generator(device=device).manual_seed(check_int("seed", seed, 0))
        shape = (length, n_samples) if self.head is None else (length, n_samples, 2)  # 2 per mixture draw
        uniforms = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
        was_training = self.training
        self.eval()
        try:
            if not incremental:
                return self._generate_naive(n_samples, length, temperature, self._cond(labels), uniforms)
            state = self._sampler_state(n_samples, temperature, self._cond(labels), uniforms)
            use_graph = device.type == "cuda" if cuda_graph is None else cuda_graph
            if use_graph:
                return self._generate_cuda_graph(state, length, required=cuda_graph is True)
            for _ in range(length):
                self._sample_step(state)
            return state.codes
        finally:
            self.train(was_training)

    # The incremental sampler: O(layers) per sample, every layer stepping on its ring buffer (Paine
    # et al. 2016), as one step function over the buffers of a _SamplerState.
    def _sampler_state(self, n, temperature, cond, uniforms) -> _SamplerState:
        device = uniforms.device
        clock = StepClock(device)
        matrix = lambda conv: conv.weight[:, :, 0].t().contiguous()  # noqa: E731  (out, in, 1) -> (in, out)
        return _SamplerState(
            clock=clock, uniforms=uniforms,
            codes=torch.zeros(n, uniforms.shape[0], dtype=torch.long, device=device),
            previous=torch.full((n,), self.start_code, dtype=torch.long, device=device),
            layers=[layer.init_state(n, cond, clock=clock) for layer in self.layers],
            head=(matrix(self.head_hidden), self.head_hidden.bias, matrix(self.head_out), self.head_out.bias),
            temperature=temperature)

    def _sample_step(self, state: _SamplerState) -> torch.Tensor:
        """Sample t = state.clock.t: code t from the codes before it; returns the logits (N, P). Reads
        and writes only `state`'s buffers and advances its clock: no host synchronisation, no
        Python-side state, so a CUDA graph of one call replays every later step."""
        state.clock.tick()  # every layer's ring slots at t
        h = self.embed(state.previous)  # (N, R)
        skips = 0
        for layer, layer_state in zip(self.layers, state.layers):
            h, skip = layer.step(h, layer_state)
            skips = skips + skip  # (N, S)
        hidden_w, hidden_b, out_w, out_b = state.head
        hidden = torch.addmm(hidden_b, F.relu(skips), hidden_w).relu_()
        logits = torch.addmm(out_b, hidden, out_w)  # (N, P)
        t = state.clock.t.view(1)
        code = self._draw(logits, state.uniforms.index_select(0, t).squeeze(0), state.temperature)  # (N,)
        state.previous.copy_(code)
        state.codes.index_copy_(1, t, code.unsqueeze(1))
        state.clock.advance()
        return logits

    def _generate_cuda_graph(self, state: _SamplerState, length: int, required: bool) -> torch.Tensor:
        """Step 0 eagerly (`_warm_up_step`), then capture one step (`_capture_step`) and replay it for
        steps 1 .. length-1. Should the capture fail: raise if `required`, else warn and step eagerly."""
        self._warm_up_step(state)
        if length == 1:
            return state.codes
        try:
            replay = self._capture_step(state)
        except RuntimeError as error:
            if required:
                raise
            import warnings

            warnings.warn(f"WaveNet.generate: capturing the sampling step as a CUDA graph failed ({error}); "
                          f"sampling eagerly", RuntimeWarning, stacklevel=3)
            replay = functools.partial(self._sample_step, state)
        for _ in range(length - 1):
            replay()
        _synchronize(state.codes.device)  # the replays finish before the graph (and its memory pool) is freed
        return state.codes

    def _warm_up_step(self, state: _SamplerState) -> None:
        """Step 0 on a side stream, as CUDA graph capture asks: first-call work (cuBLAS handles,
        kernel loading) happens here, not in the capture."""
        device = state.codes.device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            self._sample_step(state)
        torch.cuda.current_stream(device).wait_stream(side)

    def _capture_step(self, state: _SamplerState):
        """One `_sample_step` recorded (not run: the clock keeps its value) as a CUDA graph; returns
        its replay (which keeps the graph alive)."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._sample_step(state)
        return graph.replay

    def _generate_naive(self, n, length, temperature, cond, uniforms) -> torch.Tensor:
        """O(receptive field) per sample: the whole network over the last receptive field."""
        field = self.config.receptive_field
        inputs = torch.full((n, length), self.start_code, dtype=torch.long, device=uniforms.device)
        codes = torch.empty_like(inputs)
        for t in range(length):
            window = inputs[:, max(0, t + 1 - field):t + 1]
            logits = self.network(window, cond)[:, :, -1]  # (N, P)
            codes[:, t] = self._draw(logits, uniforms[t], temperature)
            if t + 1 < length:
                inputs[:, t + 1] = codes[:, t]
        return codes

    @torch.no_grad()
    def sample(self, n: int, labels=None, temperature: float = 1.0, length: int | None = None) -> torch.Tensor:
        """n clips of audio, float32 (n, length) in [-1, 1] (length: config.sample_length), drawn on
        the incremental path with a seed from torch's global RNG."""
        from genkernels.data.audio import mu_law_decode

        length = self.config.sample_length if length is None else length
        codes = self.generate(n, length, temperature=temperature, labels=labels)
        return mu_law_decode(codes, self.config.num_levels)

    # -- figures and files ------------------------------------------------------------------------
    def _audio(self, samples: torch.Tensor) -> torch.Tensor:
        from genkernels.data.audio import mu_law_decode

        samples = samples.detach().cpu()
        if samples.ndim != 2:
            raise ValueError(f"samples must be audio (N, T), got {tuple(samples.shape)}")
        return samples.float() if samples.is_floating_point() else mu_law_decode(samples, self.config.num_levels)

    @torch.no_grad()
    def figures(self, samples: torch.Tensor, *, nrow: int | None = None) -> dict[str, Any]:
        """{"samples": waveform and spectrogram of up to `nrow` (default 4) clips}, a matplotlib Figure."""
        from matplotlib.figure import Figure

        audio = self._audio(samples)[: nrow or 4].numpy()
        if not len(audio):
            return {}
        rate = self.config.sample_rate
        figure = Figure(figsize=(11, 2.2 * len(audio)), layout="constrained")
        axes = figure.subplots(len(audio), 2, squeeze=False)
        for i, clip in enumerate(audio):
            wave_axis, spec_axis = axes[i]
            wave_axis.plot([t / rate for t in range(len(clip))], clip, linewidth=0.4)
            wave_axis.set_ylim(-1.05, 1.05)
            wave_axis.set_ylabel(f"sample {i}")
            decibels = _spectrogram_db(clip)  # (frequencies, frames)
            spec_axis.imshow(decibels, origin="lower", aspect="auto", cmap="magma", vmin=-80.0, vmax=0.0,
                             extent=(0.0, len(clip) / rate, 0.0, rate / 2))
            spec_axis.set_ylabel("Hz")
        axes[0][0].set_title("waveform")
        axes[0][1].set_title("spectrogram")
        axes[-1][0].set_xlabel("seconds")
        axes[-1][1].set_xlabel("seconds")
        return {"samples": figure}

    def sample_files(self, samples: torch.Tensor) -> dict[str, bytes]:
        """{"samples.wav": every clip back to back, 0.25 s of silence apart, 16-bit PCM mono}."""
        from genkernels.data.audio import write_wav

        audio = self._audio(samples)
        gap = torch.zeros(audio.shape[0], self.config.sample_rate // 4)
        joined = torch.cat([audio, gap], dim=1).reshape(-1)
        buffer = io.BytesIO()
        write_wav(buffer, joined.numpy(), self.config.sample_rate)
        return {"samples.wav": buffer.getvalue()}

    # -- fitting to data --------------------------------------------------------------------------
    @classmethod
    def config_for_data(cls, dataset, overrides: dict[str, Any] | None = None, *,
                        data_name: str | None = None) -> WaveNetConfig:
        """sample_rate from the dataset; a conditional config needs (audio, label) items."""
        cls.check_data(dataset, data_name)
        values = dict(overrides or {})
        values.setdefault("sample_rate", int(getattr(dataset, "sample_rate", WaveNetConfig.sample_rate)))
        config = cls.config_class(**values)
        if config.num_classes and len(dataset) and not isinstance(dataset[0], (tuple, list)):
            name = f"data {str(data_name)!r}" if data_name is not None else "the data"
            raise ValueError(f"num_classes={config.num_classes} needs (audio, label) items, but {name} "
                             f"gives audio alone; use num_classes=0")
        return config
