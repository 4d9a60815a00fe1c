"""ByteTextEncoder: a tiny transformer over UTF-8 bytes, the caption encoder of text-to-image diffusion.

No tokenizer files and no pretrained weights: a caption's UTF-8 bytes (ids 0..255) follow a CLS
token (id 257) and are padded with PAD (id 256) to the longest caption of the batch (at most
max_len tokens, longer captions are truncated). The encoder is trained jointly with the denoiser,
which reads its output tokens by cross-attention.

    tokenize(texts)      -> ids (N, L) int64, mask (N, L) bool (True = real token, CLS included)
    forward(ids, mask)   -> tokens (N, L, dim): byte embedding + learned position, depth pre-LN
                            blocks of non-causal self-attention (padded keys masked out) and MLP,
                            final LayerNorm
    encode(texts, device=None) -> (tokens, mask)

The empty caption "" is the CLS token alone. Outputs at padded positions are finite but
meaningless; consumers must pass the mask on (genkernels.models.UNet's context_mask).
"""
from __future__ import annotations

import numbers

import torch
from torch import nn

from genkernels.nn.attention import SelfAttention

PAD_ID = 256
CLS_ID = 257
VOCAB_SIZE = 258


class _EncoderBlock(nn.Module):
    """x + SelfAttention(LN(x)), then x + MLP(LN(x)); x (N, L, dim)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, causal=False)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x, key_padding_mask):
        x = x + self.attn(self.norm1(x), key_padding_mask=key_padding_mask)
        return x + self.mlp(self.norm2(x))


class ByteTextEncoder(nn.Module):
    """Byte-level transformer text encoder: texts -> (N, L, dim) tokens and an (N, L) mask."""

    def __init__(self, dim: int = 64, depth: int = 2, num_heads: int = 4, max_len: int = 32):
        super().__init__()
        for name, value, minimum in (("dim", dim, 1), ("depth", depth, 0), ("num_heads", num_heads, 1),
                                     ("max_len", max_len, 1)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.dim, self.max_len = dim, max_len
        self.token_embed = nn.Embedding(VOCAB_SIZE, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, max_len, dim) * 0.02)
        self.blocks = nn.ModuleList(_EncoderBlock(dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """texts (N strings) -> ids (N, L) int64 (CLS, bytes..., PAD...), mask (N, L) bool, True = real;
        L = the longest caption + 1, at most max_len (longer captions are truncated)."""
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)) \
                or not all(isinstance(text, str) for text in texts):
            raise TypeError(f"texts must be a list of str, got {texts!r:.80}")
        if not texts:
            raise ValueError("texts must not be empty")
        encoded = [[CLS_ID, *text.encode("utf-8")][: self.max_len] for text in texts]
        length = max(len(ids) for ids in encoded)
        ids = torch.full((len(texts), length), PAD_ID, dtype=torch.long)
        for row, tokens in enumerate(encoded):
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        return ids, ids != PAD_ID

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """ids (N, L) int64 in [0, 258), mask (N, L) bool True = real token (None: all real) -> (N, L, dim)."""
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype.is_floating_point \
                or ids.dtype == torch.bool:
            got = f"dtype {ids.dtype} shape {tuple(ids.shape)}" if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise ValueError(f"ids must be an (N, L) int64 tensor of byte ids, got {got}")
        if ids.shape[1] > self.max_len:
            raise ValueError(f"ids must have L <= max_len = {self.max_len}, got shape {tuple(ids.shape)}")
        if ids.numel() and ids.device.type == "cpu" and not torch.compiler.is_compiling() \
                and (ids.min() < 0 or ids.max() >= VOCAB_SIZE):  # a value check syncs: eager CPU only
            raise ValueError(f"ids must be in [0, {VOCAB_SIZE}), got [{ids.min().item()}, {ids.max().item()}]")
        if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool
                                 or mask.shape != ids.shape):
            got = (f"dtype {mask.dtype} shape {tuple(mask.shape)}" if isinstance(mask, torch.Tensor)
                   else type(mask).__name__)
            raise ValueError(f"mask must be a bool tensor of ids' shape {tuple(ids.shape)}, got {got}")
        length = ids.shape[1]
        x = self.token_embed(ids) + self.pos_embed[:, :length]  # (N, L, dim)
        key_padding_mask = None if mask is None else ~mask
        for block in self.blocks:
            x = block(x, key_padding_mask)
        return self.norm(x)  # (N, L, dim)

    def encode(self, texts: list[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """texts -> (tokens (N, L, dim), mask (N, L) bool) on `device` (default: the encoder's)."""
        device = device if device is not None else self.token_embed.weight.device
        ids, mask = self.tokenize(texts)
        ids, mask = ids.to(device), mask.to(device)
        return self(ids, mask), mask

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_len={self.max_len}"


__all__ = ["ByteTextEncoder", "PAD_ID", "CLS_ID", "VOCAB_SIZE"]
