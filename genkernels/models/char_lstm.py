"""CharLSTM: an LSTM language model over bytes (or any token ids) that generates by carrying its state.

Network:

    tokens (B, T) -> embed (B, T, embed_dim) -> dropout -> genkernels.nn.LSTM (num_layers, batch_first,
    dropout between layers, optional LayerNorm-LSTM and variational recurrent dropout)
    -> (B, T, hidden_size) -> dropout -> [proj to embed_dim when tied and the sizes differ]
    -> head (B, T, V)

The head is tied to the embedding by default (tie_embeddings=True): when hidden_size differs from
embed_dim a bias-free projection hidden_size -> embed_dim comes first (for the byte vocabulary
with embed_dim 256 this is a full-rank factorisation of the head, so nothing is lost). The forget
gates start with bias 1.

Loss: next-token NLL through genkernels.ops.linear_cross_entropy (the (B*T, V) logits are never
stored), in nats per token, and bits per byte for bytes. Every training window starts from the
zero state (the windows are shuffled), so `context` (the dataset's block_size) is the length of
back-propagation through time; generation itself has no length limit.

Generation carries the recurrent state (h, c), nothing is recomputed. The invariant is a state
that has read every token but one, and that pending token: prefill runs each prompt but its last
token through the sequence LSTM (prompts grouped by length, each group in one batched pass from
the zero state, so different lengths are exact, no padding), then every step feeds the pending
tokens of the whole batch through the layers (`step`), samples the next tokens and makes them the
pending ones. `generate(..., return_state=True)` hands back that state, so
`generate([[o[-1]] for o in out], m, state=state)` continues exactly where a longer call would
have gone. The result equals re-running the whole prefix for every token (`generate_uncached`,
tests/models/test_char_lstm.py checks it token for token). temperature=0 is greedy (as GPT).

Tokens: bytes (tokenizer="byte", vocab 256) or a byte-level BPE (tokenizer="bpe"), chosen as
GPT chooses (genkernels.models._text.fit_tokenizer): config_for_data trains a BPETokenizer of
bpe_vocab tokens on byte text of >= 1 MB (the stdlib train split, so `genkernels train lstm` is a
BPE LSTM) or when tokenizer="bpe" is asked; smaller text and tokenizer="byte" keep bytes; a
TextDataset encoded with a BPETokenizer gives its own. The tokenizer's JSON travels in the config
(tokenizer_json), `context` then counts tokens (the data's 256-byte windows become 256-token ones,
~2.5x more text per window and per step), prepare_dataset encodes byte text, samples are decoded and
bits per byte count the bytes the predicted tokens stand for (as GPT does).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch
from torch import nn

from genkernels.models._text import TOKENIZERS, encode_text_dataset, fit_tokenizer
from genkernels.models._validate import check_bool, check_choice, check_int, check_real, evaluation_count
from genkernels.models.base import GenerativeModel
from genkernels.models.gpt import _as_prompts, _filter_logits
from genkernels.nn.lstm import LSTM
from genkernels.ops.linear_cross_entropy import linear_cross_entropy

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (num_layers, B, hidden_size)


@dataclasses.dataclass
class CharLSTMConfig:
    """vocab_size 256 = bytes; context = the training window (BPTT length; generation is unbounded);
    dropout on the embeddings, between layers and before the head; recurrent_dropout = variational
    dropout on h_{t-1} (the same mask at every step); layer_norm = LayerNorm-LSTM cells;
    tie_embeddings shares the embedding with the head (through a projection when
    hidden_size != embed_dim); tokenizer "byte" or "bpe" as GPTConfig's: tokenizer_json = the
    BPETokenizer.to_json() (config_for_data trains one of bpe_vocab tokens when it is None). A config
    with tokenizer_json and tokenizer "byte" (saved before the field existed) loads as "bpe"."""

    vocab_size: int = 256
    context: int = 256
    embed_dim: int = 256
    hidden_size: int = 384
    num_layers: int = 2
    dropout: float = 0.1
    recurrent_dropout: float = 0.0
    layer_norm: bool = False
    tie_embeddings: bool = True
    tokenizer: str = "byte"  # "byte" or "bpe" (bytes / raw ids, or a BPETokenizer's ids)
    bpe_vocab: int = 1024  # BPE tokens config_for_data trains when tokenizer_json is None
    tokenizer_json: str | None = None  # the BPETokenizer.to_json() (set by config_for_data)

    def __post_init__(self):
        for name, minimum in (("vocab_size", 2), ("context", 1), ("embed_dim", 1), ("hidden_size", 1),
                              ("num_layers", 1)):
            setattr(self, name, check_int(f"CharLSTMConfig.{name}", getattr(self, name), minimum))
        for name in ("dropout", "recurrent_dropout"):
            value = check_real(f"CharLSTMConfig.{name}", getattr(self, name), 0.0)
            if value >= 1.0:
                raise ValueError(f"CharLSTMConfig.{name} must be < 1, got {value}")
            setattr(self, name, value)
        self.layer_norm = check_bool("CharLSTMConfig.layer_norm", self.layer_norm)
        self.tie_embeddings = check_bool("CharLSTMConfig.tie_embeddings", self.tie_embeddings)
        self.tokenizer = check_choice("CharLSTMConfig.tokenizer", self.tokenizer, TOKENIZERS)
        self.bpe_vocab = check_int("CharLSTMConfig.bpe_vocab", self.bpe_vocab, 256)
        if self.tokenizer_json is not None and not isinstance(self.tokenizer_json, str):
            raise TypeError(f"CharLSTMConfig.tokenizer_json must be a tokenizer JSON str or None, got "
                            f"{type(self.tokenizer_json).__name__}")
        if self.tokenizer_json is not None:
            self.tokenizer = "bpe"  # configs saved before the tokenizer field had only tokenizer_json


class CharLSTM(GenerativeModel):
    """LSTM language model; see the module docstring for the network, loss and generation."""

    name = "lstm"
    config_class = CharLSTMConfig
    default_data = "text"
    data_kinds = ("text",)
    # The default recipe (`genkernels train lstm` on the stdlib text): config_for_data fits a
    # 1024-token BPE to the 4 MB train split (~3 s), so the data's 256-position windows hold ~2.5x
    # more text (~640 bytes); 2 x 384 LSTM, batch 32, 400 steps. A BPE step cost ~1.13x a byte step
    # (the 1024-way head; measured 1 thread each on a loaded machine), so ~1.4 s on 2 idle cores
    # (bytes: ~1.2 s) and ~8-10 min in all (1 thread, machine near idle: 1.7 s per step). The full
    # recipe reached 1.72 val and 1.86 test bits/byte (`genkernels eval RUN --split test --max-items
    # 1024`: zlib 1.80 / lzma 1.46 on the same ~630 KB), against 2.73 for the earlier byte recipe
    # with +-0.1 embeddings: close to zlib, still above it and lzma. At 150 steps: val 2.14 (256
    # windows); the +-0.1 embeddings gave 2.89 (BPE) and 3.89 (bytes). On a shared machine set
    # OMP_WAIT_POLICY=PASSIVE.
    train_defaults = {"steps": 400, "batch_size": 32, "lr": 3e-3, "warmup_steps": 40, "weight_decay": 0.01,
                      "min_lr_ratio": 0.1, "grad_clip": 1.0, "precision": "fp32", "ema_decay": 0.99,
                      "eval_every": 200, "eval_max_items": 64, "num_samples": 4}
    evaluate_reports_loss = True  # evaluate() returns the mean NLL as "loss": the CLI's eval makes one pass
    metric_units = {"loss": "nats/byte", "bits_per_byte": "bits/byte", "zlib_bits_per_byte": "bits/byte",
                    "lzma_bits_per_byte": "bits/byte"}

    def __init__(self, config: CharLSTMConfig | None = None):
        super().__init__(config if config is not None else CharLSTMConfig())
        c = self.config
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim)
        self.drop = nn.Dropout(c.dropout)
        self.lstm = LSTM(c.embed_dim, c.hidden_size, c.num_layers, batch_first=True,
                         dropout=c.dropout if c.num_layers > 1 else 0.0, layer_norm=c.layer_norm,
                         recurrent_dropout=c.recurrent_dropout)
        tied = c.tie_embeddings
        self.proj = nn.Linear(c.hidden_size, c.embed_dim, bias=False) if tied and c.hidden_size != c.embed_dim \
            else None
        self.head = None if tied else nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self._init_weights()
        self._init_tokenizer()

    def _init_weights(self):
        # embeddings of unit range: inputs of the LSTM's scale (with +-0.1 they barely moved its gates
        # and a BPE LSTM stayed at the unigram loss for ~100 steps of the default recipe)
        nn.init.uniform_(self.embed.weight, -1.0, 1.0)
        h = self.config.hidden_size
        with torch.no_grad():
            for layer in range(self.config.num_layers):  # forget-gate bias 1 (gate order i, f, g, o)
                getattr(self.lstm, f"bias_ih_l{layer}")[h:2 * h].fill_(1.0)
                getattr(self.lstm, f"bias_hh_l{layer}")[h:2 * h].zero_()

    def _init_tokenizer(self):
        """self.tokenizer (ByteTokenizer, or the config's BPETokenizer); for BPE, bytes per token id."""
        from genkernels.data.tokenizer import BPETokenizer, ByteTokenizer

        c = self.config
        self._token_bytes = None  # (V,) int64 bytes per token id, BPE only
        if c.tokenizer == "byte":
            self.tokenizer = ByteTokenizer() if c.vocab_size == 256 else None
            return
        if c.tokenizer_json is None:
            raise ValueError("CharLSTMConfig.tokenizer='bpe' needs tokenizer_json (a BPETokenizer.to_json()); "
                             "build the config with CharLSTM.config_for_data(dataset, {'tokenizer': 'bpe'})")
        self.tokenizer = BPETokenizer.from_json(c.tokenizer_json)
        if self.tokenizer.vocab_size != c.vocab_size:
            raise ValueError(f"CharLSTMConfig.vocab_size ({c.vocab_size}) must equal the BPE tokenizer's vocab size "
                             f"({self.tokenizer.vocab_size})")
        self._token_bytes = torch.tensor(self.tokenizer.byte_lengths(), dtype=torch.int64)
        self.metric_units = {**type(self).metric_units, "loss": "nats/token", "bits_per_token": "bits/token"}

    @property
    def head_weight(self) -> torch.Tensor:  # (V, embed_dim) tied, (V, hidden_size) untied
        return self.embed.weight if self.head is None else self.head.weight

    # -- network ----------------------------------------------------------------------------------
    def _check_tokens(self, tokens, name: str = "tokens", dim: int = 2) -> torch.Tensor:
        """Integer tokens of `dim` dims in [0, V) -> int64; TypeError for a non-integer tensor."""
        shape = "(B, T)" if dim == 2 else "(B,)"
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"{name} must be an integer tensor {shape}, got {type(tokens).__name__}")
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor {shape} of token ids, got dtype {tokens.dtype}")
        if tokens.dim() != dim:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(tokens.shape)}")
        if tokens.numel() and not torch.compiler.is_compiling() and (
                int(tokens.min()) < 0 or int(tokens.max()) >= self.config.vocab_size):
            raise ValueError(f"{name} must lie in [0, vocab_size = {self.config.vocab_size}), got values from "
                             f"{int(tokens.min())} to {int(tokens.max())}")
        return tokens.long()

    def initial_state(self, batch_size: int) -> State:
        """The zero state (h, c), each (num_layers, batch_size, hidden_size)."""
        c, w = self.config, self.embed.weight
        batch_size = check_int("batch_size", batch_size, 1)
        zeros = torch.zeros(c.num_layers, batch_size, c.hidden_size, dtype=w.dtype, device=w.device)
        return zeros, zeros.clone()

    def _check_state(self, state, batch: int, name: str = "state") -> State | None:
        if state is None:
            return None
        c, w = self.config, self.embed.weight
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(f"{name} must be a tuple (h, c) of tensors or None, got {type(state).__name__}")
        expected = (c.num_layers, batch, c.hidden_size)
        for part, t in zip("hc", state):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name}'s {part} must be a tensor, got {type(t).__name__}")
            if tuple(t.shape) != expected:
                raise ValueError(f"{name}'s {part} must have shape {expected} (num_layers, batch, hidden_size), "
                                 f"got {tuple(t.shape)}")
            if not t.is_floating_point():
                raise TypeError(f"{name}'s {part} must be a floating tensor, got dtype {t.dtype}")
        return state[0].to(w.dtype, copy=False).contiguous(), state[1].to(w.dtype, copy=False).contiguous()

    def _features(self, h: torch.Tensor) -> torch.Tensor:
        """LSTM output (..., hidden_size) -> the head's input (..., embed_dim tied / hidden_size)."""
        h = self.drop(h)
        return self.proj(h) if self.proj is not None else h

    def hidden(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """tokens (B, T) -> head inputs (B, T, D) and the state after the last token."""
        tokens = self._check_tokens(tokens)
        state = self._check_state(state, tokens.shape[0])
        out, state = self.lstm(self.drop(self.embed(tokens)), state)  # (B, T, hidden_size)
        return self._features(out), state

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """tokens (B, T) integer -> next-token logits (B, T, V) and the state (h, c) after them."""
        h, state = self.hidden(tokens, state)
        return h @ self.head_weight.t(), state

    def step(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """One token per sequence: tokens (B,) and the state before it (None: zeros) -> logits (B, V)
        for the next token and the state after it."""
        tokens = self._check_tokens(tokens, "tokens", dim=1)
        logits, state = self(tokens[:, None], state)
        return logits[:, 0], state

    def _split(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = batch[0] if isinstance(batch, (tuple, list)) else batch
        tokens = self._check_tokens(tokens, "batch")
        if tokens.shape[1] < 2:
            raise ValueError(f"batch must be windows (B, T + 1) with T >= 1, got shape {tuple(tokens.shape)}")
        return tokens[:, :-1], tokens[:, 1:]

    def _nll(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        h, _ = self.hidden(inputs)  # (B, T, D)
        return linear_cross_entropy(h.reshape(-1, h.shape[-1]), self.head_weight, targets.reshape(-1))

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """batch (B, T + 1) windows -> {"loss": mean next-token NLL in nats, "bits_per_byte"} (BPE: over
        the bytes the target tokens stand for, and "bits_per_token")."""
        inputs, targets = self._split(batch)
        nll = self._nll(inputs, targets)
        bits = nll.detach() / math.log(2)
        if self._token_bytes is None:
            return {"loss": nll, "bits_per_byte": bits}
        num_bytes = self._token_bytes.to(targets.device)[targets].sum()
        return {"loss": nll, "bits_per_byte": bits * targets.numel() / num_bytes, "bits_per_token": bits}

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x[:, 1:] | x[:, 0]) per sequence in nats, (B,), for tokens x (B, T + 1)."""
        inputs, targets = self._split(x)
        logits = self(inputs)[0].float()
        return -nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none").sum(dim=1)

    @torch.no_grad()
    def evaluate(self, dataset, *, max_items: int | None = None, batch_size: int = 32) -> dict[str, float]:
        """Held-out bits per byte over the windows (each from the zero state), beside zlib and lzma on
        the same bytes; BPE: the total nats over the bytes of the predicted tokens, and bits_per_token."""
        from genkernels.metrics.text import compression_baselines

        dataset = self.prepare_dataset(dataset)
        self.check_dataset(dataset)
        count = evaluation_count(dataset, max_items, batch_size)
        device = self.head_weight.device
        nats, num_tokens, num_bytes = 0.0, 0, 0
        for begin in range(0, count, batch_size):
            batch = torch.stack([dataset[i] for i in range(begin, min(count, begin + batch_size))]).to(device)
            inputs, targets = self._split(batch)
            nats += float(self._nll(inputs, targets)) * targets.numel()
            num_tokens += targets.numel()
            num_bytes += (targets.numel() if self._token_bytes is None
                          else int(self._token_bytes.to(device)[targets].sum()))
        metrics = {"loss": nats / num_tokens, "bits_per_byte": nats / num_bytes / math.log(2)}
        if self._token_bytes is not None:
            metrics.update(bits_per_token=nats / num_tokens / math.log(2), bytes_per_token=num_bytes / num_tokens)
        data = getattr(dataset, "data", None)
        if isinstance(data, torch.Tensor) and data.dtype == torch.uint8:
            if callable(getattr(dataset, "window_bytes", None)):
                span = data[dataset.window_bytes(0)[0]:dataset.window_bytes(count - 1)[1]]
            else:
                stride = getattr(dataset, "stride", dataset[0].numel() - 1)
                span = data[:(count - 1) * stride + dataset[0].numel()]
            baselines = compression_baselines(span.numpy().tobytes())
            metrics.update(zlib_bits_per_byte=baselines["zlib"], lzma_bits_per_byte=baselines["lzma"])
        return metrics

    # -- generation ---------------------------------------------------------------------------------
    def _prefill(self, prompts: list[list[int]], state: State | None) -> State:
        """The state after every prompt but its last token: prompts grouped by that prefix length,
        each group in one batched LSTM pass (from `state`'s rows, or zeros)."""
        batch = len(prompts)
        h, c = state if state is not None else self.initial_state(batch)
        h, c = h.clone(), c.clone()
        device = h.device
        groups: dict[int, list[int]] = {}
        for b, p in enumerate(prompts):
            if len(p) > 1:
                groups.setdefault(len(p) - 1, []).append(b)
        for length, rows in groups.items():
            index = torch.tensor(rows, dtype=torch.int64, device=device)
            tokens = torch.tensor([prompts[b][:length] for b in rows], dtype=torch.int64, device=device)
            rows_state = (h[:, index].contiguous(), c[:, index].contiguous())
            _, (h_g, c_g) = self.lstm(self.drop(self.embed(tokens)), rows_state)
            h[:, index], c[:, index] = h_g, c_g
        return h, c

    @torch.no_grad()
    def generate(self, prompt_tokens, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None,
                 stream: Callable[[int, torch.Tensor], Any] | None = None, *, state: State | None = None,
                 return_state: bool = False):
        """Continue each prompt by max_new_tokens tokens, carrying the LSTM state (no recomputation).

        prompt_tokens  a (B, T) integer tensor, or a list of B non-empty token lists of any lengths
        temperature    0: greedy (argmax), as GPT; else sample softmax(logits / temperature)
        top_k, top_p   keep the k most likely tokens / the smallest set of mass >= top_p
        seed           seeds a torch.Generator for the draws (None: torch's global generator)
        stream         callback(step, tokens) with tokens (B,) int64 on the CPU as each step's come
                       (GPT.generate's; the CLI's `sample --prompt` prints them)
        state          (h, c), each (num_layers, B, hidden_size): the state the prompts continue from
                       (None: zeros)
        return_state   also return the state that has read everything but the last token (of the
                       prompt + output): `generate([[o[-1]] for o in out], m, state=state)` continues
                       exactly as one longer call
        Returns the B lists of generated tokens (without the prompt), and the state if asked.
        """
        prompts = _as_prompts(prompt_tokens, self.config.vocab_size)
        max_new_tokens = check_int("max_new_tokens", max_new_tokens, 0)
        temperature = check_real("temperature", temperature, 0.0)
        if top_k is not None:
            top_k = check_int("top_k", top_k, 1)
        if top_p is not None:
            top_p = check_real("top_p", top_p, 0.0)
            if not 0.0 < top_p <= 1.0:
                raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
        if seed is not None:
            seed = check_int("seed", seed)
        if stream is not None and not callable(stream):
            raise TypeError(f"stream must be a callable(step, tokens) or None, got {type(stream).__name__}")
        return_state = check_bool("return_state", return_state)
        batch = len(prompts)
        state = self._prefill(prompts, self._check_state(state, batch))
        device = self.embed.weight.device
        pending = torch.tensor([p[-1] for p in prompts], dtype=torch.int64, device=device)  # (B,) not yet read
        generator = None
        if seed is not None and temperature > 0:
            generator = torch.Generator(device=device)
            generator.manual_seed(seed)
        outputs: list[list[int]] = [[] for _ in prompts]
        for step in range(max_new_tokens):
            logits, new_state = self.step(pending, state)
            logits = logits.float()
            if temperature == 0:
                new = logits.argmax(dim=-1)
            else:
                probs = _filter_logits(logits / temperature, top_k, top_p).softmax(dim=-1)
                new = torch.multinomial(probs, 1, generator=generator)[:, 0]
            for b, t in enumerate(new.tolist()):
                outputs[b].append(t)
            if stream is not None:
                stream(step, new.cpu())
            state, pending = new_state, new
        return (outputs, state) if return_state else outputs

    @torch.no_grad()
    def generate_uncached(self, prompt_tokens, max_new_tokens: int) -> list[list[int]]:
        """Greedy continuation re-running the whole prefix from the zero state for every token, one
        prompt at a time: the reference that `generate(..., temperature=0)` must equal."""
        prompts = _as_prompts(prompt_tokens, self.config.vocab_size)
        max_new_tokens = check_int("max_new_tokens", max_new_tokens, 0)
        device = self.embed.weight.device
        outputs = []
        for p in prompts:
            seq = torch.tensor([p], dtype=torch.int64, device=device)
            for _ in range(max_new_tokens):
                logits, _ = self(seq)  # (1, T, V)
                new = logits[:, -1].float().argmax(dim=-1, keepdim=True)
                seq = torch.cat([seq, new], dim=1)
            outputs.append(seq[0, len(p):].tolist())
        return outputs

    def _encode_prompt(self, prompt: str) -> list[int]:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        if self._token_bytes is not None:
            return self.tokenizer.encode(prompt or "\n")
        if self.config.vocab_size < 256:
            raise ValueError(f"sample(prompt=...) encodes UTF-8 bytes and needs vocab_size >= 256, got "
                             f"{self.config.vocab_size}; use generate() with token ids")
        return list((prompt or "\n").encode("utf-8"))

    @torch.no_grad()
    def sample(self, n: int, prompt: str = "", max_new_tokens: int | None = None, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, seed: int | None = None) -> torch.Tensor:
        """n token sequences (n, P + max_new_tokens) int64: the prompt's tokens (UTF-8 bytes, or BPE ids;
        a newline when prompt is empty) followed by the generated ones. max_new_tokens None: context."""
        start = self._encode_prompt(prompt)
        n = check_int("n", n, 1)
        if max_new_tokens is None:
            max_new_tokens = self.config.context
        generated = self.generate([start] * n, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                  seed=seed)
        return torch.tensor([start + g for g in generated], dtype=torch.int64)

    def sample_files(self, samples: torch.Tensor) -> dict[str, bytes]:
        """samples.txt: each sample decoded as UTF-8 (invalid bytes replaced; BPE ids through the
        tokenizer; other vocabularies as space-separated ids)."""
        rows = samples.long().clamp(0, self.config.vocab_size - 1).cpu()
        if self._token_bytes is not None:
            texts = [self.tokenizer.decode_str(row.tolist()) for row in rows]
        elif self.config.vocab_size <= 256:
            texts = [bytes(int(t) for t in row).decode("utf-8", errors="replace") for row in rows]
        else:
            texts = [" ".join(str(int(t)) for t in row) for row in rows]
        sep = "\n" + "-" * 40 + "\n"
        return {"samples.txt": sep.join(texts).encode("utf-8")}

    # -- fitting to data --------------------------------------------------------------------------
    @classmethod
    def config_for_data(cls, dataset, overrides: dict[str, Any] | None = None, *,
                        data_name: str | None = None) -> CharLSTMConfig:
        """context from the dataset's windows (block_size; tokens with a BPE), vocab_size from the
        dataset (256 bytes) or the tokenizer. The tokenizer as GPT.config_for_data picks it
        (genkernels.models._text.fit_tokenizer): byte text of >= 1 MB (the stdlib train split) with
        none of tokenizer / tokenizer_json / vocab_size given gets a BPE of bpe_vocab tokens trained
        on its bytes, as does tokenizer="bpe"; tokenizer="byte" keeps bytes; a dataset encoded with a
        BPETokenizer gives its tokenizer."""
        cls.check_data(dataset, data_name)
        values = dict(overrides or {})
        if getattr(dataset, "block_size", None):
            values.setdefault("context", int(dataset.block_size))
        if values.get("tokenizer_json") is not None:  # a given tokenizer means BPE
            if values.setdefault("tokenizer", "bpe") != "bpe":
                raise ValueError(f"tokenizer_json is only used with tokenizer='bpe', got tokenizer="
                                 f"{values['tokenizer']!r}")
        fit_tokenizer(values, dataset, owner="CharLSTMConfig", default_bpe_vocab=CharLSTMConfig.bpe_vocab)
        if values.get("tokenizer") == "bpe":
            return cls.config_class(**values)  # vocab_size is the tokenizer's
        vocab = int(getattr(dataset, "vocab_size", CharLSTMConfig.vocab_size))
        if values.setdefault("vocab_size", vocab) != vocab:
            name = f"data {str(data_name)!r}" if data_name is not None else "the data"
            raise ValueError(f"vocab_size={values['vocab_size']} differs from {name}'s {vocab} tokens")
        return cls.config_class(**values)

    def prepare_dataset(self, dataset):
        """The dataset in this model's tokens: a BPE model encodes byte text (a TextDataset without a
        tokenizer) into windows of context + 1 tokens; anything else is returned as is."""
        if self._token_bytes is None:
            return dataset
        return encode_text_dataset(dataset, self.tokenizer, self.config.context)

    def check_dataset(self, dataset, data_name: str | None = None) -> None:
        """Raise ValueError when the dataset's tokens are not this model's (vocabulary or tokenizer)."""
        self.check_data(dataset, data_name)
        name = f"data {str(data_name)!r}" if data_name is not None else "the data"
        given = getattr(dataset, "tokenizer", None)
        if self._token_bytes is not None:
            if given is None:
                raise ValueError(f"{name} is byte windows, but this CharLSTM uses a BPE tokenizer; encode it "
                                 "with model.prepare_dataset(dataset)")
            if given.to_json() != self.tokenizer.to_json():
                raise ValueError(f"{name} was encoded with another tokenizer than this CharLSTM's")
        elif getattr(given, "kind", "byte") == "bpe":
            raise ValueError(f"{name} is BPE token windows, but this CharLSTM has no tokenizer (tokenizer_json)")
        vocab = getattr(dataset, "vocab_size", None)
        if vocab is not None and int(vocab) > self.config.vocab_size:
            raise ValueError(f"{name} has {vocab} tokens, more than this CharLSTM's vocab_size "
                             f"{self.config.vocab_size}")


__all__ = ["CharLSTM", "CharLSTMConfig"]
