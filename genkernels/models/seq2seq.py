"""Seq2SeqTransformer: an encoder-decoder transformer (cross-attention) with cached greedy and beam decoding.

Network (pre-norm, as the "pre-LN" Transformer):

    src (B, S) -> embed [+ positions] -> encoder_depth x EncoderLayer -> norm -> memory (B, S, dim)
    EncoderLayer: x + self_attn(norm(x)) (bidirectional; padded source keys masked out through the
                  fused attention's key_padding_mask), then x + mlp(norm(x))
    tgt_in (B, T) -> embed [+ positions] -> decoder_depth x DecoderLayer -> norm -> head (B, T, V)
    DecoderLayer: x + self_attn(norm(x)) (causal), x + cross_attn(norm(x), memory) (source padding
                  masked), then x + mlp(norm(x))
Positions are sinusoidal (fixed) or learned (one table for the source, one for the target, initialised
to the sinusoidal values); the token embedding is shared by source, target and the output head, and
scaled by sqrt(dim) at the input (Vaswani et al.), so tokens and positions enter at the same
scale. mlp SwiGLU or GELU-tanh, norm RMSNorm or LayerNorm: the genkernels fused layers.

Loss: teacher-forced next-token NLL on the target (BOS + answer + EOS), padding ignored
(ignore_index), through genkernels.ops.linear_cross_entropy, so the (B*T, V) logits are not stored.

Decoding (`greedy_decode`, `beam_search`): the source is encoded once. Each decoder layer then
holds two caches: the cross-attention keys/values, projected from the memory at the first step and
reused by every later step (the cross cache), and the self-attention KV cache, to which each step
appends one position and which the new token reads through attention_decode. So a step costs one
token's work, not a re-run of the prefix. Beam search keeps B x beam_size rows and reorders every
self-attention cache by the surviving beams' parent index after each step (the cross caches need
no reordering: all beams of a source share its memory). `use_cache=False` re-runs the decoder on
the whole prefix at every step instead (the reference; the tests check both give the same tokens).
"""
from __future__ import annotations

import dataclasses
import math
from collections import Counter
from typing import Any

import torch
from torch import nn

from genkernels.data.seq2seq_tasks import BOS, EOS, PAD, Seq2SeqTaskDataset, TASKS, VOCAB_SIZE, decode, encode
from genkernels.models._validate import check_bool, check_choice, check_int, check_real, evaluation_count
from genkernels.models.base import GenerativeModel
from genkernels.nn.attention import CrossAttention, KVCache, SelfAttention
from genkernels.nn.transformer_layers import GeluMLP, LayerNorm, RMSNorm, SwiGLU, sinusoidal_table
from genkernels.ops.linear_cross_entropy import linear_cross_entropy

MLPS = ("swiglu", "gelu")
NORMS = ("rms", "layer")
POSITIONS = ("sinusoidal", "learned")
IGNORE = -100


@dataclasses.dataclass
class Seq2SeqConfig:
    """vocab_size: the task vocabulary (genkernels.data.seq2seq_tasks: PAD 0, BOS 1, EOS 2, characters);
    max_src_len / max_tgt_len: longest source / target (BOS and EOS included); task: the generated
    task `sample` draws held-out problems from ("" for none)."""

    vocab_size: int = VOCAB_SIZE
    dim: int = 64
    encoder_depth: int = 2
    decoder_depth: int = 2
    num_heads: int = 4
    positions: str = "sinusoidal"
    max_src_len: int = 32
    max_tgt_len: int = 32
    dropout: float = 0.0
    norm: str = "rms"
    mlp: str = "swiglu"
    bias: bool = False
    task: str = ""
    pad_id: int = PAD
    bos_id: int = BOS
    eos_id: int = EOS

    def __post_init__(self):
        for name, minimum in (("vocab_size", 3), ("dim", 1), ("encoder_depth", 1), ("decoder_depth", 1),
                              ("num_heads", 1), ("max_src_len", 1), ("max_tgt_len", 2)):
            setattr(self, name, check_int(f"Seq2SeqConfig.{name}", getattr(self, name), minimum))
        self.positions = check_choice("Seq2SeqConfig.positions", self.positions, POSITIONS)
        self.norm = check_choice("Seq2SeqConfig.norm", self.norm, NORMS)
        self.mlp = check_choice("Seq2SeqConfig.mlp", self.mlp, MLPS)
        self.bias = check_bool("Seq2SeqConfig.bias", self.bias)
        self.dropout = check_real("Seq2SeqConfig.dropout", self.dropout, 0.0)
        if self.dropout >= 1.0:
            raise ValueError(f"Seq2SeqConfig.dropout must be < 1, got {self.dropout}")
        if self.dim % self.num_heads:
            raise ValueError(f"Seq2SeqConfig.dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        if self.task not in ("",) + TASKS:
            raise ValueError(f"Seq2SeqConfig.task must be one of {('',) + TASKS}, got {self.task!r}")
        for name in ("pad_id", "bos_id", "eos_id"):
            value = check_int(f"Seq2SeqConfig.{name}", getattr(self, name), 0)
            if value >= self.vocab_size:
                raise ValueError(f"Seq2SeqConfig.{name} must be < vocab_size ({self.vocab_size}), got {value}")
        if len({self.pad_id, self.bos_id, self.eos_id}) != 3:
            raise ValueError(f"Seq2SeqConfig: pad_id, bos_id and eos_id must differ, got {self.pad_id}, "
                             f"{self.bos_id}, {self.eos_id}")


def _norm(c: Seq2SeqConfig) -> nn.Module:
    return RMSNorm(c.dim) if c.norm == "rms" else LayerNorm(c.dim)


def _mlp(c: Seq2SeqConfig) -> nn.Module:
    return SwiGLU(c.dim, bias=c.bias) if c.mlp == "swiglu" else GeluMLP(c.dim, bias=c.bias)


class EncoderLayer(nn.Module):
    """x + self_attn(norm1(x)) (bidirectional, padded keys masked), then x + mlp(norm2(x))."""

    def __init__(self, c: Seq2SeqConfig):
        super().__init__()
        self.norm1, self.norm2 = _norm(c), _norm(c)
        self.attn = SelfAttention(c.dim, c.num_heads, bias=c.bias, causal=False)
        self.mlp = _mlp(c)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:  # (B, S, dim), (B, S) bool
        x = x + self.drop(self.attn(self.norm1(x), key_padding_mask=padding))
        return x + self.drop(self.mlp(self.norm2(x)))


class DecoderLayer(nn.Module):
    """x + self_attn(norm1(x)) (causal), x + cross_attn(norm2(x), memory), then x + mlp(norm3(x)).

    self_cache / cross_cache (KVCache): decoding; self_cache gets x's T new positions appended,
    cross_cache holds the projected memory after the first call (memory is then not read)."""

    def __init__(self, c: Seq2SeqConfig):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = _norm(c), _norm(c), _norm(c)
        self.self_attn = SelfAttention(c.dim, c.num_heads, bias=c.bias, causal=True)
        self.cross_attn = CrossAttention(c.dim, num_heads=c.num_heads, bias=c.bias)
        self.mlp = _mlp(c)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x, memory, memory_padding, self_cache=None, cross_cache=None):
        x = x + self.drop(self.self_attn(self.norm1(x), kv_cache=self_cache))
        x = x + self.drop(self.cross_attn(self.norm2(x), memory, memory_padding, kv_cache=cross_cache))
        return x + self.drop(self.mlp(self.norm3(x)))


class Seq2SeqTransformer(GenerativeModel):
    """Encoder-decoder transformer; see the module docstring for the network, loss and decoding."""

    name = "seq2seq"
    config_class = Seq2SeqConfig
    default_data = "arithmetic"
    data_kinds = ("seq2seq",)
    train_defaults = {"steps": 3000, "batch_size": 128, "lr": 3e-3, "warmup_steps": 100, "weight_decay": 0.01,
                      "eval_every": 500, "eval_max_items": 256, "num_samples": 16, "ema_decay": 0.0}
    metric_units = {"loss": "nats/token"}

    def __init__(self, config: Seq2SeqConfig | None = None):
        super().__init__(config if config is not None else Seq2SeqConfig())
        c = self.config
        self.embed = nn.Embedding(c.vocab_size, c.dim)
        self.embed_scale = math.sqrt(c.dim)
        if c.positions == "learned":
            self.src_pos = nn.Parameter(sinusoidal_table(c.max_src_len, c.dim))
            self.tgt_pos = nn.Parameter(sinusoidal_table(c.max_tgt_len, c.dim))
        else:
            self.register_buffer("src_pos", sinusoidal_table(c.max_src_len, c.dim), persistent=False)
            self.register_buffer("tgt_pos", sinusoidal_table(c.max_tgt_len, c.dim), persistent=False)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(c) for _ in range(c.encoder_depth))
        self.encoder_norm = _norm(c)
        self.decoder = nn.ModuleList(DecoderLayer(c) for _ in range(c.decoder_depth))
        self.decoder_norm = _norm(c)
        self._init_weights()

    def _init_weights(self):
        """Linears N(0, 1/fan_in), residual output projections further scaled by 1/sqrt(2 * layers)
        (GPT-2); the embedding N(0, 1/dim), so embed * sqrt(dim) has unit scale and the tied head's
        logits start near 1. GPT-2's fixed std 0.02 is far below 1/sqrt(fan_in) at these widths and
        starts attention so flat that it barely learns where to look: on `reverse` (length <= 6, dim
        64, 400 steps of 128) it stayed at 0% exact match where this init reached 94%."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=module.in_features ** -0.5)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.embed.weight, std=self.config.dim ** -0.5)
        for layers in (self.encoder, self.decoder):
            for layer in layers:
                last = layer.mlp.w2 if isinstance(layer.mlp, SwiGLU) else layer.mlp.fc2
                outs = [layer.attn.out] if isinstance(layer, EncoderLayer) else [layer.self_attn.out,
                                                                                 layer.cross_attn.out]
                for linear in outs + [last]:
                    nn.init.normal_(linear.weight, std=linear.in_features ** -0.5 / math.sqrt(2 * len(layers)))

    @property
    def head_weight(self) -> torch.Tensor:  # (V, dim), tied to the embedding
        return self.embed.weight

    # -- checks -----------------------------------------------------------------------------------
    def _check_tokens(self, tokens, name: str, max_len: int) -> torch.Tensor:
        """tokens (B, L) int64 in [0, V) with 1 <= L <= max_len."""
        c = self.config
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.dtype != torch.int64:
            got = (f"a {tokens.dtype} tensor of shape {tuple(tokens.shape)}" if isinstance(tokens, torch.Tensor)
                   else type(tokens).__name__)
            raise ValueError(f"{name} must be an int64 tensor (B, L), got {got}")
        if not 1 <= tokens.shape[1] <= max_len or tokens.shape[0] == 0:
            raise ValueError(f"{name} must have 1 to {max_len} positions and a non-empty batch, got shape "
                             f"{tuple(tokens.shape)}")
        if int(tokens.min()) < 0 or int(tokens.max()) >= c.vocab_size:
            raise ValueError(f"{name} must lie in [0, vocab_size = {c.vocab_size}), got values from "
                             f"{int(tokens.min())} to {int(tokens.max())}")
        return tokens

    def _check_src(self, src) -> torch.Tensor:
        src = self._check_tokens(src, "src", self.config.max_src_len)
        empty = (src == self.config.pad_id).all(dim=1)
        if bool(empty.any()):
            raise ValueError(f"src row {int(empty.nonzero()[0, 0])} is all padding: every source needs a token")
        return src

    # -- network ----------------------------------------------------------------------------------
    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) right-padded with pad_id -> memory (B, S, dim), padding (B, S) bool (True = pad)."""
        self._check_src(src)
        padding = src == self.config.pad_id
        x = self.drop(self.embed(src) * self.embed_scale + self.src_pos[:src.shape[1]])
        for layer in self.encoder:
            x = layer(x, padding)
        return self.encoder_norm(x), padding

    def decode_hidden(self, tgt_in: torch.Tensor, memory: torch.Tensor, padding: torch.Tensor,
                      caches: list[tuple[KVCache, KVCache]] | None = None, start: int = 0) -> torch.Tensor:
        """Target tokens (B, T) at positions start.. -> final-norm hidden states (B, T, dim).

        caches: one (self, cross) KVCache pair per decoder layer for decoding (self caches hold the
        `start` earlier positions); None: the plain causal pass over tgt_in (training, reference)."""
        x = self.drop(self.embed(tgt_in) * self.embed_scale + self.tgt_pos[start:start + tgt_in.shape[1]])
        for i, layer in enumerate(self.decoder):
            self_cache, cross_cache = caches[i] if caches is not None else (None, None)
            x = layer(x, memory, padding, self_cache, cross_cache)
        return self.decoder_norm(x)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """src (B, S), tgt_in (B, T) (BOS + target prefix) -> next-token logits (B, T, V), no cache."""
        self._check_tokens(tgt_in, "tgt_in", self.config.max_tgt_len)
        memory, padding = self.encode(src)
        return self.decode_hidden(tgt_in, memory, padding) @ self.head_weight.t()

    # -- training ---------------------------------------------------------------------------------
    def _split(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """A collated (src (B, S), tgt (B, T)) batch, trimmed to its longest source / target."""
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(f"batch must be a pair (src (B, S), tgt (B, T)), got {type(batch).__name__}"
                             + (f" of {len(batch)} entries" if isinstance(batch, (tuple, list)) else ""))
        src, tgt = batch
        self._check_tokens(src, "batch src", self.config.max_src_len)
        self._check_tokens(tgt, "batch tgt", self.config.max_tgt_len)
        if src.shape[0] != tgt.shape[0] or tgt.shape[1] < 2:
            raise ValueError(f"batch src and tgt must have the same batch size and tgt >= 2 positions (BOS ...), "
                             f"got shapes {tuple(src.shape)} and {tuple(tgt.shape)}")
        pad = self.config.pad_id
        src = src[:, :max(1, int((src != pad).sum(dim=1).max()))]
        tgt = tgt[:, :max(2, int((tgt != pad).sum(dim=1).max()))]
        return src, tgt

    def _hidden_and_targets(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        src, tgt = self._split(batch)
        memory, padding = self.encode(src)
        h = self.decode_hidden(tgt[:, :-1], memory, padding)  # (B, T - 1, dim)
        targets = tgt[:, 1:].masked_fill(tgt[:, 1:] == self.config.pad_id, IGNORE)  # (B, T - 1)
        return h.reshape(-1, h.shape[-1]), targets.reshape(-1)

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """batch (src, tgt) -> {"loss": mean NLL in nats per target token (BOS excluded, EOS included,
        padding ignored)}."""
        h, targets = self._hidden_and_targets(batch)
        return {"loss": linear_cross_entropy(h, self.head_weight, targets, ignore_index=IGNORE)}

    # -- decoding ---------------------------------------------------------------------------------
    def _as_src(self, src) -> tuple[torch.Tensor, bool]:
        """src as a (B, S) tensor, a list of token lists or a list of strings -> (tensor, given as strings)."""
        c = self.config
        device = self.head_weight.device
        if isinstance(src, str):
            raise TypeError("src must be a list of strings (or token lists, or a (B, S) tensor), got one str; "
                            "wrap it in a list")
        if isinstance(src, torch.Tensor):
            return self._check_src(src.to(device)), False
        if not isinstance(src, (list, tuple)) or not src:
            raise TypeError(f"src must be a (B, S) int64 tensor or a non-empty list of strings or token lists, "
                            f"got {src!r:.80}")
        as_strings = all(isinstance(s, str) for s in src)
        rows = []
        for i, s in enumerate(src):
            if as_strings:
                s = encode(s)
            elif isinstance(s, torch.Tensor) and s.dim() == 1 and not s.is_floating_point():
                s = s.tolist()
            if not isinstance(s, (list, tuple)) or any(isinstance(t, bool) or not isinstance(t, int) for t in s):
                raise TypeError(f"src[{i}] must be a str or a list of int token ids, got {s!r:.80}")
            if not 1 <= len(s) <= c.max_src_len:
                raise ValueError(f"src[{i}] has {len(s)} tokens; sources need 1 to max_src_len = {c.max_src_len}")
            rows.append(list(s))
        tensor = torch.full((len(rows), max(map(len, rows))), c.pad_id, dtype=torch.int64)
        for i, row in enumerate(rows):
            tensor[i, :len(row)] = torch.tensor(row, dtype=torch.int64)
        return self._check_src(tensor.to(device)), as_strings

    def _check_max_len(self, max_len) -> int:
        limit = self.config.max_tgt_len - 1
        if max_len is None:
            return limit
        max_len = check_int("max_len", max_len, 1)
        if max_len > limit:
            raise ValueError(f"max_len must be <= max_tgt_len - 1 = {limit} (positions after BOS), got {max_len}")
        return max_len

    def _new_caches(self, rows: int, max_len: int, src_len: int) -> list[tuple[KVCache, KVCache]]:
        c = self.config
        weight = self.head_weight
        return [(layer.self_attn.new_cache(rows, max_len),
                 KVCache(rows, src_len, c.num_heads, c.dim // c.num_heads, device=weight.device, dtype=weight.dtype))
                for layer in self.decoder]

    def _step_logits(self, prefix: torch.Tensor, memory, padding, caches) -> torch.Tensor:
        """Log-probabilities (R, V) of the next token after each row's prefix (R, t + 1), over the tokens
        other than PAD and BOS (which are never generated).

        caches: the cached step (only prefix[:, -1] is fed, at position t); None: the whole prefix
        is re-run (reference)."""
        if caches is None:
            h = self.decode_hidden(prefix, memory, padding)[:, -1]
        else:
            h = self.decode_hidden(prefix[:, -1:], memory, padding, caches, start=prefix.shape[1] - 1)[:, 0]
        logits = (h @ self.head_weight.t()).float()
        logits[:, [self.config.pad_id, self.config.bos_id]] = float("-inf")  # never generated
        return logits.log_softmax(dim=-1)

    @torch.no_grad()
    def greedy_decode(self, src, max_len: int | None = None, use_cache: bool = True) -> list[list[int]]:
        """The argmax target of each source: B lists of token ids (without BOS and EOS).

        src: a (B, S) int64 tensor right-padded with pad_id, or a list of strings / token lists of
        different lengths; max_len: tokens generated at most, EOS included (default max_tgt_len - 1)."""
        c = self.config
        src, _ = self._as_src(src)
        max_len = self._check_max_len(max_len)
        use_cache = check_bool("use_cache", use_cache)
        memory, padding = self.encode(src)
        batch = src.shape[0]
        caches = self._new_caches(batch, max_len, src.shape[1]) if use_cache else None
        prefix = torch.full((batch, 1), c.bos_id, dtype=torch.int64, device=src.device)
        done = torch.zeros(batch, dtype=torch.bool, device=src.device)
        for _ in range(max_len):
            new = self._step_logits(prefix, memory, padding, caches).argmax(dim=-1)  # (B,)
            new = new.masked_fill(done, c.pad_id)
            prefix = torch.cat([prefix, new[:, None]], dim=1)
            done |= new == c.eos_id
            if bool(done.all()):
                break
        return [self._strip(row) for row in prefix[:, 1:].tolist()]

    def _strip(self, tokens: list[int]) -> list[int]:
        """Generated tokens up to (without) the first EOS, padding dropped."""
        c = self.config
        out = []
        for t in tokens:
            if t == c.eos_id:
                break
            if t != c.pad_id:
                out.append(t)
        return out

    @torch.no_grad()
    def beam_search(self, src, beam_size: int = 4, max_len: int | None = None, length_penalty: float = 0.6,
                    use_cache: bool = True) -> list[list[int]]:
        """The best of beam_size hypotheses per source: B lists of token ids (without BOS and EOS).

        Every step extends each live beam by every token and keeps the beam_size best sums of
        log-probabilities per source; a finished beam (EOS produced) stays in the beam with its
        score, extended by padding at no cost. The answer is the hypothesis of the highest
        score / ((5 + length) / 6) ** length_penalty (GNMT's normalisation, length with EOS; 0: raw
        log-probability). beam_size 1 is greedy decoding."""
        c = self.config
        src, _ = self._as_src(src)
        beam_size = check_int("beam_size", beam_size, 1)
        max_len = self._check_max_len(max_len)
        length_penalty = check_real("length_penalty", length_penalty, 0.0)
        use_cache = check_bool("use_cache", use_cache)
        memory, padding = self.encode(src)
        batch, vocab, k = src.shape[0], c.vocab_size, beam_size
        device = src.device
        memory, padding = memory.repeat_interleave(k, dim=0), padding.repeat_interleave(k, dim=0)  # (B k, S, .)
        caches = self._new_caches(batch * k, max_len, src.shape[1]) if use_cache else None
        prefix = torch.full((batch * k, 1), c.bos_id, dtype=torch.int64, device=device)
        scores = torch.full((batch, k), float("-inf"), device=device)
        scores[:, 0] = 0.0  # one live hypothesis per source at the start (the others are copies)
        done = torch.zeros(batch * k, dtype=torch.bool, device=device)
        lengths = torch.zeros(batch * k, dtype=torch.int64, device=device)  # tokens incl. EOS
        finished_row = torch.full((vocab,), float("-inf"), device=device)
        finished_row[c.pad_id] = 0.0
        for _ in range(max_len):
            logp = self._step_logits(prefix, memory, padding, caches)  # (B k, V)
            logp = torch.where(done[:, None], finished_row, logp)
            candidates = (scores.reshape(-1, 1) + logp).reshape(batch, k * vocab)
            scores, flat = candidates.topk(k, dim=-1)  # (B, k)
            parent = (flat // vocab + torch.arange(batch, device=device)[:, None] * k).reshape(-1)  # (B k,)
            new = (flat % vocab).reshape(-1)
            prefix = torch.cat([prefix[parent], new[:, None]], dim=1)
            lengths = lengths[parent] + (~done[parent]).long()
            done = done[parent] | (new == c.eos_id)
            if caches is not None:
                for self_cache, _ in caches:  # the cross caches are equal across a source's beams
                    self_cache.k = self_cache.k.index_select(0, parent)
                    self_cache.v = self_cache.v.index_select(0, parent)
            if bool(done.all()):
                break
        penalty = ((5.0 + lengths.float()) / 6.0) ** length_penalty
        best = (scores.reshape(-1) / penalty).reshape(batch, k).argmax(dim=-1)  # (B,)
        rows = best + torch.arange(batch, device=device) * k
        return [self._strip(row) for row in prefix[rows, 1:].tolist()]

    @torch.no_grad()
    def generate(self, src, beam_size: int = 1, max_len: int | None = None, length_penalty: float = 0.6,
                 use_cache: bool = True) -> list:
        """Decode each source: strings in, strings out (the task vocabulary); token lists or a tensor in,
        token lists out. beam_size 1: greedy, else beam search."""
        _, as_strings = self._as_src(src)
        if check_int("beam_size", beam_size, 1) == 1:
            out = self.greedy_decode(src, max_len, use_cache=use_cache)
        else:
            out = self.beam_search(src, beam_size, max_len, length_penalty=length_penalty, use_cache=use_cache)
        return [decode(o) for o in out] if as_strings else out

    # -- sampling (CLI) -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, problems: list[str] | None = None, split: str = "test", beam_size: int = 1,
               seed: int = 0) -> torch.Tensor:
        """Decode n problems: `problems` (strings) when given, else the first n of the task's `split`
        (seed: the dataset seed). Returns (n, 3, L) int64: rows source, target (padding when unknown)
        and prediction (BOS + tokens + EOS), each padded with pad_id; sample_files writes them out."""
        c = self.config
        n = check_int("n", n, 1)
        if problems is not None:
            if isinstance(problems, str):
                problems = [problems]
            if not isinstance(problems, (list, tuple)) or not all(isinstance(p, str) for p in problems):
                raise TypeError(f"problems must be a list of strings, got {problems!r:.80}")
            pairs = [(p, None) for p in list(problems)[:n]]
            if len(pairs) < n:
                raise ValueError(f"problems holds {len(pairs)} problems, fewer than n = {n}")
        else:
            if not c.task:
                raise ValueError("this model has no task (config.task is empty): pass problems=[...]")
            pairs = Seq2SeqTaskDataset(c.task, split, size=n, seed=seed).problems
        predictions = self.generate([p for p, _ in pairs], beam_size=beam_size)
        width = max(c.max_src_len, c.max_tgt_len)
        out = torch.full((n, 3, width), c.pad_id, dtype=torch.int64)
        for i, ((source, target), pred) in enumerate(zip(pairs, predictions)):
            for row, tokens in ((0, encode(source)), (1, [c.bos_id, *encode(target), c.eos_id] if target else []),
                                (2, [c.bos_id, *encode(pred), c.eos_id])):
                tokens = tokens[:width]
                out[i, row, :len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
        return out

    def sample_files(self, samples: torch.Tensor) -> dict[str, bytes]:
        """samples.txt: one line per problem, "source -> prediction (target: ..., ok|WRONG)"."""
        lines = []
        for source, target, pred in samples.long().cpu():
            source, target, pred = decode(source), decode(target), decode(pred)
            if target:
                lines.append(f"{source} -> {pred}   (target {target}, {'ok' if pred == target else 'WRONG'})")
            else:
                lines.append(f"{source} -> {pred}")
        return {"samples.txt": ("\n".join(lines) + "\n").encode("utf-8")}

    # -- evaluation ---------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, dataset, *, max_items: int | None = None, batch_size: int = 256,
                 beam_size: int = 4) -> dict[str, float]:
        """Exact-match accuracy of greedy decoding (and of beam search, beam_size > 1), teacher-forced
        token accuracy, and baselines on the same items: the majority answer's accuracy (the most
        common target among them) and copy-the-source's."""
        count = evaluation_count(dataset, max_items, batch_size)
        beam_size = check_int("beam_size", beam_size, 0)
        c = self.config
        device = self.head_weight.device
        greedy_hits = beam_hits = token_hits = token_count = 0
        targets_text, sources_text = [], []
        for begin in range(0, count, batch_size):
            items = [dataset[i] for i in range(begin, min(count, begin + batch_size))]
            src = torch.stack([s for s, _ in items]).to(device)
            tgt = torch.stack([t for _, t in items]).to(device)
            src, tgt = self._split((src, tgt))
            h, targets = self._hidden_and_targets((src, tgt))
            valid = targets != IGNORE
            token_hits += int(((h @ self.head_weight.t()).argmax(dim=-1) == targets)[valid].sum())
            token_count += int(valid.sum())
            truth = [self._strip(row) for row in tgt[:, 1:].tolist()]
            greedy = self.greedy_decode(src)
            greedy_hits += sum(p == t for p, t in zip(greedy, truth))
            if beam_size > 1:
                beams = self.beam_search(src, beam_size)
                beam_hits += sum(p == t for p, t in zip(beams, truth))
            targets_text += [tuple(t) for t in truth]
            sources_text += [tuple(self._strip(row)) for row in src.tolist()]
        majority = Counter(targets_text).most_common(1)[0][1]
        metrics = {"exact_match": greedy_hits / count}
        if beam_size > 1:
            metrics[f"exact_match_beam{beam_size}"] = beam_hits / count
        metrics.update(token_accuracy=token_hits / token_count, majority_answer_exact_match=majority / count,
                       copy_source_exact_match=sum(s == t for s, t in zip(sources_text, targets_text)) / count)
        return metrics

    # -- fitting to data ----------------------------------------------------------------------------
    @classmethod
    def config_for_data(cls, dataset, overrides: dict[str, Any] | None = None, *,
                        data_name: str | None = None) -> Seq2SeqConfig:
        """vocab_size, max_src_len, max_tgt_len, the special ids and the task from the dataset."""
        cls.check_data(dataset, data_name)
        values = dict(overrides or {})
        for field, attribute in (("vocab_size", "vocab_size"), ("max_src_len", "max_src_len"),
                                 ("max_tgt_len", "max_tgt_len"), ("pad_id", "pad_id"), ("bos_id", "bos_id"),
                                 ("eos_id", "eos_id"), ("task", "task")):
            if getattr(dataset, attribute, None) is not None:
                values.setdefault(field, getattr(dataset, attribute))
        return cls.config_class(**values)

    def check_dataset(self, dataset, data_name: str | None = None) -> None:
        self.check_data(dataset, data_name)
        c = self.config
        for field in ("vocab_size", "max_src_len", "max_tgt_len"):
            have = getattr(dataset, field, None)
            if have is not None and have > getattr(c, field):
                name = f"data {str(data_name)!r}" if data_name is not None else "the data"
                raise ValueError(f"{name} has {field} = {have}, more than this model's {getattr(c, field)}")


__all__ = ["Seq2SeqTransformer", "Seq2SeqConfig", "EncoderLayer", "DecoderLayer"]
