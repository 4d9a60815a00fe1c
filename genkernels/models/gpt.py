"""GPT: a decoder-only transformer over bytes (or any token ids), with KV-cached generation.

Network (pre-norm, as GPT-2 / Llama):

    tokens (B, T) -> embed (B, T, dim) [+ learned positions] -> depth x Block -> norm -> head (B, T, V)
    Block: x + attn(norm(x)), then x + mlp(norm(x)); attn is causal self-attention with optional
    grouped-query heads (num_kv_heads < num_heads) and rotary or learned positions; mlp is
    SwiGLU (Llama) or GELU-tanh (GPT-2); norm is RMSNorm or LayerNorm. The head is tied to the
    embedding by default.

Loss: next-token NLL through genkernels.ops.linear_cross_entropy (the final linear layer and the
loss fused in chunks, so the (B*T, V) logits are never stored), reported in nats per token and,
for the byte-level default, bits per byte (nats / ln 2).

Generation (`generate`): prompts of different lengths are right-padded into one batch and
prefilled in one causal pass, which fills a KV cache per layer (a padded position only ever
sits after its sequence's real tokens, so causality alone keeps it out of every real row). Each
sequence then keeps its own cache length: step s writes sequence b's new key/value at position
len_b + s, rotates q/k at that position, and attends through attention_decode with
cache_seqlens = len_b + s + 1, so nothing but the new token is computed per step (no re-run of
the context, as nanoGPT/minGPT do). The result equals re-running the whole context for every
token with the plain forward (tests/models/test_gpt.py checks it token for token).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable

import torch
from torch import nn

from genkernels.models._validate import (check_bool, check_choice, check_int, check_real,
                                         evaluation_count)
from genkernels.models.base import GenerativeModel
from genkernels.nn.attention import KVCache
from genkernels.nn.transformer_layers import GeluMLP, LayerNorm, RMSNorm, RotaryEmbedding, SwiGLU
from genkernels.ops.attention import attention
from genkernels.ops.attention_decode import attention_decode
from genkernels.ops.linear_cross_entropy import linear_cross_entropy

MLPS = ("swiglu", "gelu")
NORMS = ("rms", "layer")
POSITIONS = ("rope", "learned")


@dataclasses.dataclass
class GPTConfig:
    """vocab_size 256 = bytes; context = the longest sequence (training window, and prompt +
    generated tokens); num_kv_heads None = num_heads (plain multi-head), fewer = GQA."""

    vocab_size: int = 256
    context: int = 256
    dim: int = 192
    depth: int = 4
    num_heads: int = 6
    num_kv_heads: int | None = None
    mlp: str = "swiglu"
    norm: str = "rms"
    positions: str = "rope"
    tie_embeddings: bool = True
    dropout: float = 0.0
    bias: bool = False
    rope_base: float = 10000.0

    def __post_init__(self):
        for name, minimum in (("vocab_size", 2), ("context", 1), ("dim", 1), ("depth", 1), ("num_heads", 1)):
            setattr(self, name, check_int(f"GPTConfig.{name}", getattr(self, name), minimum))
        if self.num_kv_heads is not None:
            self.num_kv_heads = check_int("GPTConfig.num_kv_heads", self.num_kv_heads, 1)
        self.mlp = check_choice("GPTConfig.mlp", self.mlp, MLPS)
        self.norm = check_choice("GPTConfig.norm", self.norm, NORMS)
        self.positions = check_choice("GPTConfig.positions", self.positions, POSITIONS)
        self.tie_embeddings = check_bool("GPTConfig.tie_embeddings", self.tie_embeddings)
        self.bias = check_bool("GPTConfig.bias", self.bias)
        self.dropout = check_real("GPTConfig.dropout", self.dropout, 0.0)
        if self.dropout >= 1.0:
            raise ValueError(f"GPTConfig.dropout must be < 1, got {self.dropout}")
        self.rope_base = check_real("GPTConfig.rope_base", self.rope_base, 1.0)
        if self.dim % self.num_heads:
            raise ValueError(f"GPTConfig.dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        if self.num_heads % self.kv_heads:
            raise ValueError(f"GPTConfig.num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                             f"({self.num_kv_heads})")
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(f"GPTConfig: rotary positions need an even head dim, got dim / num_heads = "
                             f"{self.head_dim}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads


class GPTAttention(nn.Module):
    """Causal self-attention with GQA and rotary positions; three modes:

    plain   (cache None): attention over x's own T tokens (training, uncached inference)
    prefill (cache, decode=False): the same, and the keys/values are written to cache[:, :T]
    decode  (cache, decode=True, T = 1): sequence b's key/value go to cache position lengths[b],
            the query attends to the cache's first lengths[b] + 1 positions (attention_decode)
    """

    def __init__(self, c: GPTConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.kv_heads, c.head_dim
        self.qkv = nn.Linear(c.dim, (c.num_heads + 2 * c.kv_heads) * c.head_dim, bias=c.bias)
        self.out = nn.Linear(c.num_heads * c.head_dim, c.dim, bias=c.bias)
        self.rotary = (RotaryEmbedding(c.head_dim, max_positions=c.context, base=c.rope_base)
                       if c.positions == "rope" else None)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, lengths: torch.Tensor | None = None,
                decode: bool = False) -> torch.Tensor:
        batch, tgt_len, _ = x.shape
        kv_width = self.num_kv_heads * self.head_dim
        q, k, v = self.qkv(x).split([self.num_heads * self.head_dim, kv_width, kv_width], dim=-1)
        q = q.view(batch, tgt_len, self.num_heads, self.head_dim)  # (B, T, H, D)
        k = k.view(batch, tgt_len, self.num_kv_heads, self.head_dim)  # (B, T, Hkv, D)
        v = v.view(batch, tgt_len, self.num_kv_heads, self.head_dim)
        offset = lengths if decode else 0  # decode: token of sequence b sits at position lengths[b]
        if self.rotary is not None:
            q, k = self.rotary(q, k, offset)
        if not decode:
            if cache is not None:  # prefill
                cache.k[:, :tgt_len] = k
                cache.v[:, :tgt_len] = v
            out = attention(q, k, v, causal=True)  # (B, T, H, D)
        else:
            rows = torch.arange(batch, device=x.device)
            cache.k[rows, lengths] = k[:, 0]
            cache.v[rows, lengths] = v[:, 0]
            cache.seqlens.copy_(lengths + 1)
            out = attention_decode(q, cache.k, cache.v, cache.seqlens, causal=True)  # (B, 1, H, D)
        return self.out(out.reshape(batch, tgt_len, self.num_heads * self.head_dim))


class GPTBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x)) (dropout on each branch)."""

    def __init__(self, c: GPTConfig):
        super().__init__()
        norm = RMSNorm if c.norm == "rms" else LayerNorm
        self.norm1, self.norm2 = norm(c.dim), norm(c.dim)
        self.attn = GPTAttention(c)
        self.mlp = SwiGLU(c.dim, bias=c.bias) if c.mlp == "swiglu" else GeluMLP(c.dim, bias=c.bias)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x, cache=None, lengths=None, decode=False):  # (B, T, dim) -> (B, T, dim)
        x = x + self.drop(self.attn(self.norm1(x), cache, lengths, decode))
        return x + self.drop(self.mlp(self.norm2(x)))


def _as_prompts(prompt_tokens, vocab_size: int) -> list[list[int]]:
    """A (B, T) int tensor or a list of B non-empty token lists -> B lists of ints in [0, V)."""
    if isinstance(prompt_tokens, torch.Tensor):
        if prompt_tokens.dim() != 2 or prompt_tokens.is_floating_point() or prompt_tokens.is_complex() \
                or prompt_tokens.dtype == torch.bool:
            raise ValueError(f"prompt_tokens must be a (B, T) integer tensor or a list of token lists, got a "
                             f"{prompt_tokens.dtype} tensor of shape {tuple(prompt_tokens.shape)}")
        prompts = prompt_tokens.tolist()
    elif isinstance(prompt_tokens, (list, tuple)):
        prompts = []
        for i, p in enumerate(prompt_tokens):
            if isinstance(p, torch.Tensor):
                p = p.tolist() if p.dim() == 1 and not p.is_floating_point() else None
            if not isinstance(p, (list, tuple)) or any(isinstance(t, bool) or not isinstance(t, int) for t in p):
                raise TypeError(f"prompt_tokens[{i}] must be a list of int token ids, got {p!r:.80}")
            prompts.append(list(p))
    else:
        raise TypeError(f"prompt_tokens must be a (B, T) integer tensor or a list of token lists, got "
                        f"{type(prompt_tokens).__name__}")
    if not prompts:
        raise ValueError("prompt_tokens must hold at least one prompt, got none")
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt_tokens[{i}] is empty: every prompt needs at least one token")
        bad = [t for t in p if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"prompt_tokens[{i}] has token {bad[0]} outside [0, vocab_size = {vocab_size})")
    return prompts


def _filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """logits (B, V) with everything outside the top_k / nucleus top_p set to -inf."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each one
        drop_sorted = before >= top_p  # the first token is always kept (before = 0 < top_p)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


class GPT(GenerativeModel):
    """Decoder-only transformer; see the module docstring for the network, loss and generation."""

    name = "gpt"
    config_class = GPTConfig
    default_data = "text"
    data_kinds = ("text",)
    train_defaults = {"batch_size": 16, "lr": 1e-3, "warmup_steps": 100, "weight_decay": 0.1,
                      "eval_max_items": 64, "num_samples": 4}
    metric_units = {"loss": "nats/byte", "bits_per_byte": "bits/byte", "zlib_bits_per_byte": "bits/byte",
                    "lzma_bits_per_byte": "bits/byte"}

    def __init__(self, config: GPTConfig | None = None):
        super().__init__(config if config is not None else GPTConfig())
        c = self.config
        self.embed = nn.Embedding(c.vocab_size, c.dim)
        self.pos_embed = nn.Embedding(c.context, c.dim) if c.positions == "learned" else None
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(GPTBlock(c) for _ in range(c.depth))
        self.norm = RMSNorm(c.dim) if c.norm == "rms" else LayerNorm(c.dim)
        self.head = None if c.tie_embeddings else nn.Linear(c.dim, c.vocab_size, bias=False)
        self._init_weights()

    def _init_weights(self):
        """GPT-2's: N(0, 0.02) linears and embeddings, residual output projections scaled by 1/sqrt(2 depth)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            last = block.mlp.w2 if isinstance(block.mlp, SwiGLU) else block.mlp.fc2
            for linear in (block.attn.out, last):
                nn.init.normal_(linear.weight, std=0.02 / math.sqrt(2 * self.config.depth))

    @property
    def head_weight(self) -> torch.Tensor:  # (V, dim)
        return self.embed.weight if self.head is None else self.head.weight

    # -- network ----------------------------------------------------------------------------------
    def _check_tokens(self, tokens, name: str = "tokens", extra: int = 0) -> torch.Tensor:
        """tokens (B, T) int64 in [0, V) with T <= context + extra (extra 1: windows of inputs + target)."""
        c = self.config
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.dtype != torch.int64:
            got = (f"a {tokens.dtype} tensor of shape {tuple(tokens.shape)}" if isinstance(tokens, torch.Tensor)
                   else type(tokens).__name__)
            raise ValueError(f"{name} must be an int64 tensor (B, T), got {got}")
        if tokens.shape[1] > c.context + extra:
            raise ValueError(f"{name} has {tokens.shape[1]} positions, more than the context ({c.context})"
                             + (f" + {extra}" if extra else ""))
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= c.vocab_size):
            raise ValueError(f"{name} must lie in [0, vocab_size = {c.vocab_size}), got values from "
                             f"{int(tokens.min())} to {int(tokens.max())}")
        return tokens

    def _embed(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, T) -> (B, T, dim); positions (B, T) for learned positions (default 0..T-1)."""
        x = self.embed(tokens)
        if self.pos_embed is not None:
            if positions is None:
                positions = torch.arange(tokens.shape[1], device=tokens.device)
            x = x + self.pos_embed(positions)
        return self.drop(x)

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) int64 -> final-norm hidden states (B, T, dim), no cache."""
        self._check_tokens(tokens)
        x = self._embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) int64 -> next-token logits (B, T, V) (the plain, uncached forward)."""
        return self.hidden(tokens) @ self.head_weight.t()

    def _split(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = batch[0] if isinstance(batch, (tuple, list)) else batch
        self._check_tokens(tokens, "batch", extra=1)
        if tokens.shape[1] < 2:
            raise ValueError(f"batch must be windows (B, T + 1) with T >= 1, got shape {tuple(tokens.shape)}")
        return tokens[:, :-1], tokens[:, 1:]

    def _nll(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        h = self.hidden(inputs)  # (B, T, dim)
        return linear_cross_entropy(h.reshape(-1, h.shape[-1]), self.head_weight, targets.reshape(-1))

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """batch (B, T + 1) int64 windows -> {"loss": mean next-token NLL in nats, "bits_per_byte"}."""
        nll = self._nll(*self._split(batch))
        return {"loss": nll, "bits_per_byte": nll.detach() / math.log(2)}

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x[:, 1:] | x[:, 0]) per sequence in nats, (B,), for tokens x (B, T + 1)."""
        inputs, targets = self._split(x)
        logits = self(inputs).float()
        return -nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none").sum(dim=1)

    @torch.no_grad()
    def evaluate(self, dataset, *, max_items: int | None = None, batch_size: int = 8) -> dict[str, float]:
        """Held-out bits per byte over the windows, beside zlib and lzma on the same bytes."""
        from genkernels.metrics.text import bits_per_byte, compression_baselines

        count = evaluation_count(dataset, max_items, batch_size)
        device = self.head_weight.device
        total, num = 0.0, 0
        for begin in range(0, count, batch_size):
            batch = torch.stack([dataset[i] for i in range(begin, min(count, begin + batch_size))]).to(device)
            inputs, targets = self._split(batch)
            total += float(self._nll(inputs, targets)) * targets.numel()
            num += targets.numel()
        metrics = {"bits_per_byte": bits_per_byte(total / num)}
        data = getattr(dataset, "data", None)
        if isinstance(data, torch.Tensor) and data.dtype == torch.uint8:
            stride = getattr(dataset, "stride", dataset[0].numel() - 1)
            span = data[:(count - 1) * stride + dataset[0].numel()]
            baselines = compression_baselines(span.numpy().tobytes())
            metrics.update(zlib_bits_per_byte=baselines["zlib"], lzma_bits_per_byte=baselines["lzma"])
        return metrics

    # -- generation ---------------------------------------------------------------------------------
    def new_caches(self, batch_size: int, max_seqlen: int) -> list[KVCache]:
        c, weight = self.config, self.head_weight
        return [KVCache(batch_size, max_seqlen, c.kv_heads, c.head_dim, device=weight.device, dtype=weight.dtype)
                for _ in self.blocks]

    def prefill(self, tokens: torch.Tensor, lengths: torch.Tensor, caches: list[KVCache]) -> torch.Tensor:
        """Right-padded prompts (B, T) of lengths (B,) -> logits (B, V) after each prompt's last token;
        fills caches[:, :T] (positions >= lengths[b] hold padding that decode steps overwrite)."""
        x = self._embed(tokens)
        for block, cache in zip(self.blocks, caches):
            x = block(x, cache)
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        last = self.norm(x[rows, lengths - 1])  # (B, dim)
        return last @ self.head_weight.t()

    def decode_step(self, tokens: torch.Tensor, lengths: torch.Tensor, caches: list[KVCache]) -> torch.Tensor:
        """One new token per sequence, tokens (B,), at positions lengths (B,) int64 -> logits (B, V)."""
        x = self._embed(tokens[:, None], lengths[:, None])  # (B, 1, dim)
        for block, cache in zip(self.blocks, caches):
            x = block(x, cache, lengths, decode=True)
        return self.norm(x[:, 0]) @ self.head_weight.t()

    @torch.no_grad()
    def generate(self, prompt_tokens, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None, stop_tokens: Iterable[int] | None = None,
                 stream: Callable[[int, torch.Tensor], Any] | None = None) -> list[list[int]]:
        """Continue each prompt by up to max_new_tokens tokens with the KV cache.

        prompt_tokens  a (B, T) integer tensor, or a list of B non-empty token lists of any lengths
        temperature    0: greedy (argmax); else sample softmax(logits / temperature)
        top_k, top_p   keep the k most likely tokens / the smallest set of mass >= top_p
        seed           seeds a torch.Generator for the draws (None: torch's global generator)
        stop_tokens    a sequence ends after producing one of these (included in its output); the
                       others go on
        stream         callback(step, tokens) with tokens (B,) int64 on the CPU as each step's tokens
                       come; -1 for a sequence that has already stopped
        Returns the B lists of generated tokens (without the prompt). Every prompt length plus
        max_new_tokens must fit in the context.
        """
        c = self.config
        prompts = _as_prompts(prompt_tokens, c.vocab_size)
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
        stops = set()
        if stop_tokens is not None:
            stop_tokens = [stop_tokens] if isinstance(stop_tokens, int) else stop_tokens
            try:
                stops = {check_int("stop_tokens[i]", t) for t in stop_tokens}
            except TypeError as error:
                raise TypeError(f"stop_tokens must be an int or an iterable of ints, "
                                f"got {stop_tokens!r:.80}") from error
        if stream is not None and not callable(stream):
            raise TypeError(f"stream must be a callable(step, tokens) or None, got {type(stream).__name__}")
        longest = max(len(p) for p in prompts)
        if longest + max_new_tokens > c.context:
            raise ValueError(f"the longest prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) exceed the "
                             f"context ({c.context})")
        outputs: list[list[int]] = [[] for _ in prompts]
        if max_new_tokens == 0:
            return outputs
        device = self.head_weight.device
        batch = len(prompts)
        tokens = torch.zeros(batch, longest, dtype=torch.int64, device=device)  # right-padded prompts
        for b, p in enumerate(prompts):
            tokens[b, :len(p)] = torch.tensor(p, dtype=torch.int64)
        lengths = torch.tensor([len(p) for p in prompts], dtype=torch.int64, device=device)
        generator = None
        if seed is not None and temperature > 0:
            generator = torch.Generator(device=device)
            generator.manual_seed(seed)
        caches = self.new_caches(batch, longest + max_new_tokens)
        logits = self.prefill(tokens, lengths, caches)  # (B, V)
        alive = [True] * batch
        for step in range(max_new_tokens):
            logits = logits.float()
            if temperature == 0:
                new = logits.argmax(dim=-1)
            else:
                probs = _filter_logits(logits / temperature, top_k, top_p).softmax(dim=-1)
                new = torch.multinomial(probs, 1, generator=generator)[:, 0]
            new_list = new.tolist()
            shown = []
            for b, t in enumerate(new_list):
                shown.append(t if alive[b] else -1)
                if alive[b]:
                    outputs[b].append(t)
                    alive[b] = t not in stops
            if stream is not None:
                stream(step, torch.tensor(shown, dtype=torch.int64))
            if not any(alive) or step == max_new_tokens - 1:
                break
            logits = self.decode_step(new, lengths + step, caches)
        return outputs

    @torch.no_grad()
    def generate_uncached(self, prompt_tokens, max_new_tokens: int) -> list[list[int]]:
        """Greedy continuation re-running the whole context for every token, one prompt at a time:
        the nanoGPT way, kept as the reference (and the baseline of the speed comparison)."""
        prompts = _as_prompts(prompt_tokens, self.config.vocab_size)
        device = self.head_weight.device
        outputs = []
        for p in prompts:
            seq = torch.tensor([p], dtype=torch.int64, device=device)
            for _ in range(max_new_tokens):
                last = self.hidden(seq)[:, -1]  # (1, dim)
                new = (last @ self.head_weight.t()).float().argmax(dim=-1, keepdim=True)
                seq = torch.cat([seq, new], dim=1)
            outputs.append(seq[0, len(p):].tolist())
        return outputs

    @torch.no_grad()
    def sample(self, n: int, prompt: str = "", max_new_tokens: int | None = None, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, seed: int | None = None) -> torch.Tensor:
        """n byte sequences (n, P + max_new_tokens) int64: the prompt's UTF-8 bytes (a newline when
        prompt is empty) followed by the generated bytes. max_new_tokens None: fill the context."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        start = list((prompt or "\n").encode("utf-8"))
        if self.config.vocab_size < 256:
            raise ValueError(f"sample(prompt=...) encodes UTF-8 bytes and needs vocab_size >= 256, got "
                             f"{self.config.vocab_size}; use generate() with token ids")
        if max_new_tokens is None:
            max_new_tokens = max(0, self.config.context - len(start))
        n = check_int("n", n, 1)
        generated = self.generate([start] * n, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                  seed=seed)
        return torch.tensor([start + g for g in generated], dtype=torch.int64)

    def sample_files(self, samples: torch.Tensor) -> dict[str, bytes]:
        """samples.txt: each sample's bytes decoded as UTF-8 (invalid bytes replaced)."""
        texts = [bytes(int(t) for t in row).decode("utf-8", errors="replace")
                 for row in samples.long().clamp(0, 255).cpu()]
        sep = "\n" + "-" * 40 + "\n"
        return {"samples.txt": sep.join(texts).encode("utf-8")}

    # -- fitting to data --------------------------------------------------------------------------
    @classmethod
    def config_for_data(cls, dataset, overrides: dict[str, Any] | None = None, *,
                        data_name: str | None = None) -> GPTConfig:
        """context from the dataset's windows (block_size), vocab_size from the dataset (256 bytes)."""
        cls.check_data(dataset, data_name)
        values = dict(overrides or {})
        if getattr(dataset, "block_size", None):
            values.setdefault("context", int(dataset.block_size))
        values.setdefault("vocab_size", int(getattr(dataset, "vocab_size", GPTConfig.vocab_size)))
        config = cls.config_class(**values)
        block = getattr(dataset, "block_size", None)
        if block and block > config.context:
            name = f"data {str(data_name)!r}" if data_name is not None else "the data"
            raise ValueError(f"{name} has windows of {block} tokens, more than context={config.context}")
        return config


__all__ = ["GPT", "GPTConfig", "GPTAttention", "GPTBlock"]
