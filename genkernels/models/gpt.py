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

Tokenizer: bytes by default (vocab 256). GPTConfig(tokenizer="bpe") uses a byte-level BPE
(genkernels.data.tokenizer.BPETokenizer) whose JSON travels in the config (tokenizer_json), so a
checkpoint carries it; `config_for_data` trains it (bpe_vocab tokens) on the training split's bytes
when none is given, and `prepare_dataset` re-windows byte text into token ids (context tokens per
window). A BPE model reports bits per byte as its total NLL over the predicted tokens (nats)
divided by ln 2 and by the number of bytes those tokens stand for, so it compares with byte-level
models and compressors on the same text; bits_per_token is reported beside it.

Hugging Face GPT-2 weights: `GPT.from_hf_state_dict(state_dict, hf_config)` loads a GPT2LMHeadModel
or GPT2Model state dict (Conv1D weights are (in, out), so they are transposed; c_attn's q|k|v
columns are the fused qkv rows) into a GPT with LayerNorm (eps 1e-5), GELU-tanh MLP (gelu_new),
learned positions, biases and tied embeddings, the config inferred from the tensors (num_heads
from hf_config or an override); `to_hf_state_dict()` is the inverse. Logits then equal the
`transformers` implementation's (tests/models/test_gpt_hf.py).

Music mode: fitted to a music dataset (`genkernels train gpt --data chorales`), config_for_data sets
GPTConfig.music_form ("events" / "grid") and the vocab (535 / 130); the tokens are used as they
are (no tokenizer). loss reports nats and bits per token; sample(n) starts each piece from BOS
and stops at the form's end token (padded rows); sample_files writes MIDI + WAV per sample,
figures a piano roll, and evaluate the held-out NLL per token beside unigram / bigram baselines
and the musical statistics of samples (genkernels.models._music, shared with MusicLSTM).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable

import torch
from torch import nn

from genkernels.models._text import (BPE_AUTO_MIN_BYTES, TOKENIZERS,  # noqa: F401 (re-exported)
                                     encode_text_dataset, fit_tokenizer)
from genkernels.models._validate import (check_bool, check_choice, check_int, check_real,
                                         evaluation_count)
from genkernels.models.base import GenerativeModel
from genkernels.nn.attention import KVCache
from genkernels.nn.transformer_layers import GeluMLP, LayerNorm, RMSNorm, RotaryEmbedding, SwiGLU
from genkernels.ops.attention import attention
from genkernels.ops.attention_decode import attention_decode
from genkernels.ops.linear_cross_entropy import linear_cross_entropy

MLPS = ("swiglu", "gelu")
# bf16 autocast for the default recipe only on CPU-only hosts whose CPU has fast bf16 matmuls
_DEFAULT_PRECISION = ("bf16" if not torch.cuda.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
                      else "fp32")
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
    tokenizer: str = "byte"  # "byte" or "bpe" (see the module docstring)
    bpe_vocab: int = 4096  # BPE tokens config_for_data trains when tokenizer_json is None
    tokenizer_json: str | None = None  # the trained BPETokenizer.to_json() (set by config_for_data)
    music_form: str | None = None  # music mode: "events" / "grid" tokens of genkernels.data.music (see GPT)

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
        self.tokenizer = check_choice("GPTConfig.tokenizer", self.tokenizer, TOKENIZERS)
        self.bpe_vocab = check_int("GPTConfig.bpe_vocab", self.bpe_vocab, 256)
        if self.tokenizer_json is not None and not isinstance(self.tokenizer_json, str):
            raise TypeError(f"GPTConfig.tokenizer_json must be a tokenizer JSON str or None, got "
                            f"{type(self.tokenizer_json).__name__}")
        if self.tokenizer == "byte" and self.tokenizer_json is not None:
            raise ValueError("GPTConfig.tokenizer_json is only used with tokenizer='bpe', got tokenizer='byte'")
        if self.music_form is not None:
            self._check_music()
        if self.dim % self.num_heads:
            raise ValueError(f"GPTConfig.dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        if self.num_heads % self.kv_heads:
            raise ValueError(f"GPTConfig.num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                             f"({self.num_kv_heads})")
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(f"GPTConfig: rotary positions need an even head dim, got dim / num_heads = "
                             f"{self.head_dim}")

    def _check_music(self):
        from genkernels.models._music import MUSIC_FORMS, music_tokens

        self.music_form = check_choice("GPTConfig.music_form", self.music_form, MUSIC_FORMS)
        if self.tokenizer != "byte":
            raise ValueError(f"GPTConfig.music_form={self.music_form!r} takes music tokens as they are; "
                             f"tokenizer must be 'byte' (no BPE), got {self.tokenizer!r}")
        expected = music_tokens(self.music_form).vocab_size
        if self.vocab_size != expected:
            raise ValueError(f"GPTConfig.vocab_size must be {expected} for music_form={self.music_form!r}, "
                             f"got {self.vocab_size}")

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
    data_kinds = ("text", "music")  # music: GPT over genkernels.data.music tokens (music mode, below)
    # The default recipe (`genkernels train gpt`, about 18 min on 2 CPU cores): a 2x
    # higher peak lr than GPT-2's small-model value, which a 4-layer byte model takes with warm-up and
    # clipping; bf16 autocast where the CPU multiplies bf16 natively (AVX512-BF16 / AMX; 1.5x the
    # steps per second of fp32 there), else fp32; few, larger validation passes.
    train_defaults = {"steps": 900, "batch_size": 16, "lr": 2e-3, "warmup_steps": 100, "weight_decay": 0.1,
                      "min_lr_ratio": 0.1, "precision": _DEFAULT_PRECISION, "eval_every": 500,
                      "eval_max_items": 128, "num_samples": 4}
    evaluate_reports_loss = True  # evaluate() returns the mean NLL as "loss": the CLI's eval makes one pass
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
        self._init_tokenizer()
        if c.music_form is not None:  # music mode: NLL per token, no bytes
            self.metric_units = {"loss": "nats/token", "bits_per_token": "bits/token"}

    def _init_tokenizer(self):
        """self.tokenizer (ByteTokenizer or the config's BPETokenizer); for BPE, the bytes per token id."""
        from genkernels.data.tokenizer import BPETokenizer, ByteTokenizer

        c = self.config
        self._token_bytes = None  # (V,) int64 bytes per token id, BPE only (plain tensor, not state)
        if c.tokenizer == "byte":
            self.tokenizer = ByteTokenizer()
            return
        if c.tokenizer_json is None:
            raise ValueError("GPTConfig.tokenizer='bpe' needs tokenizer_json (a BPETokenizer.to_json()); "
                             "GPT.config_for_data trains one on the data")
        self.tokenizer = BPETokenizer.from_json(c.tokenizer_json)
        if self.tokenizer.vocab_size != c.vocab_size:
            raise ValueError(f"GPTConfig.vocab_size ({c.vocab_size}) must equal the BPE tokenizer's vocab size "
                             f"({self.tokenizer.vocab_size})")
        self._token_bytes = torch.tensor(self.tokenizer.byte_lengths(), dtype=torch.int64)
        self.metric_units = {**type(self).metric_units, "loss": "nats/token", "bits_per_token": "bits/token"}

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
        # the value check reads two scalars back from the device: skipped while torch.compile traces
        # (a graph break there costs more than the check; eager calls and the CLI keep it)
        if tokens.numel() and not torch.compiler.is_compiling() and (
                int(tokens.min()) < 0 or int(tokens.max()) >= c.vocab_size):
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
        """batch (B, T + 1) int64 windows -> {"loss": mean next-token NLL in nats, "bits_per_byte"}
        (BPE: the batch's NLL over the bytes its target tokens stand for, and "bits_per_token")."""
        inputs, targets = self._split(batch)
        nll = self._nll(inputs, targets)
        if self.config.music_form is not None:
            return {"loss": nll, "bits_per_token": nll.detach() / math.log(2)}
        if self._token_bytes is None:
            return {"loss": nll, "bits_per_byte": nll.detach() / math.log(2)}
        num_bytes = self._token_bytes.to(targets.device)[targets].sum()
        bits = nll.detach() / math.log(2)
        return {"loss": nll, "bits_per_byte": bits * targets.numel() / num_bytes, "bits_per_token": bits}

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x[:, 1:] | x[:, 0]) per sequence in nats, (B,), for tokens x (B, T + 1)."""
        inputs, targets = self._split(x)
        logits = self(inputs).float()
        return -nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none").sum(dim=1)

    @torch.no_grad()
    def evaluate(self, dataset, *, max_items: int | None = None, batch_size: int = 32) -> dict[str, float]:
        """Held-out bits per byte over the windows, beside zlib and lzma on the same bytes (music
        mode: `evaluate_music`, the NLL per token beside n-gram baselines and musical statistics)."""
        from genkernels.metrics.text import bits_per_byte, compression_baselines

        if self.config.music_form is not None:
            return self.evaluate_music(dataset, max_items=max_items, batch_size=batch_size)
        if self._token_bytes is not None:
            return self._evaluate_bpe(dataset, max_items=max_items, batch_size=batch_size)
        count = evaluation_count(dataset, max_items, batch_size)
        device = self.head_weight.device
        total, num = 0.0, 0
        for begin in range(0, count, batch_size):
            batch = torch.stack([dataset[i] for i in range(begin, min(count, begin + batch_size))]).to(device)
            inputs, targets = self._split(batch)
            total += float(self._nll(inputs, targets)) * targets.numel()
            num += targets.numel()
        metrics = {"loss": total / num, "bits_per_byte": bits_per_byte(total / num)}
        data = getattr(dataset, "data", None)
        if isinstance(data, torch.Tensor) and data.dtype == torch.uint8:
            stride = getattr(dataset, "stride", dataset[0].numel() - 1)
            span = data[:(count - 1) * stride + dataset[0].numel()]
            baselines = compression_baselines(span.numpy().tobytes())
            metrics.update(zlib_bits_per_byte=baselines["zlib"], lzma_bits_per_byte=baselines["lzma"])
        return metrics

    @torch.no_grad()
    def _evaluate_bpe(self, dataset, *, max_items: int | None, batch_size: int) -> dict[str, float]:
        """bits_per_byte = (sum of the NLL of every predicted token, nats) / ln 2 / (bytes of those
        tokens); byte text is encoded first (prepare_dataset). zlib / lzma on the windows' bytes."""
        from genkernels.metrics.text import compression_baselines

        dataset = self.prepare_dataset(dataset)
        self.check_dataset(dataset)
        count = evaluation_count(dataset, max_items, batch_size)
        device = self.head_weight.device
        token_bytes = self._token_bytes.to(device)
        nats, num_tokens, num_bytes = 0.0, 0, 0
        for begin in range(0, count, batch_size):
            batch = torch.stack([dataset[i] for i in range(begin, min(count, begin + batch_size))]).to(device)
            inputs, targets = self._split(batch)
            nats += float(self._nll(inputs, targets)) * targets.numel()
            num_tokens += targets.numel()
            num_bytes += int(token_bytes[targets].sum())
        metrics = {"loss": nats / num_tokens, "bits_per_byte": nats / num_bytes / math.log(2),
                   "bits_per_token": nats / num_tokens / math.log(2),
                   "bytes_per_token": num_bytes / num_tokens}
        if getattr(dataset, "window_bytes", None) is not None:
            span = dataset.data[dataset.window_bytes(0)[0]:dataset.window_bytes(count - 1)[1]]
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
        if self.config.music_form is not None:
            if prompt:
                raise ValueError("prompt: a music GPT starts from BOS; it takes no text prompt (use generate() "
                                 "with token ids for a primer)")
            return self.sample_music(n, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        start = list((prompt or "\n").encode("utf-8"))
        if self._token_bytes is not None:  # BPE
            start = self.tokenizer.encode(prompt or "\n")
        elif self.config.vocab_size < 256:
            raise ValueError(f"sample(prompt=...) encodes UTF-8 bytes and needs vocab_size >= 256, got "
                             f"{self.config.vocab_size}; use generate() with token ids")
        if max_new_tokens is None:
            max_new_tokens = max(0, self.config.context - len(start))
        n = check_int("n", n, 1)
        generated = self.generate([start] * n, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                  seed=seed)
        return torch.tensor([start + g for g in generated], dtype=torch.int64)

    def sample_files(self, samples: torch.Tensor) -> dict[str, bytes]:
        if self.config.music_form is not None:
            from genkernels.models._music import music_sample_files

            return music_sample_files(samples, self.config.music_form)
        return self._text_sample_files(samples)

    def _text_sample_files(self, samples: torch.Tensor) -> dict[str, bytes]:
        """samples.txt: each sample's bytes decoded as UTF-8 (invalid bytes replaced); BPE token ids
        are decoded to their bytes first."""
        if self._token_bytes is not None:
            texts = [self.tokenizer.decode_str(row.tolist())
                     for row in samples.long().clamp(0, self.config.vocab_size - 1).cpu()]
        else:
            texts = [bytes(int(t) for t in row).decode("utf-8", errors="replace")
                     for row in samples.long().clamp(0, 255).cpu()]
        sep = "\n" + "-" * 40 + "\n"
        return {"samples.txt": sep.join(texts).encode("utf-8")}

    # -- fitting to data --------------------------------------------------------------------------
    @classmethod
    def config_for_data(cls, dataset, overrides: dict[str, Any] | None = None, *,
                        data_name: str | None = None) -> GPTConfig:
        """context from the dataset's windows (block_size), vocab_size from the dataset (256 bytes).

        Byte text of at least BPE_AUTO_MIN_BYTES (1 MB, e.g. the bundled stdlib train split) with no
        tokenizer, tokenizer_json or vocab_size given gets tokenizer="bpe"; pass tokenizer="byte" to
        keep bytes.

        tokenizer="bpe" with no tokenizer_json: a BPETokenizer of bpe_vocab tokens is trained on the
        dataset's bytes (`data`, at most genkernels.data.tokenizer.BPE_TRAIN_MAX_BYTES of them) and
        vocab_size is its size; context then counts tokens. A dataset already encoded with a
        BPETokenizer (TextDataset(tokenizer=...)) gives its tokenizer."""
        cls.check_data(dataset, data_name)
        values = dict(overrides or {})
        if getattr(dataset, "block_size", None):
            values.setdefault("context", int(dataset.block_size))
        # fitting to megabytes of text: a BPE packs ~3 bytes into a token, so each step and each
        # context sees ~3x more text (the default run beats zlib on the stdlib test split this
        # way; bytes alone did not in the same time). Smaller text stays byte-level.
        fit_tokenizer(values, dataset, owner="GPTConfig", default_bpe_vocab=GPTConfig.bpe_vocab)
        if getattr(dataset, "kind", None) == "music":  # music mode: the dataset's token form
            values.setdefault("music_form", getattr(dataset, "form", "events"))
        values.setdefault("vocab_size", int(getattr(dataset, "vocab_size", GPTConfig.vocab_size)))
        config = cls.config_class(**values)
        block = getattr(dataset, "block_size", None)
        if config.tokenizer == "bpe" and getattr(dataset, "tokenizer", None) is None:
            block = None  # byte windows that prepare_dataset re-cuts into context tokens
        if block and block > config.context:
            name = f"data {str(data_name)!r}" if data_name is not None else "the data"
            raise ValueError(f"{name} has windows of {block} tokens, more than context={config.context}")
        return config

    def prepare_dataset(self, dataset):
        """The dataset in this model's tokens: byte text (a TextDataset without a tokenizer) is
        encoded with the BPE tokenizer into windows of context + 1 tokens; anything else, and every
        dataset of a byte-level model, is returned as is."""
        if self._token_bytes is None:
            return dataset
        return encode_text_dataset(dataset, self.tokenizer, self.config.context)

    def check_dataset(self, dataset, data_name: str | None = None) -> None:
        """Raise ValueError when the dataset's tokens are not this model's (a BPE model meeting byte
        windows, or another tokenizer)."""
        self.check_data(dataset, data_name)
        name = f"data {str(data_name)!r}" if data_name is not None else "the data"
        self._check_music_dataset(dataset, name)
        given = getattr(dataset, "tokenizer", None)
        if self._token_bytes is not None:
            if given is None and getattr(dataset, "vocab_size", 256) == 256:
                raise ValueError(f"{name} is byte windows, but this GPT uses a BPE tokenizer; encode it with "
                                 "model.prepare_dataset(dataset)")
            if given is not None and given.to_json() != self.tokenizer.to_json():
                raise ValueError(f"{name} was encoded with another tokenizer than this GPT's")
        elif getattr(given, "kind", "byte") == "bpe":
            raise ValueError(f"{name} is BPE token windows, but this GPT is byte-level (tokenizer='byte')")

    # -- music mode (config.music_form set; genkernels.models._music does the work) ----------------
    def _check_music_dataset(self, dataset, name: str) -> None:
        """Raise ValueError when music data meets a text GPT, text data a music GPT, or the forms differ."""
        form, kind = self.config.music_form, getattr(dataset, "kind", None)
        if form is None and kind == "music":
            raise ValueError(f"{name} is music, but this GPT is a text model (music_form=None); train one on the "
                             f"music (GPT.config_for_data sets music_form)")
        if form is not None and kind != "music":
            raise ValueError(f"{name} is {kind or 'of no known kind'}, but this GPT is a music model "
                             f"(music_form={form!r})")
        if form is not None and getattr(dataset, "form", form) != form:
            raise ValueError(f"{name} is in form {dataset.form!r}, but this GPT was trained on form {form!r}")

    @torch.no_grad()
    def sample_music(self, n: int, max_new_tokens: int | None = None, temperature: float = 1.0,
                     top_k: int | None = None, top_p: float | None = None, seed: int | None = None) -> torch.Tensor:
        """Music mode: n pieces as int64 rows (n, L) from BOS to the stop token (EOS; the next piece's
        BOS in form "grid"), padded (genkernels.models._music). max_new_tokens None: context - 1."""
        from genkernels.models._music import music_tokens, pad_rows

        tokens = music_tokens(self.config.music_form)
        n = check_int("n", n, 1)
        if max_new_tokens is None:
            max_new_tokens = self.config.context - 1
        generated = self.generate([[tokens.bos]] * n, max_new_tokens, temperature=temperature, top_k=top_k,
                                  top_p=top_p, seed=seed, stop_tokens=[tokens.stop])
        return pad_rows([[tokens.bos] + g for g in generated], tokens.pad)

    @torch.no_grad()
    def evaluate_music(self, dataset, *, max_items: int | None = None, batch_size: int = 32,
                       num_samples: int = 16, seed: int = 0, train=None) -> dict[str, float]:
        """Music mode: held-out NLL per token beside unigram / bigram baselines, and the musical
        statistics of generated pieces vs the held-out ones (genkernels.models._music.evaluate_music)."""
        from genkernels.models._music import evaluate_music

        self.check_dataset(dataset)
        return evaluate_music(dataset, self._nll, lambda k, s: self.sample_music(k, seed=s),
                              form=self.config.music_form, vocab_size=self.config.vocab_size, max_items=max_items,
                              batch_size=batch_size, num_samples=num_samples, seed=seed,
                              device=self.head_weight.device, train=train)

    @torch.no_grad()
    def figures(self, samples: torch.Tensor, *, nrow: int | None = None) -> dict[str, Any]:
        """Music mode: {"piano_roll": the first samples}; text: none."""
        if self.config.music_form is not None:
            from genkernels.models._music import music_figures

            return music_figures(samples, self.config.music_form)
        return super().figures(samples, nrow=nrow)

    # -- Hugging Face GPT-2 weights -----------------------------------------------------------------
    @classmethod
    def from_hf_state_dict(cls, state_dict: dict[str, torch.Tensor], hf_config=None, **overrides) -> "GPT":
        """A GPT holding a Hugging Face GPT2LMHeadModel / GPT2Model state dict (keys with or without
        "transformer."; the attn.bias / attn.masked_bias mask buffers are ignored).

        vocab_size, context (n_positions), dim and depth come from the tensor shapes; num_heads from
        hf_config (a GPT2Config or its to_dict()) or the num_heads override, since the tensors do not
        hold it. Other overrides (dropout, say) are GPTConfig fields. The model is in eval mode, in
        the state dict's floating dtype. An untied lm_head.weight gives tie_embeddings=False.
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict of tensors, got {type(state_dict).__name__}")
        hf = _hf_config_dict(hf_config)
        sd, head = {}, None
        for key, value in state_dict.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"state_dict[{key!r}] must be a tensor, got {type(value).__name__}")
            if key == "lm_head.weight":
                head = value
                continue
            key = key[len("transformer."):] if key.startswith("transformer.") else key
            if key.endswith((".attn.bias", ".attn.masked_bias")):
                continue  # GPT-2's causal-mask buffers
            sd[key] = value
        for key in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"):
            if key not in sd:
                raise ValueError(f"state_dict has no {key!r} (transformer.{key}); is it a GPT-2 state dict? "
                                 f"keys: {sorted(state_dict)[:6]}")
        vocab_size, dim = sd["wte.weight"].shape
        depth = 1 + max((int(k.split(".")[1]) for k in sd if k.startswith("h.")), default=-1)
        if depth < 1:
            raise ValueError("state_dict has no blocks (h.0.*)")
        hidden = sd["h.0.mlp.c_fc.weight"].shape[1] if "h.0.mlp.c_fc.weight" in sd else 4 * dim
        if hidden != 4 * dim or hf.get("n_inner") not in (None, 4 * dim):
            raise ValueError(f"state_dict has an MLP of width {hidden}; GPT's GELU MLP is 4 * dim = {4 * dim}")
        eps = hf.get("layer_norm_epsilon", 1e-5)
        if abs(float(eps) - 1e-5) > 1e-12:
            raise ValueError(f"hf_config layer_norm_epsilon must be 1e-5 (GPT's LayerNorm), got {eps}")
        activation = hf.get("activation_function", "gelu_new")
        if activation not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"hf_config activation_function must be gelu_new (GELU-tanh), got {activation!r}")
        if not hf.get("scale_attn_weights", True) or hf.get("scale_attn_by_inverse_layer_idx", False):
            raise ValueError("hf_config must scale attention by 1/sqrt(head_dim) only (scale_attn_weights=True, "
                             "scale_attn_by_inverse_layer_idx=False)")
        num_heads = overrides.pop("num_heads", hf.get("n_head", hf.get("num_attention_heads")))
        if num_heads is None:
            raise ValueError("num_heads: a state dict does not hold the number of heads; pass hf_config (with "
                             "n_head) or num_heads=")
        tied = head is None or (head.shape == sd["wte.weight"].shape and torch.equal(head, sd["wte.weight"]))
        inferred = {"vocab_size": int(vocab_size), "context": int(sd["wpe.weight"].shape[0]), "dim": int(dim),
                    "depth": depth, "tie_embeddings": tied}
        for name, value in inferred.items():
            if name in overrides and overrides[name] != value:
                raise ValueError(f"{name}={overrides[name]!r} contradicts the state dict's {value!r}")
        values = {"mlp": "gelu", "norm": "layer", "positions": "learned", "bias": True, "num_heads": num_heads,
                  "num_kv_heads": None, **inferred, **overrides}
        model = cls(GPTConfig(**values))
        ours = {"embed.weight": sd.pop("wte.weight"), "pos_embed.weight": sd.pop("wpe.weight"),
                "norm.weight": sd.pop("ln_f.weight"), "norm.bias": sd.pop("ln_f.bias")}
        if not tied:
            ours["head.weight"] = head
        for i in range(depth):
            for theirs, mine, conv1d in _HF_BLOCK_KEYS:
                for suffix in ("weight", "bias"):
                    key = f"h.{i}.{theirs}.{suffix}"
                    if key not in sd:
                        raise ValueError(f"state_dict has no {key!r}")
                    value = sd.pop(key)
                    ours[f"blocks.{i}.{mine}.{suffix}"] = value.t() if conv1d and suffix == "weight" else value
        if sd:
            raise ValueError(f"state_dict has keys a GPT-2 does not: {sorted(sd)[:6]}")
        expected = model.state_dict()
        for key, value in ours.items():
            if tuple(value.shape) != tuple(expected[key].shape):
                raise ValueError(f"state_dict tensor for {key} has shape {tuple(value.shape)}, expected "
                                 f"{tuple(expected[key].shape)} (num_heads={num_heads})")
        model.load_state_dict(ours, strict=True)
        if ours["embed.weight"].is_floating_point():
            model.to(ours["embed.weight"].dtype)
        return model.eval()

    def to_hf_state_dict(self) -> dict[str, torch.Tensor]:
        """This GPT's weights as a Hugging Face GPT2LMHeadModel state dict ("transformer." keys, Conv1D
        weights (in, out), lm_head.weight); the inverse of from_hf_state_dict. `hf_config()` gives the
        matching GPT2Config arguments. Needs the GPT-2 architecture (LayerNorm, gelu MLP, learned
        positions, biases, plain multi-head attention)."""
        c = self.config
        wrong = {name: getattr(c, name) for name, want in (("norm", "layer"), ("mlp", "gelu"),
                                                           ("positions", "learned"), ("bias", True))
                 if getattr(c, name) != want}
        if c.kv_heads != c.num_heads:
            wrong["num_kv_heads"] = c.num_kv_heads
        if wrong:
            raise ValueError(f"to_hf_state_dict needs the GPT-2 architecture (norm='layer', mlp='gelu', "
                             f"positions='learned', bias=True, num_kv_heads=None), got {wrong}")
        mine = {k: v.detach().clone() for k, v in self.state_dict().items()}
        out = {"transformer.wte.weight": mine["embed.weight"], "transformer.wpe.weight": mine["pos_embed.weight"]}
        for i in range(c.depth):
            for theirs, ours, conv1d in _HF_BLOCK_KEYS:
                for suffix in ("weight", "bias"):
                    value = mine[f"blocks.{i}.{ours}.{suffix}"]
                    if conv1d and suffix == "weight":
                        value = value.t().contiguous()  # Linear (out, in) -> Conv1D (in, out)
                    out[f"transformer.h.{i}.{theirs}.{suffix}"] = value
        out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = mine["norm.weight"], mine["norm.bias"]
        out["lm_head.weight"] = mine["embed.weight"] if c.tie_embeddings else mine["head.weight"]
        return out

    def hf_config(self) -> dict[str, Any]:
        """Keyword arguments of transformers.GPT2Config for to_hf_state_dict()'s weights."""
        c = self.config
        return {"vocab_size": c.vocab_size, "n_positions": c.context, "n_embd": c.dim, "n_layer": c.depth,
                "n_head": c.num_heads, "n_inner": None, "activation_function": "gelu_new",
                "layer_norm_epsilon": 1e-5, "tie_word_embeddings": c.tie_embeddings,
                "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": 0.0}


# (GPT-2 name under h.{i}, ours under blocks.{i}, whether the weight is a Conv1D (in, out) to transpose)
_HF_BLOCK_KEYS = (("ln_1", "norm1", False), ("attn.c_attn", "attn.qkv", True), ("attn.c_proj", "attn.out", True),
                  ("ln_2", "norm2", False), ("mlp.c_fc", "mlp.fc1", True), ("mlp.c_proj", "mlp.fc2", True))


def _hf_config_dict(hf_config) -> dict[str, Any]:
    """A GPT2Config (anything with to_dict()), a dict, or None -> a dict."""
    if hf_config is None:
        return {}
    if isinstance(hf_config, dict):
        return dict(hf_config)
    if callable(getattr(hf_config, "to_dict", None)):
        return dict(hf_config.to_dict())
    raise TypeError(f"hf_config must be a transformers GPT2Config, a dict or None, got {type(hf_config).__name__}")


__all__ = ["GPT", "GPTConfig", "GPTAttention", "GPTBlock"]
