"""MusicLSTM: an LSTM language model over four-voice music tokens (Bach chorales, MIDI folders).

Network:

    tokens (B, T) -> embed (B, T, embed_dim) -> dropout -> genkernels.nn.LSTM (num_layers, the
    fused cell kernels; layer_norm / recurrent_dropout optional) (B, T, hidden) -> dropout
    -> head (B, T, V)

Tokens are genkernels.data.music's: form "events" (vocab 535: BOS / EOS / PAD, TIME_SHIFT 1..16
sixteenths, NOTE / REST per voice) or form "grid" (vocab 130: one token per voice per 16th step).
Loss: next-token NLL through genkernels.ops.linear_cross_entropy (head and loss fused in chunks),
in nats per token (per event in form "events"); bits_per_token beside it.

Generation (`generate`): the prompt (BOS by default, optionally followed by a primer of tokens)
runs through the LSTM once; then each step feeds only the new token with the carried (h, c) of
every layer, so nothing is recomputed. A sequence stops after its stop token (EOS; in form
"grid" the BOS that starts the next piece) or after max_new_tokens. The result equals re-running
the LSTM over the whole prefix for every token (`generate_uncached`; tests/models/test_music_lstm.py
checks it token for token). Training windows (config.context tokens, from the dataset's
block_size) do not bound generation: the state carries on as long as asked.

Outputs: `sample` returns int64 rows (n, L) (BOS, tokens, stop token, padding; see
genkernels.models._music); `sample_files` writes a MIDI file and a WAV rendering per sample;
`figures` a piano roll; `evaluate` the held-out NLL beside unigram / bigram baselines and the
musical statistics of generated pieces against the held-out pieces, beside random pieces,
unigram pieces and real training pieces (genkernels.models._music.evaluate_music).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable

import torch
from torch import nn

from genkernels.models import _music
from genkernels.models._validate import check_bool, check_choice, check_int, check_real
from genkernels.models.base import GenerativeModel
from genkernels.models.gpt import _filter_logits
from genkernels.nn.lstm import LSTM
from genkernels.ops.linear_cross_entropy import linear_cross_entropy


@dataclasses.dataclass
class MusicLSTMConfig:
    """vocab_size and form must match (535 "events", 130 "grid"); context = the training window
    (the dataset's block_size); dropout on the embeddings, between layers and before the head."""

    vocab_size: int = 535
    form: str = "events"
    embed_dim: int = 64
    hidden_size: int = 384
    num_layers: int = 1
    dropout: float = 0.2
    layer_norm: bool = False
    recurrent_dropout: float = 0.0
    context: int = 256

    def __post_init__(self):
        for name, minimum in (("vocab_size", 2), ("embed_dim", 1), ("hidden_size", 1), ("num_layers", 1),
                              ("context", 1)):
            setattr(self, name, check_int(f"MusicLSTMConfig.{name}", getattr(self, name), minimum))
        self.form = check_choice("MusicLSTMConfig.form", self.form, _music.MUSIC_FORMS)
        expected = _music.music_tokens(self.form).vocab_size
        if self.vocab_size != expected:
            raise ValueError(f"MusicLSTMConfig.vocab_size must be {expected} for form={self.form!r}, "
                             f"got {self.vocab_size}")
        self.layer_norm = check_bool("MusicLSTMConfig.layer_norm", self.layer_norm)
        for name in ("dropout", "recurrent_dropout"):
            value = check_real(f"MusicLSTMConfig.{name}", getattr(self, name), 0.0)
            if value >= 1.0:
                raise ValueError(f"MusicLSTMConfig.{name} must be < 1, got {value}")
            setattr(self, name, value)


class MusicLSTM(GenerativeModel):
    """LSTM over music tokens; see the module docstring for the network, loss and generation."""

    name = "music-lstm"
    config_class = MusicLSTMConfig
    default_data = "chorales"
    data_kinds = ("music",)
    # `genkernels train music-lstm`: 400 steps of 16 x 256 events (~15 passes over the 107k training
    # events) with one LSTM layer of 384: ~1.6 s a step on one CPU core of a busy machine (fp32, the
    # fused cell kernels). Two layers of 256 cost the same per step but sat at the unigram loss for
    # ~150 steps (one layer leaves it within ~50).
    train_defaults = {"steps": 400, "batch_size": 16, "lr": 3e-3, "warmup_steps": 30, "weight_decay": 0.01,
                      "min_lr_ratio": 0.05, "precision": "fp32", "eval_every": 100, "eval_max_items": 64,
                      "log_every": 25, "num_samples": 4, "checkpoint_every": 200}
    evaluate_reports_loss = True  # evaluate() returns the mean NLL as "loss"
    metric_units = {"loss": "nats/token", "bits_per_token": "bits/token", "unigram_nll": "nats/token",
                    "bigram_nll": "nats/token", "unigram_bits_per_token": "bits/token",
                    "bigram_bits_per_token": "bits/token"}

    def __init__(self, config: MusicLSTMConfig | None = None):
        super().__init__(config if config is not None else MusicLSTMConfig())
        c = self.config
        self.tokens = _music.music_tokens(c.form)
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim)
        self.drop = nn.Dropout(c.dropout)
        self.lstm = LSTM(c.embed_dim, c.hidden_size, c.num_layers, batch_first=True,
                         dropout=c.dropout if c.num_layers > 1 else 0.0, layer_norm=c.layer_norm,
                         recurrent_dropout=c.recurrent_dropout)
        self.head = nn.Linear(c.hidden_size, c.vocab_size)
        # N(0, 1) embeddings (torch's default): with std 0.1 the loss sat at the unigram level for
        # hundreds of steps
        nn.init.normal_(self.embed.weight, std=1.0)
        with torch.no_grad():  # forget-gate biases 1 (gates i, f, g, o): remember by default
            for name, p in self.lstm.named_parameters():
                if name.startswith("bias_ih"):
                    p[c.hidden_size:2 * c.hidden_size] += 1.0
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    # -- network ----------------------------------------------------------------------------------
    def _check_tokens(self, tokens, name: str = "tokens") -> torch.Tensor:
        return _music.check_music_tokens(tokens, self.config.vocab_size, name)

    def hidden(self, tokens: torch.Tensor, state=None):
        """tokens (B, T) int64 -> (LSTM outputs (B, T, hidden), (h, c) each (num_layers, B, hidden))."""
        self._check_tokens(tokens)
        x = self.drop(self.embed(tokens))  # (B, T, embed_dim)
        out, state = self.lstm(x, state)  # (B, T, hidden)
        return self.drop(out), state

    def forward(self, tokens: torch.Tensor, state=None):
        """tokens (B, T) -> (next-token logits (B, T, V), state (h, c))."""
        out, state = self.hidden(tokens, state)
        return self.head(out), state

    def _split(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = batch[0] if isinstance(batch, (tuple, list)) else batch
        self._check_tokens(tokens, "batch")
        if tokens.shape[1] < 2:
            raise ValueError(f"batch must be windows (B, T + 1) with T >= 1, got shape {tuple(tokens.shape)}")
        return tokens[:, :-1], tokens[:, 1:]

    def _nll(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        h, _ = self.hidden(inputs)  # (B, T, hidden)
        return linear_cross_entropy(h.reshape(-1, h.shape[-1]), self.head.weight, targets.reshape(-1),
                                    bias=self.head.bias)

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """batch (B, T + 1) int64 windows -> {"loss": mean next-token NLL (nats/token), "bits_per_token"}."""
        inputs, targets = self._split(batch)
        nll = self._nll(inputs, targets)
        return {"loss": nll, "bits_per_token": nll.detach() / math.log(2)}

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x[:, 1:] | x[:, 0]) per sequence in nats, (B,), for tokens x (B, T + 1)."""
        inputs, targets = self._split(x)
        logits = self(inputs)[0].float()
        return -nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none").sum(dim=1)

    @torch.no_grad()
    def evaluate(self, dataset, *, max_items: int | None = None, batch_size: int = 32, num_samples: int = 16,
                 max_new_tokens: int | None = None, seed: int = 0, train=None) -> dict[str, float]:
        """Held-out NLL (nats and bits per token) beside unigram / bigram baselines, and the musical
        statistics of num_samples generated pieces vs the held-out pieces, beside random, unigram
        and real training pieces (see genkernels.models._music.evaluate_music for the keys)."""
        self.check_dataset(dataset)
        return _music.evaluate_music(
            dataset, self._nll, lambda n, s: self.sample(n, max_new_tokens=max_new_tokens, seed=s),
            form=self.config.form, vocab_size=self.config.vocab_size, max_items=max_items, batch_size=batch_size,
            num_samples=num_samples, seed=seed, device=self.head.weight.device, train=train)

    # -- generation ---------------------------------------------------------------------------------
    def _run_prompts(self, prompts: list[list[int]]):
        """Right-aligned prompts -> (logits after each prompt's last token (B, V), state)."""
        device = self.head.weight.device
        lengths = [len(p) for p in prompts]
        if len(set(lengths)) == 1:  # one pass over the whole prompt
            tokens = torch.tensor(prompts, dtype=torch.int64, device=device)
            out, state = self.hidden(tokens)
            return self.head(out[:, -1]), state
        # prompts of different lengths: step by step, a finished prompt keeps its state
        batch, longest = len(prompts), max(lengths)
        padded = _music.pad_rows(prompts, 0).to(device)
        ends = torch.tensor(lengths, device=device)
        state, last = None, None
        for t in range(longest):
            out, new_state = self.hidden(padded[:, t:t + 1], state)
            keep = (t < ends)  # (B,)
            if state is None:
                state = new_state
            else:
                state = tuple(torch.where(keep[None, :, None], n, o) for n, o in zip(new_state, state))
            out = out[:, 0]
            last = out if last is None else torch.where(keep[:, None], out, last)
        return self.head(last), state

    @torch.no_grad()
    def generate(self, prompt_tokens=None, max_new_tokens: int = _music.DEFAULT_MAX_EVENTS, temperature: float = 1.0,
                 top_k: int | None = None, seed: int | None = None, n: int = 1,
                 stop_tokens: Iterable[int] | None = None,
                 stream: Callable[[int, torch.Tensor], Any] | None = None) -> list[list[int]]:
        """Continue each prompt by up to max_new_tokens tokens, carrying the LSTM state.

        prompt_tokens  None: n prompts of BOS alone; a token list / 1-D tensor (one primer, for each
                       of the n sequences; start it with BOS for a piece's beginning); a (B, T)
                       integer tensor or a list of B token lists (lengths may differ)
        temperature    0: greedy (argmax); else sample softmax(logits / temperature)
        top_k          keep the k most likely tokens
        seed           seeds a torch.Generator for the draws (None: torch's global generator)
        stop_tokens    a sequence ends after one of these (included); default: the form's stop
                       token (EOS; the next piece's BOS in form "grid"); [] never stops early
        stream         callback(step, tokens (B,) int64 on the CPU), -1 for a stopped sequence
        Returns the B lists of generated tokens (without the prompt).
        """
        c = self.config
        n = check_int("n", n, 1)
        prompts = _music.as_prompts([self.tokens.bos] if prompt_tokens is None else prompt_tokens, c.vocab_size, n)
        max_new_tokens = check_int("max_new_tokens", max_new_tokens, 0)
        temperature = check_real("temperature", temperature, 0.0)
        if top_k is not None:
            top_k = check_int("top_k", top_k, 1)
        if seed is not None:
            seed = check_int("seed", seed)
        stops = {self.tokens.stop} if stop_tokens is None else {
            check_int("stop_tokens[i]", t) for t in ([stop_tokens] if isinstance(stop_tokens, int) else stop_tokens)}
        if stream is not None and not callable(stream):
            raise TypeError(f"stream must be a callable(step, tokens) or None, got {type(stream).__name__}")
        outputs: list[list[int]] = [[] for _ in prompts]
        if max_new_tokens == 0:
            return outputs
        device = self.head.weight.device
        generator = None
        if seed is not None and temperature > 0:
            generator = torch.Generator(device=device)
            generator.manual_seed(seed)
        logits, state = self._run_prompts(prompts)  # (B, V)
        alive = [True] * len(prompts)
        for step in range(max_new_tokens):
            logits = logits.float()
            if temperature == 0:
                new = logits.argmax(dim=-1)
            else:
                probs = _filter_logits(logits / temperature, top_k, None).softmax(dim=-1)
                new = torch.multinomial(probs, 1, generator=generator)[:, 0]
            shown = []
            for b, t in enumerate(new.tolist()):
                shown.append(t if alive[b] else -1)
                if alive[b]:
                    outputs[b].append(t)
                    alive[b] = t not in stops
            if stream is not None:
                stream(step, torch.tensor(shown, dtype=torch.int64))
            if not any(alive) or step == max_new_tokens - 1:
                break
            out, state = self.hidden(new[:, None], state)  # one step: (B, 1, hidden)
            logits = self.head(out[:, 0])
        return outputs

    @torch.no_grad()
    def generate_uncached(self, prompt_tokens, max_new_tokens: int) -> list[list[int]]:
        """Greedy continuation re-running the LSTM over the whole prefix for every token (the
        reference generate() must equal)."""
        prompts = _music.as_prompts(prompt_tokens, self.config.vocab_size)
        device = self.head.weight.device
        outputs = []
        for p in prompts:
            seq = torch.tensor([p], dtype=torch.int64, device=device)
            for _ in range(max_new_tokens):
                new = self(seq)[0][:, -1].float().argmax(dim=-1, keepdim=True)
                seq = torch.cat([seq, new], dim=1)
            outputs.append(seq[0, len(p):].tolist())
        return outputs

    @torch.no_grad()
    def sample(self, n: int, max_new_tokens: int | None = None, temperature: float = 1.0, top_k: int | None = None,
               seed: int | None = None, primer: list[int] | None = None) -> torch.Tensor:
        """n pieces as int64 rows (n, L): BOS (then the primer tokens, if any), the generated tokens
        up to the stop token, then padding (PAD; GRID_BOS in form "grid"). max_new_tokens None:
        512 events (a chorale has ~330), or 4 x 256 grid tokens."""
        n = check_int("n", n, 1)
        if max_new_tokens is None:
            max_new_tokens = _music.DEFAULT_MAX_EVENTS if self.config.form == "events" else 4 * 256
        start = [self.tokens.bos] + (list(primer) if primer is not None else [])
        generated = self.generate(start, max_new_tokens, temperature=temperature, top_k=top_k, seed=seed, n=n)
        return _music.pad_rows([start + g for g in generated], self.tokens.pad)

    def sample_files(self, samples: torch.Tensor) -> dict[str, bytes]:
        """sample_00.mid, sample_00.wav, ... (genkernels.data.music.events_to_midi / render_wav; WAV
        renderings for the first 16 samples)."""
        return _music.music_sample_files(samples, self.config.form)

    @torch.no_grad()
    def figures(self, samples: torch.Tensor, *, nrow: int | None = None) -> dict[str, Any]:
        """{"piano_roll": the first four samples, voices coloured}."""
        return _music.music_figures(samples, self.config.form)

    # -- fitting to data --------------------------------------------------------------------------
    @classmethod
    def config_for_data(cls, dataset, overrides: dict[str, Any] | None = None, *,
                        data_name: str | None = None) -> MusicLSTMConfig:
        """form, vocab_size and context (block_size) from the music dataset; overrides win."""
        cls.check_data(dataset, data_name)
        values = dict(overrides or {})
        values.setdefault("form", getattr(dataset, "form", "events"))
        values.setdefault("vocab_size", int(getattr(dataset, "vocab_size", _music.music_tokens(values["form"])[0])))
        if getattr(dataset, "block_size", None):
            values.setdefault("context", int(dataset.block_size))
        return cls.config_class(**values)

    def check_dataset(self, dataset, data_name: str | None = None) -> None:
        """Raise ValueError when the dataset's token form is not this model's."""
        self.check_data(dataset, data_name)
        form = getattr(dataset, "form", None)
        if form is not None and form != self.config.form:
            name = f"data {str(data_name)!r}" if data_name is not None else "the data"
            raise ValueError(f"{name} is in form {form!r}, but this model was trained on form {self.config.form!r}")


__all__ = ["MusicLSTM", "MusicLSTMConfig"]
