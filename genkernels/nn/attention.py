"""Attention layers on the fused op: a torch.nn.MultiheadAttention drop-in, compact self- and
cross-attention modules, and a KV cache for step-by-step generation.

Layers own the projections and call genkernels.ops.attention (Triton on GPU, SDPA / the PyTorch
reference on CPU). Shapes use B batch, T query length, S key length, H query heads, Hkv KV heads,
D head dim.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genkernels.ops._library import needs_grad
from genkernels.ops.attention import MAX_HEAD_DIM, SUPPORTED_DTYPES, attention
from genkernels.ops.attention_decode import attention_decode


def _shape(x) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else f"a {type(x).__name__}"


def _check_input(name: str, x, layout: str, width: int, width_name: str, ranks=(3,)):
    """x must be a tensor of one of `ranks` dims whose last dim is `width` (the layer's `width_name`)."""
    if not isinstance(x, torch.Tensor) or x.dim() not in ranks:
        expected = " or ".join(f"{r}-d" for r in ranks)
        raise ValueError(f"{name} must be a {expected} tensor {layout} with {width_name} = {width}, got {_shape(x)}")
    if x.shape[-1] != width:
        raise ValueError(f"{name} must have {width_name} = {width} as its last dimension {layout}, got {_shape(x)}")


class MultiheadAttention(nn.Module):
    """Drop-in for torch.nn.MultiheadAttention (same arguments, parameters and state_dict keys).

    The fused path runs when the call is expressible by the op: need_weights=False, no dropout
    while training, no bias_k/bias_v or zero-attention row, batched input, and attn_mask absent or
    the causal mask (bool or float, or is_causal=True). Anything else goes to torch's own
    F.multi_head_attention_forward, so results always match torch.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False,
                 kdim=None, vdim=None, batch_first=False, device=None, dtype=None):
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be positive, got {embed_dim} and {num_heads}")
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        factory = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim, **factory))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim, **factory))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim, **factory))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, embed_dim, **factory))
            self.bias_v = nn.Parameter(torch.empty(1, 1, embed_dim, **factory))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self):
        # The same initialisation as torch.nn.MultiheadAttention.
        if self._qkv_same_embed_dim:
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            nn.init.xavier_uniform_(self.q_proj_weight)
            nn.init.xavier_uniform_(self.k_proj_weight)
            nn.init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.constant_(self.in_proj_bias, 0.0)
            nn.init.constant_(self.out_proj.bias, 0.0)
        if self.bias_k is not None:
            nn.init.xavier_normal_(self.bias_k)
            nn.init.xavier_normal_(self.bias_v)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        """query (L, N, E) or (N, L, E) with batch_first; key/value (S, N, kdim/vdim) likewise.

        Returns (attn_output in query's layout, attn_weights or None), as torch does.
        """
        self._check_inputs(query, key, value)
        causal = self._fused_causal(query, key, key_padding_mask, need_weights, attn_mask, is_causal)
        if causal is None:
            return self._torch_forward(query, key, value, key_padding_mask, need_weights, attn_mask,
                                       average_attn_weights, is_causal)
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))  # (N, L, E)
        q, k, v = self._project(query, key, value)
        batch, tgt_len = q.shape[0], q.shape[1]
        heads = lambda t: t.unflatten(-1, (self.num_heads, self.head_dim))  # noqa: E731 (N, L, H, D)
        out = attention(heads(q), heads(k), heads(v), causal=causal, key_padding_mask=key_padding_mask)
        out = self.out_proj(out.reshape(batch, tgt_len, self.embed_dim))
        return (out if self.batch_first else out.transpose(0, 1)), None

    def _check_inputs(self, query, key, value):
        """Shape errors here, naming the argument and the embed dim, rather than deep in a matmul."""
        batched = "(N, L, E)" if self.batch_first else "(L, N, E)"
        _check_input("query", query, f"{batched} (or unbatched (L, E))", self.embed_dim, "embed_dim", (2, 3))
        _check_input("key", key, "like query", self.kdim, "kdim", (query.dim(),))
        _check_input("value", value, "like query", self.vdim, "vdim", (query.dim(),))
        if query.dim() == 2:  # unbatched (L, E)
            seq_axis, batch_axis = 0, None
        else:
            seq_axis, batch_axis = (1, 0) if self.batch_first else (0, 1)
        if key.shape[seq_axis] != value.shape[seq_axis]:
            raise ValueError(f"key and value must have the same length S, got shapes {tuple(key.shape)} and "
                             f"{tuple(value.shape)}")
        if batch_axis is not None and not query.shape[batch_axis] == key.shape[batch_axis] == value.shape[batch_axis]:
            raise ValueError(
                f"query, key and value must have the same batch size N (dim {batch_axis}), got shapes "
                f"{tuple(query.shape)}, {tuple(key.shape)} and {tuple(value.shape)}"
            )

    def _project(self, query, key, value):
        if self._qkv_same_embed_dim:
            if query is key and key is value:  # self-attention: one GEMM
                return F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
            w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        return F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)

    def _fused_causal(self, query, key, key_padding_mask, need_weights, attn_mask, is_causal):
        """None when the call needs torch's path; else whether the fused call is causal."""
        if need_weights or (self.dropout > 0 and self.training) or self.bias_k is not None or self.add_zero_attn:
            return None
        if query.dim() != 3 or query.dtype not in SUPPORTED_DTYPES or self.head_dim > MAX_HEAD_DIM:
            return None
        if key_padding_mask is not None and key_padding_mask.dtype != torch.bool:
            return None
        if attn_mask is None:
            return bool(is_causal)
        tgt_len, src_len = query.shape[1 if self.batch_first else 0], key.shape[1 if self.batch_first else 0]
        if attn_mask.dim() != 2 or tgt_len != src_len:
            return None
        if is_causal:
            return True  # the caller's hint that attn_mask is the causal mask, as in torch
        future = torch.ones(tgt_len, src_len, dtype=torch.bool, device=attn_mask.device).triu(1)
        if attn_mask.dtype == torch.bool:
            return True if torch.equal(attn_mask, future) else None
        blocked = torch.isneginf(attn_mask)
        return True if torch.equal(blocked, future) and not attn_mask[~blocked].any() else None

    def _torch_forward(self, query, key, value, key_padding_mask, need_weights, attn_mask,
                       average_attn_weights, is_causal):
        """torch.nn.MultiheadAttention.forward's own path (attention weights, dropout, float masks)."""
        batched = query.dim() == 3
        if self.batch_first and batched:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if is_causal and attn_mask is None:
            tgt_len, src_len = query.shape[0], key.shape[0]
            attn_mask = torch.ones(tgt_len, src_len, dtype=torch.bool, device=query.device).triu(1)
        out, weights = F.multi_head_attention_forward(
            query, key, value, self.embed_dim, self.num_heads, self.in_proj_weight, self.in_proj_bias,
            self.bias_k, self.bias_v, self.add_zero_attn, self.dropout, self.out_proj.weight,
            self.out_proj.bias, training=self.training, key_padding_mask=key_padding_mask,
            need_weights=need_weights, attn_mask=attn_mask,
            use_separate_proj_weight=not self._qkv_same_embed_dim, q_proj_weight=self.q_proj_weight,
            k_proj_weight=self.k_proj_weight, v_proj_weight=self.v_proj_weight,
            average_attn_weights=average_attn_weights, is_causal=is_causal,
        )
        if self.batch_first and batched:
            out = out.transpose(0, 1)
        return out, weights


class KVCache:
    """Preallocated keys and values for generation: (B, max_seqlen, Hkv, D) each.

    `append(k, v)` writes T new positions after the current ones (the same count for every
    sequence) and returns the filled views; `seqlens` (int32, (B,)) is what attention_decode reads.
    """

    def __init__(self, batch_size, max_seqlen, num_kv_heads, head_dim, device=None, dtype=torch.float32):
        shape = (batch_size, max_seqlen, num_kv_heads, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.seqlens = torch.zeros(batch_size, device=device, dtype=torch.int32)
        self.length = 0

    @property
    def max_seqlen(self) -> int:
        return self.k.shape[1]

    def append(self, k: torch.Tensor, v: torch.Tensor):
        """k, v (B, T, Hkv, D) -> the cache's filled keys and values (B, length + T, Hkv, D)."""
        if k.shape != v.shape or k.shape[0] != self.k.shape[0] or k.shape[2:] != self.k.shape[2:]:
            raise ValueError(
                f"k and v must have shape (B, T, Hkv, D) = ({self.k.shape[0]}, T, {self.k.shape[2]}, "
                f"{self.k.shape[3]}), got {tuple(k.shape)} and {tuple(v.shape)}"
            )
        new_length = self.length + k.shape[1]
        if new_length > self.max_seqlen:
            raise ValueError(
                f"KVCache is full: {self.length} + {k.shape[1]} positions exceed max_seqlen {self.max_seqlen}"
            )
        self.k[:, self.length:new_length] = k
        self.v[:, self.length:new_length] = v
        self.length = new_length
        self.seqlens.fill_(new_length)
        return self.keys, self.values

    @property
    def keys(self) -> torch.Tensor:
        return self.k[:, : self.length]

    @property
    def values(self) -> torch.Tensor:
        return self.v[:, : self.length]

    def reset(self):
        self.length = 0
        self.seqlens.zero_()


def _check_cache(cache: KVCache, batch: int, num_kv_heads: int, head_dim: int):
    expected = (batch, num_kv_heads, head_dim)
    got = (cache.k.shape[0], cache.k.shape[2], cache.k.shape[3])
    if got != expected:
        raise ValueError(
            f"kv_cache must hold (batch, Hkv, D) = {expected} for this layer and input, got {got} "
            f"(make it with layer.new_cache(batch_size, max_seqlen))"
        )


class SelfAttention(nn.Module):
    """Multi-head self-attention with grouped-query support and an optional KV cache.

    x (B, T, dim) -> (B, T, dim). With `kv_cache`, the new keys/values are appended and the T new
    queries attend to everything cached (causal positions are bottom-right aligned, so token t of
    T sits at cache position length - T + t). Short steps (T <= decode_max_tokens) use the
    split-KV decode kernel; longer ones (prefill) the regular fused kernel.
    """

    decode_max_tokens = 16

    def __init__(self, dim, num_heads, num_kv_heads=None, head_dim=None, bias=True, causal=True,
                 device=None, dtype=None):
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads or num_heads
        if num_heads % self.num_kv_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        self.head_dim = head_dim or dim // num_heads
        self.causal = causal
        factory = {"device": device, "dtype": dtype}
        self.qkv = nn.Linear(dim, (num_heads + 2 * self.num_kv_heads) * self.head_dim, bias=bias, **factory)
        self.out = nn.Linear(num_heads * self.head_dim, dim, bias=bias, **factory)

    def new_cache(self, batch_size, max_seqlen, device=None, dtype=None) -> KVCache:
        weight = self.qkv.weight
        return KVCache(batch_size, max_seqlen, self.num_kv_heads, self.head_dim,
                       device=device or weight.device, dtype=dtype or weight.dtype)

    def forward(self, x, key_padding_mask=None, kv_cache: KVCache | None = None):
        _check_input("x", x, "(B, T, dim)", self.qkv.in_features, "dim")
        batch, tgt_len, _ = x.shape
        kv_width = self.num_kv_heads * self.head_dim
        q, k, v = self.qkv(x).split([self.num_heads * self.head_dim, kv_width, kv_width], dim=-1)
        q = q.view(batch, tgt_len, self.num_heads, self.head_dim)  # (B, T, H, D)
        k = k.view(batch, tgt_len, self.num_kv_heads, self.head_dim)  # (B, T, Hkv, D)
        v = v.view(batch, tgt_len, self.num_kv_heads, self.head_dim)
        if kv_cache is None:
            out = attention(q, k, v, causal=self.causal, key_padding_mask=key_padding_mask)
        else:
            if key_padding_mask is not None:
                raise ValueError("key_padding_mask is not supported together with kv_cache")
            _check_cache(kv_cache, batch, self.num_kv_heads, self.head_dim)
            if tgt_len <= self.decode_max_tokens and needs_grad(q, k, v):
                raise ValueError(
                    "SelfAttention with a kv_cache decodes for inference only (the decode kernel has no "
                    "backward and the cache is written in place): call it under torch.no_grad()"
                )
            keys, values = kv_cache.append(k, v)
            if tgt_len <= self.decode_max_tokens:
                out = attention_decode(q, kv_cache.k, kv_cache.v, kv_cache.seqlens, causal=self.causal)
            else:
                out = attention(q, keys, values, causal=self.causal)
        return self.out(out.reshape(batch, tgt_len, self.num_heads * self.head_dim))


class CrossAttention(nn.Module):
    """Multi-head cross-attention: queries from x (B, T, dim), keys/values from context (B, S, context_dim).

    context_mask: bool (B, S), True = padded context position. With `kv_cache`, the projected
    context is stored on the first call and reused afterwards (context is then ignored and may be None).
    """

    def __init__(self, dim, context_dim=None, num_heads=8, num_kv_heads=None, head_dim=None, bias=True,
                 device=None, dtype=None):
        super().__init__()
        context_dim = context_dim or dim
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads or num_heads
        if num_heads % self.num_kv_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        self.head_dim = head_dim or dim // num_heads
        factory = {"device": device, "dtype": dtype}
        self.q = nn.Linear(dim, num_heads * self.head_dim, bias=bias, **factory)
        self.kv = nn.Linear(context_dim, 2 * self.num_kv_heads * self.head_dim, bias=bias, **factory)
        self.out = nn.Linear(num_heads * self.head_dim, dim, bias=bias, **factory)

    def project_context(self, context):
        """context (B, S, context_dim) -> keys, values (B, S, Hkv, D)."""
        k, v = self.kv(context).unflatten(-1, (2, self.num_kv_heads, self.head_dim)).unbind(2)
        return k, v

    def forward(self, x, context=None, context_mask=None, kv_cache: KVCache | None = None):
        _check_input("x", x, "(B, T, dim)", self.q.in_features, "dim")
        batch, tgt_len, _ = x.shape
        if kv_cache is not None:
            _check_cache(kv_cache, batch, self.num_kv_heads, self.head_dim)
        if context is not None and not (kv_cache is not None and kv_cache.length > 0):
            _check_input("context", context, "(B, S, context_dim)", self.kv.in_features, "context_dim")
            if context.shape[0] != batch:
                raise ValueError(f"context must have the batch size of x ({batch}), got shape {tuple(context.shape)}")
        if context_mask is not None:
            src_len = kv_cache.length if kv_cache is not None and kv_cache.length > 0 else (
                context.shape[1] if context is not None else None)
            if (not isinstance(context_mask, torch.Tensor) or context_mask.dtype != torch.bool
                    or (src_len is not None and tuple(context_mask.shape) != (batch, src_len))):
                got = f"a {context_mask.dtype} tensor of " if isinstance(context_mask, torch.Tensor) else ""
                raise ValueError(f"context_mask must be a bool tensor of shape (B, S) = ({batch}, {src_len}), "
                                 f"got {got}{_shape(context_mask)}")
        if kv_cache is not None and kv_cache.length > 0:
            k, v = kv_cache.keys, kv_cache.values
        else:
            if context is None:
                raise ValueError("context must be given (B, S, context_dim) unless kv_cache already holds it")
            k, v = self.project_context(context)
            if kv_cache is not None:
                k, v = kv_cache.append(k, v)
        q = self.q(x).view(batch, tgt_len, self.num_heads, self.head_dim)  # (B, T, H, D)
        out = attention(q, k, v, key_padding_mask=context_mask)
        return self.out(out.reshape(batch, tgt_len, self.num_heads * self.head_dim))


__all__ = ["MultiheadAttention", "KVCache", "SelfAttention", "CrossAttention"]
