"""BERT: a bidirectional transformer encoder trained by masked-language modelling, byte-level by default.

Network (post-norm, Hugging Face's BertForMaskedLM layer for layer, so its weights load as they are):

    ids (B, T) -> word + position + token-type embeddings -> LayerNorm -> dropout      (B, T, dim)
    depth x Layer: x = LayerNorm(x + dropout(out(attention(q, k, v))))   q, k, v: biased linears
                   x = LayerNorm(x + dropout(fc2(gelu(fc1 x))))          gelu: exact erf (BERT's)
    MLM head:      logits = LayerNorm(gelu(dense h)) @ word_embeddings.T + bias           (B, T, V)

Vocabulary: bytes 0..255 then [PAD] 256, [MASK] 257, [CLS] 258, [SEP] 259 (vocab_size 260). A text
window of byte tokens is fed as [CLS] bytes[:context - 2] [SEP]. Positions are learned (absolute;
a fresh model starts them as scaled sinusoids, see `_init_weights`).

Padding: sequences of different lengths share a batch through `attention_mask` (B, T) (1 = real
token, 0 = padding, as in Hugging Face). With config.padding "varlen" the real tokens are packed
into one (N, dim) stream and every layer runs on N tokens only, attention through
genkernels.ops.attention_varlen (cu_seqlens offsets; the fused Triton varlen kernel on GPU);
padded rows of the output are zeros. With "mask" the batch stays (B, T) and attention gets
key_padding_mask = ~attention_mask (fused kernel on GPU, SDPA on CPU), so padded rows get
Hugging Face's values too. "auto" (default) picks varlen on GPU, mask on CPU (the CPU varlen
path is the (N, N) reference, slower than SDPA). A batch without padding takes the plain dense path.

Masked-language-model training (`loss`): 15% of the maskable tokens (not [PAD]/[CLS]/[SEP]/[MASK],
not padding) are chosen; of those 80% become [MASK], 10% a random regular token, 10% stay as they
are (Devlin et al. 2019). The loss is the NLL of the original token at the chosen positions only,
through genkernels.ops.linear_cross_entropy with ignore_index (the (B*T, V) logits are never
stored). Masks draw from torch's RNG (the trainer seeds it) or a given torch.Generator.

Evaluation (`evaluate`): masked-token accuracy and bits per masked byte with a fixed mask seed, beside
a unigram baseline scored on the same masked positions; its byte distribution comes from the
training split (counted in `loss` while training: the buffer `token_counts`), else from the bytes
of the evaluated split after the evaluated windows.

Fill-mask (`fill_mask`): each "<mask>" in the text stands for `num_bytes` bytes (default 1); one
byte is predicted in one pass, a longer span by a left-to-right beam search of width top_k.
`sample` fills masks iteratively, most confident first (MaskGIT-style), from an all-[MASK] start or
a template `text`.

Weights: `BERT.from_hf_state_dict(state_dict, num_heads=...)` reads a Hugging Face BertForMaskedLM or
BertModel state dict (tensors the user already has; nothing is downloaded), inferring the shapes;
`to_hf_state_dict()` writes the BertForMaskedLM layout. q/k/v are one fused linear here.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genkernels.models._validate import (check_bool, check_choice, check_int, check_real,
                                         evaluation_count)
from genkernels.models.base import GenerativeModel
from genkernels.nn.transformer_layers import LayerNorm, sinusoidal_table
from genkernels.ops.attention import attention, attention_varlen
from genkernels.ops.gelu_tanh import gelu_tanh
from genkernels.ops.linear_cross_entropy import linear_cross_entropy

ACTIVATIONS = ("gelu", "gelu_tanh")
PADDING = ("auto", "varlen", "mask")
IGNORE_INDEX = -100
MASK_TEXT = "<mask>"
NUM_BYTES = 256
# Hugging Face hidden_act names -> ours
_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh"}


@dataclasses.dataclass
class BERTConfig:
    """vocab_size 260 = 256 bytes + [PAD] [MASK] [CLS] [SEP] (pad_id, mask_id, cls_id, sep_id);
    context = the longest input in tokens ([CLS] and [SEP] included); intermediate_size None =
    mlp_ratio * dim; special ids may be None for imported vocabularies (mask_id None: no MLM)."""

    vocab_size: int = 260
    context: int = 256
    dim: int = 192
    depth: int = 4
    num_heads: int = 6
    mlp_ratio: float = 4.0
    intermediate_size: int | None = None
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    activation: str = "gelu"
    dropout: float = 0.0
    mask_prob: float = 0.15
    padding: str = "auto"
    pad_id: int | None = 256
    mask_id: int | None = 257
    cls_id: int | None = 258
    sep_id: int | None = 259

    def __post_init__(self):
        for name, minimum in (("vocab_size", 2), ("context", 1), ("dim", 1), ("depth", 1), ("num_heads", 1),
                              ("type_vocab_size", 1)):
            setattr(self, name, check_int(f"BERTConfig.{name}", getattr(self, name), minimum))
        self.mlp_ratio = check_real("BERTConfig.mlp_ratio", self.mlp_ratio, 0.0)
        if self.intermediate_size is not None:
            self.intermediate_size = check_int("BERTConfig.intermediate_size", self.intermediate_size, 1)
        elif self.hidden_size < 1:
            raise ValueError(f"BERTConfig.mlp_ratio * dim must be >= 1, got {self.mlp_ratio} * {self.dim}")
        self.layer_norm_eps = check_real("BERTConfig.layer_norm_eps", self.layer_norm_eps, 0.0)
        self.activation = check_choice("BERTConfig.activation", self.activation, ACTIVATIONS)
        self.padding = check_choice("BERTConfig.padding", self.padding, PADDING)
        self.dropout = check_real("BERTConfig.dropout", self.dropout, 0.0)
        if self.dropout >= 1.0:
            raise ValueError(f"BERTConfig.dropout must be < 1, got {self.dropout}")
        self.mask_prob = check_real("BERTConfig.mask_prob", self.mask_prob, 0.0)
        if not 0.0 < self.mask_prob <= 1.0:
            raise ValueError(f"BERTConfig.mask_prob must lie in (0, 1], got {self.mask_prob}")
        if self.dim % self.num_heads:
            raise ValueError(f"BERTConfig.dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        for name in ("pad_id", "mask_id", "cls_id", "sep_id"):
            value = getattr(self, name)
            if value is not None:
                value = check_int(f"BERTConfig.{name}", value, 0)
                if value >= self.vocab_size:
                    raise ValueError(f"BERTConfig.{name} must be < vocab_size ({self.vocab_size}), got {value}")
                setattr(self, name, value)
        ids = self.special_ids
        if len(set(ids)) != len(ids):
            raise ValueError(f"BERTConfig special ids (pad, mask, cls, sep) must differ, got "
                             f"{(self.pad_id, self.mask_id, self.cls_id, self.sep_id)}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def hidden_size(self) -> int:
        """The MLP's inner width."""
        return self.intermediate_size or int(round(self.mlp_ratio * self.dim))

    @property
    def special_ids(self) -> tuple[int, ...]:
        return tuple(i for i in (self.pad_id, self.mask_id, self.cls_id, self.sep_id) if i is not None)

    @property
    def byte_level(self) -> bool:
        """Ids 0..255 are bytes and [MASK], [CLS], [SEP] lie above them (text in, text out)."""
        return (self.vocab_size >= NUM_BYTES + 3 and None not in (self.mask_id, self.cls_id, self.sep_id)
                and min(self.special_ids) >= NUM_BYTES)


def _activation(name: str, x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x) if name == "gelu" else gelu_tanh(x)


class BERTSelfAttention(nn.Module):
    """Bidirectional multi-head attention: dense (B, T, dim) with an optional key_padding_mask, or
    packed (N, dim) with cu_seqlens (varlen). q, k, v come from one fused biased linear."""

    def __init__(self, c: BERTConfig):
        super().__init__()
        self.num_heads, self.head_dim = c.num_heads, c.head_dim
        self.qkv = nn.Linear(c.dim, 3 * c.dim)
        self.out = nn.Linear(c.dim, c.dim)

    def forward(self, x, key_padding_mask=None, cu_seqlens=None, max_seqlen: int = 0):
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # each (..., dim), unit last stride
        heads = (*x.shape[:-1], self.num_heads, self.head_dim)  # (B, T, H, D) or (N, H, D)
        q, k, v = q.view(heads), k.view(heads), v.view(heads)
        if cu_seqlens is not None:
            out = attention_varlen(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen)  # (N, H, D)
        else:
            out = attention(q, k, v, key_padding_mask=key_padding_mask)  # (B, T, H, D)
        return self.out(out.reshape(x.shape))


class BERTLayer(nn.Module):
    """Post-norm encoder layer: x = norm1(x + attn(x)), then x = norm2(x + fc2(gelu(fc1 x)))."""

    def __init__(self, c: BERTConfig):
        super().__init__()
        self.activation = c.activation
        self.attn = BERTSelfAttention(c)
        self.norm1 = LayerNorm(c.dim, eps=c.layer_norm_eps)
        self.fc1 = nn.Linear(c.dim, c.hidden_size)
        self.fc2 = nn.Linear(c.hidden_size, c.dim)
        self.norm2 = LayerNorm(c.dim, eps=c.layer_norm_eps)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x, key_padding_mask=None, cu_seqlens=None, max_seqlen: int = 0):  # (.., dim) -> (.., dim)
        x = self.norm1(x + self.drop(self.attn(x, key_padding_mask, cu_seqlens, max_seqlen)))
        return self.norm2(x + self.drop(self.fc2(_activation(self.activation, self.fc1(x)))))


class BERT(GenerativeModel):
    """Bidirectional encoder with an MLM head; see the module docstring."""

    name = "bert"
    config_class = BERTConfig
    default_data = "text"
    data_kinds = ("text",)
    train_defaults = {"batch_size": 16, "lr": 1e-3, "warmup_steps": 100, "weight_decay": 0.01,
                      "eval_max_items": 64, "num_samples": 4}
    metric_units = {"loss": "nats/masked byte", "bits_per_masked_byte": "bits/masked byte",
                    "unigram_bits_per_masked_byte": "bits/masked byte"}

    def __init__(self, config: BERTConfig | None = None):
        super().__init__(config if config is not None else BERTConfig())
        c = self.config
        self.embed = nn.Embedding(c.vocab_size, c.dim)  # word embeddings, tied to the MLM decoder
        self.pos_embed = nn.Embedding(c.context, c.dim)
        self.type_embed = nn.Embedding(c.type_vocab_size, c.dim)
        self.embed_norm = LayerNorm(c.dim, eps=c.layer_norm_eps)
        self.drop = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(BERTLayer(c) for _ in range(c.depth))
        self.head_dense = nn.Linear(c.dim, c.dim)
        self.head_norm = LayerNorm(c.dim, eps=c.layer_norm_eps)
        self.head_bias = nn.Parameter(torch.zeros(c.vocab_size))
        # how often each token occurred in training batches: the unigram baseline of `evaluate`
        self.register_buffer("token_counts", torch.zeros(c.vocab_size, dtype=torch.int64))
        self._init_weights()

    def _init_weights(self):
        """BERT's: N(0, 0.02) linears and embeddings, zero biases (LayerNorms start at 1, 0); but the
        learned positions start as the Transformer's sinusoids (scaled to std 0.02, the word
        embeddings' scale): relative offsets are then linear maps of them from step 0, which on
        byte text learns faster (held-out bits per masked byte 3.86 vs 4.22 after 600 steps of a
        64-wide, 2-layer model) than N(0, 0.02) positions that must discover them."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.pos_embed.weight.copy_(sinusoidal_table(*self.pos_embed.weight.shape) * (0.02 * math.sqrt(2)))

    # -- checks ----------------------------------------------------------------------------------
    def _check_ids(self, ids, name: str = "input_ids") -> torch.Tensor:
        c = self.config
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype != torch.int64:
            got = (f"a {ids.dtype} tensor of shape {tuple(ids.shape)}" if isinstance(ids, torch.Tensor)
                   else type(ids).__name__)
            raise ValueError(f"{name} must be an int64 tensor (B, T), got {got}")
        if ids.shape[1] > c.context:
            raise ValueError(f"{name} has {ids.shape[1]} positions, more than the context ({c.context})")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= c.vocab_size):
            raise ValueError(f"{name} must lie in [0, vocab_size = {c.vocab_size}), got values from "
                             f"{int(ids.min())} to {int(ids.max())}")
        return ids

    def _check_mask(self, mask, ids, name: str, vocab: int | None = None) -> torch.Tensor | None:
        """attention_mask (1/True = token) as bool, token_type_ids (vocab given) as int64; both (B, T)."""
        if mask is None:
            return None
        if not isinstance(mask, torch.Tensor) or mask.shape != ids.shape or mask.is_floating_point():
            got = (f"a {mask.dtype} tensor of shape {tuple(mask.shape)}" if isinstance(mask, torch.Tensor)
                   else type(mask).__name__)
            raise ValueError(f"{name} must be an integer or bool tensor of input_ids' shape "
                             f"{tuple(ids.shape)}, got {got}")
        mask = mask.to(ids.device)
        if vocab is None:
            if mask.numel() and not bool(((mask == 0) | (mask == 1)).all()):
                raise ValueError(f"{name} must hold 0 (padding) or 1 (token) only")
            return mask.bool()
        if mask.numel() and (int(mask.min()) < 0 or int(mask.max()) >= vocab):
            raise ValueError(f"{name} must lie in [0, type_vocab_size = {vocab}), got values from "
                             f"{int(mask.min())} to {int(mask.max())}")
        return mask.long()

    def _need_bytes(self, what: str) -> None:
        if not self.config.byte_level:
            raise ValueError(f"{what} works on byte-level models (vocab_size >= 259 with [MASK], [CLS] and "
                             f"[SEP] above the 256 bytes); this model has vocab_size {self.config.vocab_size} "
                             f"and special ids {self.config.special_ids}: pass token ids to forward()")

    # -- network ---------------------------------------------------------------------------------
    def _embed(self, ids, positions, types) -> torch.Tensor:  # (...) ints -> (..., dim)
        x = self.embed(ids) + self.pos_embed(positions) + self.type_embed(types)
        return self.drop(self.embed_norm(x))

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) int64 -> last-layer hidden states (B, T, dim).

        attention_mask (B, T): 1 / True for tokens, 0 / False for padding (any positions, left or
        right); token_type_ids (B, T) default 0. Positions are the column indices 0..T-1 (as
        Hugging Face's default position_ids). Padded rows: zeros on the varlen path, Hugging Face's
        values on the mask path (see the module docstring)."""
        ids = self._check_ids(input_ids)
        mask = self._check_mask(attention_mask, ids, "attention_mask")
        types = self._check_mask(token_type_ids, ids, "token_type_ids", self.config.type_vocab_size)
        batch, length = ids.shape
        positions = torch.arange(length, device=ids.device).expand(batch, length)  # (B, T)
        types = torch.zeros_like(ids) if types is None else types
        if mask is not None and bool(mask.all()):
            mask = None  # nothing padded: the plain dense path
        padding = self.config.padding
        if padding == "auto":
            padding = "varlen" if ids.is_cuda else "mask"
        if mask is None or padding == "mask":
            x = self._embed(ids, positions, types)  # (B, T, dim)
            key_padding_mask = None if mask is None else ~mask
            for layer in self.layers:
                x = layer(x, key_padding_mask)
            return x
        # varlen: pack the real tokens (row-major, so each sequence's tokens stay together and in order)
        keep = mask.reshape(-1).nonzero().squeeze(1)  # (N,)
        lengths = mask.sum(dim=1)  # (B,)
        cu_seqlens = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)  # (B + 1,)
        max_seqlen = int(lengths.max())
        x = self._embed(ids.reshape(-1)[keep], positions.reshape(-1)[keep], types.reshape(-1)[keep])  # (N, dim)
        for layer in self.layers:
            x = layer(x, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)
        out = x.new_zeros(batch * length, x.shape[-1]).index_copy(0, keep, x)
        return out.view(batch, length, -1)

    def transform(self, h: torch.Tensor) -> torch.Tensor:
        """The MLM head's transform, (..., dim) -> (..., dim): LayerNorm(gelu(dense h))."""
        return self.head_norm(_activation(self.config.activation, self.head_dense(h)))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., dim) -> MLM logits (..., V) (decoder tied to the word embeddings)."""
        return F.linear(self.transform(h), self.embed.weight, self.head_bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) int64 -> MLM logits (B, T, V); see `hidden` for the masks."""
        return self.logits(self.hidden(input_ids, attention_mask, token_type_ids))

    # -- masked-language modelling ----------------------------------------------------------------
    def encode_windows(self, windows: torch.Tensor) -> torch.Tensor:
        """Byte windows (B, L) int64 in [0, 256) -> ids (B, min(L, context - 2) + 2): [CLS] bytes [SEP]."""
        self._need_bytes("encode_windows")
        c = self.config
        if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.is_floating_point() \
                or windows.dtype == torch.bool:
            got = (f"a {windows.dtype} tensor of shape {tuple(windows.shape)}" if isinstance(windows, torch.Tensor)
                   else type(windows).__name__)
            raise ValueError(f"batch must be byte windows, an integer tensor (B, L), got {got}")
        if c.context < 3:
            raise ValueError(f"byte windows need context >= 3 ([CLS] byte [SEP]), got {c.context}")
        windows = windows[:, :c.context - 2].long()
        if windows.numel() and (int(windows.min()) < 0 or int(windows.max()) >= NUM_BYTES):
            raise ValueError(f"byte windows must lie in [0, 256), got values from {int(windows.min())} to "
                             f"{int(windows.max())}; pass a dict with input_ids for token ids")
        batch = windows.shape[0]
        cls = windows.new_full((batch, 1), c.cls_id)
        sep = windows.new_full((batch, 1), c.sep_id)
        return torch.cat([cls, windows, sep], dim=1)

    def _batch(self, batch) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(input_ids, attention_mask, token_type_ids) from byte windows (B, L) (a tensor, or a
        one-tensor tuple from a DataLoader) or a dict of token ids with those keys."""
        if isinstance(batch, dict):
            if "input_ids" not in batch:
                raise ValueError(f"a dict batch needs 'input_ids', got keys {sorted(batch)}")
            ids = self._check_ids(batch["input_ids"])
            return ids, batch.get("attention_mask"), batch.get("token_type_ids")
        windows = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.encode_windows(windows), None, None

    def _regular_tokens(self, shape, generator, device) -> torch.Tensor:
        """Uniform draws over the non-special ids: draw in [0, V - S), then step over each special id."""
        c = self.config
        specials = sorted(c.special_ids)
        tokens = torch.randint(0, c.vocab_size - len(specials), shape, generator=generator,
                               device=generator.device if generator is not None else device)
        for s in specials:  # ascending: each shift keeps the draws below the next special id ordered
            tokens = tokens + (tokens >= s).long()
        return tokens.to(device)

    def mask_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    generator: torch.Generator | None = None,
                    mask_prob: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The 80/10/10 rule: (inputs (B, T), labels (B, T)) with labels = the original token at the
        chosen positions and IGNORE_INDEX (-100) elsewhere.

        Each maskable token (not special, not padding) is chosen with probability mask_prob (None:
        the config's); a chosen
        token becomes [MASK] with p 0.8, a uniformly random non-special token with p 0.1, and stays
        with p 0.1. A batch where no token was chosen but some could be gets its first maskable token
        chosen (so the loss is defined). Draws come from `generator` (its device) or torch's RNG."""
        c = self.config
        if c.mask_id is None:
            raise ValueError("masked-language modelling needs BERTConfig.mask_id; this model has none")
        ids = self._check_ids(input_ids)
        mask = self._check_mask(attention_mask, ids, "attention_mask")
        mask_prob = c.mask_prob if mask_prob is None else check_real("mask_prob", mask_prob, 0.0)
        if not 0.0 < mask_prob <= 1.0:
            raise ValueError(f"mask_prob must lie in (0, 1], got {mask_prob}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        device = generator.device if generator is not None else ids.device
        specials = torch.tensor(c.special_ids, device=ids.device)
        maskable = ~torch.isin(ids, specials)
        if mask is not None:
            maskable &= mask
        chosen = (torch.rand(ids.shape, generator=generator, device=device).to(ids.device) < mask_prob) & maskable
        first = maskable.reshape(-1).long().argmax()  # the first maskable token (0 when none)
        fallback = torch.zeros_like(chosen).reshape(-1)
        fallback[first] = ~chosen.any() & maskable.reshape(-1)[first]
        chosen |= fallback.view_as(chosen)
        action = torch.rand(ids.shape, generator=generator, device=device).to(ids.device)
        to_mask = chosen & (action < 0.8)
        to_random = chosen & (action >= 0.8) & (action < 0.9)
        random_tokens = self._regular_tokens(ids.shape, generator, ids.device)
        inputs = torch.where(to_mask, c.mask_id, torch.where(to_random, random_tokens, ids))
        labels = torch.where(chosen, ids, IGNORE_INDEX)
        return inputs, labels

    def _masked_nll(self, h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean NLL (nats) of labels (B, T) at positions != IGNORE_INDEX, fused with the decoder."""
        t = self.transform(h).reshape(-1, h.shape[-1])  # (B * T, dim)
        return linear_cross_entropy(t, self.embed.weight.to(t.dtype), labels.reshape(-1),
                                    bias=self.head_bias.to(t.dtype), ignore_index=IGNORE_INDEX)

    def loss(self, batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """batch: byte windows (B, L) (or a dict of input_ids / attention_mask / token_type_ids) ->
        {"loss": mean NLL of the masked tokens in nats, "bits_per_masked_byte"}."""
        ids, attention_mask, types = self._batch(batch)
        inputs, labels = self.mask_tokens(ids, attention_mask, generator)
        if self.training and torch.is_grad_enabled():  # the unigram baseline's counts (training data only)
            counted = ids if attention_mask is None else ids[self._check_mask(attention_mask, ids, "attention_mask")]
            self.token_counts += torch.bincount(counted.reshape(-1), minlength=self.config.vocab_size)
        nll = self._masked_nll(self.hidden(inputs, attention_mask, types), labels)
        return {"loss": nll, "bits_per_masked_byte": nll.detach() / math.log(2)}

    # -- evaluation ------------------------------------------------------------------------------
    def _unigram_log_probs(self, counts: torch.Tensor) -> torch.Tensor:
        """Add-one smoothed log-probabilities (V,) over the non-special tokens (specials: -inf)."""
        counts = counts.double().clone()
        special = torch.tensor(self.config.special_ids, dtype=torch.long)
        counts[special] = 0
        counts += 1
        counts[special] = 0
        return (counts / counts.sum()).log()

    @torch.no_grad()
    def evaluate(self, dataset, *, max_items: int | None = None, batch_size: int = 8, seed: int = 0,
                 mask_prob: float = 0.15, unigram_counts: torch.Tensor | None = None) -> dict[str, float]:
        """Masked-token accuracy and bits per masked byte on the first max_items windows of a byte
        dataset, masks drawn by the 80/10/10 rule at rate mask_prob (15% whatever the training rate,
        so models compare) from a torch.Generator seeded with `seed` (the same positions every
        call), beside the unigram baseline on the same positions (predict the most frequent byte;
        bits from the add-one smoothed byte frequencies). The unigram counts: `unigram_counts` (V,)
        if given, else those of the training batches (token_counts), else the bytes of `dataset`
        after the evaluated windows (omitted when none are left)."""
        count = evaluation_count(dataset, max_items, batch_size)
        seed = check_int("seed", seed)
        device = self.embed.weight.device
        generator = torch.Generator().manual_seed(seed)  # CPU draws: the same masks on any device
        if unigram_counts is None and int(self.token_counts.sum()) > 0:
            unigram_counts = self.token_counts
        if unigram_counts is None:
            data = getattr(dataset, "data", None)
            stride = getattr(dataset, "stride", None)
            if isinstance(data, torch.Tensor) and stride:
                rest = data[(count - 1) * stride + len(dataset[0]):]
                if rest.numel():
                    unigram_counts = torch.bincount(rest.long(), minlength=self.config.vocab_size)
        if unigram_counts is not None:
            if not isinstance(unigram_counts, torch.Tensor) or unigram_counts.shape != (self.config.vocab_size,):
                raise ValueError(f"unigram_counts must be a tensor ({self.config.vocab_size},), got "
                                 f"{getattr(unigram_counts, 'shape', type(unigram_counts).__name__)}")
            log_unigram = self._unigram_log_probs(unigram_counts.cpu())
        nll, correct, uni_nll, uni_correct, total = 0.0, 0, 0.0, 0, 0
        for begin in range(0, count, batch_size):
            batch = torch.stack([dataset[i] for i in range(begin, min(count, begin + batch_size))])
            ids, attention_mask, types = self._batch(batch)
            inputs, labels = self.mask_tokens(ids.cpu(), attention_mask, generator, mask_prob)
            chosen = labels != IGNORE_INDEX  # (B, T)
            h = self.hidden(inputs.to(device), attention_mask, types)
            logits = self.logits(h[chosen.to(device)]).double().cpu()  # (M, V)
            targets = labels[chosen]  # (M,)
            nll += float(F.cross_entropy(logits, targets, reduction="sum"))
            correct += int((logits.argmax(dim=-1) == targets).sum())
            total += targets.numel()
            if unigram_counts is not None:
                uni_nll -= float(log_unigram[targets].sum())
                uni_correct += int((targets == log_unigram.argmax()).sum())
        metrics = {"masked_accuracy": correct / total, "bits_per_masked_byte": nll / total / math.log(2),
                   "masked_tokens": float(total)}
        if unigram_counts is not None:
            metrics.update(unigram_masked_accuracy=uni_correct / total,
                           unigram_bits_per_masked_byte=uni_nll / total / math.log(2))
        return metrics

    # -- fill-mask and sampling -------------------------------------------------------------------
    def _template(self, text: str, num_bytes: int) -> tuple[list[int], list[list[int]]]:
        """[CLS] text [SEP] with each "<mask>" as num_bytes [MASK] ids -> (ids, positions per mask)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        parts = text.split(MASK_TEXT)
        ids, spans = [self.config.cls_id], []
        for i, part in enumerate(parts):
            if i:
                spans.append(list(range(len(ids), len(ids) + num_bytes)))
                ids += [self.config.mask_id] * num_bytes
            ids += list(part.encode("utf-8"))
        ids.append(self.config.sep_id)
        if len(ids) > self.config.context:
            raise ValueError(f"text is {len(ids)} tokens with [CLS], [SEP] and the masks, more than the "
                             f"context ({self.config.context})")
        return ids, spans

    @torch.no_grad()
    def _byte_log_probs(self, ids: torch.Tensor, positions: list[int]) -> torch.Tensor:
        """ids (B, T) -> log-probabilities over the 256 bytes at `positions`, (B, P, 256), renormalised
        over bytes (the special ids are never a fill)."""
        h = self.hidden(ids.to(self.embed.weight.device))[:, positions]  # (B, P, dim)
        return self.logits(h).float()[..., :NUM_BYTES].log_softmax(dim=-1).cpu()

    @staticmethod
    def _decode(tokens) -> str:
        return bytes(int(t) for t in tokens if 0 <= int(t) < NUM_BYTES).decode("utf-8", errors="backslashreplace")

    @torch.no_grad()
    def fill_mask(self, text: str, top_k: int = 5, num_bytes: int = 1):
        """The top_k fills of each "<mask>" in text, most likely first.

        Each "<mask>" stands for num_bytes bytes. num_bytes 1: one forward pass, every mask's bytes
        ranked by probability (as Hugging Face's fill-mask pipeline). num_bytes > 1: the span is
        filled left to right by a beam search of width top_k (each step one forward pass over the
        beams, the span's later bytes still [MASK]); score = the product of the chosen bytes'
        probabilities. Every mask is filled on its own, the other masks staying [MASK].
        Returns, for one mask, a list of top_k dicts {"fill": str (the bytes decoded as UTF-8,
        invalid ones backslash-escaped), "bytes": list of ints, "score": float, "text": text with
        this fill}; for several masks, one such list per mask."""
        self._need_bytes("fill_mask")
        top_k = check_int("top_k", top_k, 1)
        num_bytes = check_int("num_bytes", num_bytes, 1)
        ids, spans = self._template(text, num_bytes)
        if not spans:
            raise ValueError(f"text must contain at least one {MASK_TEXT!r}, got {text!r:.80}")
        top_k = min(top_k, NUM_BYTES ** num_bytes)
        results = []
        for m, span in enumerate(spans):
            beams = [([], 0.0)]  # (bytes so far, sum of log-probabilities)
            for j, position in enumerate(span):
                batch = torch.tensor([ids] * len(beams), dtype=torch.int64)
                for b, (filled, _) in enumerate(beams):
                    batch[b, span[:j]] = torch.tensor(filled, dtype=torch.int64)
                log_probs = self._byte_log_probs(batch, [position])[:, 0]  # (beams, 256)
                scores = torch.tensor([s for _, s in beams], dtype=torch.float64)[:, None] + log_probs.double()
                best = scores.reshape(-1).topk(min(top_k, scores.numel()))
                beams = [(beams[int(i) // NUM_BYTES][0] + [int(i) % NUM_BYTES], float(s))
                         for s, i in zip(best.values, best.indices)]
            pieces = text.split(MASK_TEXT)
            candidates = []
            for filled, score in beams:
                fill = self._decode(filled)
                full = MASK_TEXT.join(pieces[:m + 1]) + fill + MASK_TEXT.join(pieces[m + 1:])
                candidates.append({"fill": fill, "bytes": filled, "score": math.exp(score), "text": full})
            results.append(candidates)
        return results[0] if len(results) == 1 else results

    @torch.no_grad()
    def sample(self, n: int, text: str = "", length: int | None = None, steps: int | None = None,
               temperature: float = 1.0, seed: int | None = None) -> torch.Tensor:
        """n byte sequences (n, L) int64: `text` with each "<mask>" (one byte each) filled, or with
        text empty `length` bytes (default min(64, context - 2)) generated from all-[MASK].

        Filling is iterative (MaskGIT-style): over `steps` rounds (default: one per masked byte), every
        still-masked position draws a byte from softmax(logits / temperature) (temperature 0: the
        argmax), and the most confident draws, an equal share of the remaining masks per round, are
        kept. seed: a torch.Generator for the draws (None: torch's RNG)."""
        self._need_bytes("sample")
        n = check_int("n", n, 1)
        temperature = check_real("temperature", temperature, 0.0)
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if text and MASK_TEXT not in text:
            raise ValueError(f"text must contain {MASK_TEXT!r} (one byte each) to fill, got {text!r:.80}")
        if not text:
            length = min(64, self.config.context - 2) if length is None else check_int("length", length, 1)
            text = MASK_TEXT * length
        elif length is not None:
            raise ValueError("give length only without text (the masks of text set the length)")
        ids, spans = self._template(text, 1)
        masked = [s[0] for s in spans]
        rounds = len(masked) if steps is None else min(check_int("steps", steps, 1), len(masked))
        generator = torch.Generator().manual_seed(check_int("seed", seed)) if seed is not None else None
        tokens = torch.tensor([ids] * n, dtype=torch.int64)  # (n, L + 2)
        still = torch.zeros(tokens.shape, dtype=torch.bool)
        still[:, masked] = True
        for r in range(rounds):
            log_probs = self._byte_log_probs(tokens, list(range(tokens.shape[1])))  # (n, L + 2, 256)
            if temperature == 0:
                confidence, draws = log_probs.max(dim=-1)
            else:
                probs = (log_probs / temperature).softmax(dim=-1)
                draws = torch.multinomial(probs.reshape(-1, NUM_BYTES), 1, generator=generator).view(tokens.shape)
                confidence = log_probs.gather(-1, draws[..., None])[..., 0]
            remaining = int(still[0].sum())
            keep = math.ceil(remaining / (rounds - r))
            confidence = confidence.masked_fill(~still, float("-inf"))
            chosen = torch.zeros_like(still).scatter(1, confidence.topk(keep, dim=1).indices, True) & still
            tokens = torch.where(chosen, draws, tokens)
            still &= ~chosen
        return tokens[:, 1:-1]

    def sample_files(self, samples: torch.Tensor) -> dict[str, bytes]:
        """samples.txt: each sample's bytes decoded as UTF-8 (invalid bytes replaced)."""
        texts = [bytes(int(t) for t in row).decode("utf-8", errors="replace")
                 for row in samples.long().clamp(0, 255).cpu()]
        return {"samples.txt": ("\n" + "-" * 40 + "\n").join(texts).encode("utf-8")}

    # -- fitting to data ---------------------------------------------------------------------------
    @classmethod
    def config_for_data(cls, dataset, overrides: dict[str, Any] | None = None, *,
                        data_name: str | None = None) -> BERTConfig:
        """Byte text only (vocab_size 256 data); context defaults to the dataset's block_size (windows
        are cut to context - 2 bytes to leave room for [CLS] and [SEP])."""
        cls.check_data(dataset, data_name)
        vocab = int(getattr(dataset, "vocab_size", NUM_BYTES))
        if vocab != NUM_BYTES:
            name = f"data {str(data_name)!r}" if data_name is not None else "the data"
            raise ValueError(f"bert trains on byte-level text (vocab 256), but {name} has vocab_size {vocab}")
        values = dict(overrides or {})
        if getattr(dataset, "block_size", None):
            values.setdefault("context", int(dataset.block_size))
        config = cls.config_class(**values)
        if not config.byte_level:
            raise ValueError(f"bert on text data needs a byte-level config (vocab_size >= 259, special ids "
                             f">= 256), got vocab_size {config.vocab_size}, special ids {config.special_ids}")
        return config

    # -- Hugging Face weights -----------------------------------------------------------------------
    @staticmethod
    def _hf_layer_keys(i: int) -> dict[str, str]:
        """Our per-layer names -> Hugging Face's (q/k/v handled apart: they are fused here)."""
        p = f"encoder.layer.{i}."
        ours = f"layers.{i}."
        return {ours + "attn.out.weight": p + "attention.output.dense.weight",
                ours + "attn.out.bias": p + "attention.output.dense.bias",
                ours + "norm1.weight": p + "attention.output.LayerNorm.weight",
                ours + "norm1.bias": p + "attention.output.LayerNorm.bias",
                ours + "fc1.weight": p + "intermediate.dense.weight",
                ours + "fc1.bias": p + "intermediate.dense.bias",
                ours + "fc2.weight": p + "output.dense.weight",
                ours + "fc2.bias": p + "output.dense.bias",
                ours + "norm2.weight": p + "output.LayerNorm.weight",
                ours + "norm2.bias": p + "output.LayerNorm.bias"}

    _HF_EMBED_KEYS = {"embed.weight": "embeddings.word_embeddings.weight",
                      "pos_embed.weight": "embeddings.position_embeddings.weight",
                      "type_embed.weight": "embeddings.token_type_embeddings.weight",
                      "embed_norm.weight": "embeddings.LayerNorm.weight",
                      "embed_norm.bias": "embeddings.LayerNorm.bias"}
    _HF_HEAD_KEYS = {"head_dense.weight": "cls.predictions.transform.dense.weight",
                     "head_dense.bias": "cls.predictions.transform.dense.bias",
                     "head_norm.weight": "cls.predictions.transform.LayerNorm.weight",
                     "head_norm.bias": "cls.predictions.transform.LayerNorm.bias",
                     "head_bias": "cls.predictions.bias"}
    # keys of BertModel / BertForPreTraining that this model has no use for
    _HF_IGNORED = ("pooler.", "cls.seq_relationship.", "embeddings.position_ids", "embeddings.token_type_ids")

    @classmethod
    def from_hf_state_dict(cls, state_dict: dict[str, torch.Tensor], num_heads: int | None = None,
                           hf_config: Any = None, **overrides) -> "BERT":
        """A BERT holding the weights of a Hugging Face BertForMaskedLM or BertModel state dict.

        state_dict  the tensors (e.g. safetensors.torch.load_file("model.safetensors")); keys with
                    or without the "bert." prefix; pooler / next-sentence weights are ignored
        num_heads   required unless hf_config gives num_attention_heads (state dicts do not store it)
        hf_config   the model's config.json as a dict (or a transformers config): num_attention_heads,
                    layer_norm_eps, hidden_act, pad_token_id are read from it
        overrides   other BERTConfig fields (dropout, padding, mask_id, cls_id, sep_id, ...); the
                    shapes (vocab_size, dim, depth, intermediate_size, context, type_vocab_size)
                    come from the tensors. Special ids default to pad_token_id (else 0) and BERT's
                    WordPiece [CLS] 101, [SEP] 102, [MASK] 103 when the vocabulary holds them.
        A BertModel (no MLM head) gets a freshly initialised head, with a warning. The model is
        float32 on the CPU; move it with .to().
        """
        if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
            raise TypeError("state_dict must be a dict of name -> tensor (a Hugging Face BERT state dict)")
        if hf_config is not None and not isinstance(hf_config, dict):
            if not hasattr(hf_config, "to_dict"):
                raise TypeError(f"hf_config must be a dict (config.json) or a transformers config, got "
                                f"{type(hf_config).__name__}")
            hf_config = hf_config.to_dict()
        hf_config = dict(hf_config or {})
        sd = {(k[len("bert."):] if k.startswith("bert.") else k): v for k, v in state_dict.items()}
        word = sd.get("embeddings.word_embeddings.weight")
        if word is None:
            raise ValueError("state_dict has no 'embeddings.word_embeddings.weight' (or 'bert.' + it): not a "
                             f"Hugging Face BERT state dict (keys: {sorted(state_dict)[:5]} ...)")
        vocab, dim = word.shape
        depth = 1 + max((int(k.split(".")[2]) for k in sd if k.startswith("encoder.layer.")), default=-1)
        if depth < 1:
            raise ValueError("state_dict has no encoder layers ('encoder.layer.N.*')")
        if num_heads is None:
            num_heads = hf_config.get("num_attention_heads")
        if num_heads is None:
            raise ValueError("num_heads is required: Hugging Face state dicts do not store the number of attention "
                             "heads (pass num_heads=, or hf_config with num_attention_heads)")
        activation = hf_config.get("hidden_act", "gelu")
        if activation not in _HF_ACTIVATIONS:
            raise ValueError(f"hidden_act {activation!r} is not supported; expected one of {sorted(_HF_ACTIVATIONS)}")
        inferred = {"vocab_size": int(vocab), "dim": int(dim), "depth": depth,
                    "intermediate_size": int(sd["encoder.layer.0.intermediate.dense.weight"].shape[0]),
                    "context": int(sd["embeddings.position_embeddings.weight"].shape[0]),
                    "type_vocab_size": int(sd["embeddings.token_type_embeddings.weight"].shape[0])}
        for name, value in overrides.items():
            if name in inferred and value != inferred[name]:
                raise ValueError(f"{name}={value!r} contradicts the state dict, whose tensors give {inferred[name]}")
        pad = hf_config.get("pad_token_id")
        values = {**inferred, "num_heads": num_heads, "activation": _HF_ACTIVATIONS[activation],
                  "layer_norm_eps": float(hf_config.get("layer_norm_eps", 1e-12)),
                  "pad_id": 0 if pad is None else pad,
                  "cls_id": 101 if vocab > 103 else None, "sep_id": 102 if vocab > 103 else None,
                  "mask_id": 103 if vocab > 103 else None, **overrides}
        model = cls(BERTConfig(**values))
        model.load_hf_state_dict(state_dict)
        return model

    def load_hf_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Copy a Hugging Face BERT state dict (shapes must match this config) into this model."""
        sd = {(k[len("bert."):] if k.startswith("bert.") else k): v for k, v in state_dict.items()}
        ours: dict[str, torch.Tensor] = {}
        used = set()

        def take(our_name, hf_name):
            if hf_name in sd:
                ours[our_name] = sd[hf_name]
                used.add(hf_name)

        for our_name, hf_name in self._HF_EMBED_KEYS.items():
            take(our_name, hf_name)
        for i in range(self.config.depth):
            for our_name, hf_name in self._hf_layer_keys(i).items():
                take(our_name, hf_name)
            p = f"encoder.layer.{i}.attention.self."
            for kind in ("weight", "bias"):
                parts = [p + f"{name}.{kind}" for name in ("query", "key", "value")]
                if all(k in sd for k in parts):
                    ours[f"layers.{i}.attn.qkv.{kind}"] = torch.cat([sd[k] for k in parts], dim=0)
                    used.update(parts)
        for our_name, hf_name in self._HF_HEAD_KEYS.items():
            take(our_name, hf_name)
        decoder = sd.get("cls.predictions.decoder.weight")
        if decoder is not None:
            used.add("cls.predictions.decoder.weight")
            if "embed.weight" in ours and not torch.equal(decoder, ours["embed.weight"]):
                raise ValueError("cls.predictions.decoder.weight differs from the word embeddings: this BERT ties "
                                 "its MLM decoder to them (untied decoders are not supported)")
        decoder_bias = sd.get("cls.predictions.decoder.bias")
        if decoder_bias is not None:
            used.add("cls.predictions.decoder.bias")
            ours.setdefault("head_bias", decoder_bias)
        unexpected = sorted(k for k in sd if k not in used and not k.startswith(self._HF_IGNORED))
        if unexpected:
            raise ValueError(f"state_dict has keys this BERT does not know: {unexpected[:8]}")
        own = self.state_dict()
        missing = sorted(k for k in own if k not in ours and k != "token_counts")
        head = set(self._HF_HEAD_KEYS)
        if missing and set(missing) <= head:
            warnings.warn("the state dict has no MLM head (a BertModel): the head is freshly initialised",
                          stacklevel=3)
        elif missing:
            raise ValueError(f"state_dict lacks weights for: {missing[:8]}")
        for name, tensor in ours.items():
            if tuple(tensor.shape) != tuple(own[name].shape):
                raise ValueError(f"state_dict tensor for {name} has shape {tuple(tensor.shape)}, this model "
                                 f"expects {tuple(own[name].shape)}")
        with torch.no_grad():
            for name, tensor in ours.items():
                own[name].copy_(tensor)

    def to_hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights in Hugging Face BertForMaskedLM's layout and names (q/k/v split, decoder tied)."""
        own = {k: v.detach() for k, v in self.state_dict().items()}
        out = {"bert." + hf: own[ours] for ours, hf in self._HF_EMBED_KEYS.items()}
        for i in range(self.config.depth):
            for kind in ("weight", "bias"):
                q, k, v = own[f"layers.{i}.attn.qkv.{kind}"].chunk(3, dim=0)
                p = f"bert.encoder.layer.{i}.attention.self."
                out.update({p + f"{name}.{kind}": t.clone() for name, t in zip(("query", "key", "value"), (q, k, v))})
            out.update({"bert." + hf: own[ours] for ours, hf in self._hf_layer_keys(i).items()})
        out.update({hf: own[ours] for ours, hf in self._HF_HEAD_KEYS.items()})
        out["cls.predictions.decoder.weight"] = own["embed.weight"]
        out["cls.predictions.decoder.bias"] = own["head_bias"]
        return out


__all__ = ["BERT", "BERTConfig", "BERTLayer", "BERTSelfAttention", "IGNORE_INDEX", "MASK_TEXT"]
