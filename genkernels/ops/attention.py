"""Fused attention: o = softmax(scale * q k^T + mask) v, without the (Sq x Sk) matrix on GPU.

Reading order: reference (pure PyTorch, also the CPU fallback) -> torch.library registration of
the forward, backward and decode ops (Triton kernels in genkernels.kernels.attention) -> autograd
-> public functions `attention`, `attention_varlen`, `attention_decode` -> validation.

Conventions (shared by every path):
  * causal masking is bottom-right aligned: query i of Sq sees keys j <= i + (Sk - Sq). For
    Sq == Sk this is the usual lower triangle; for Sq < Sk it is what a KV cache needs. (SDPA's
    is_causal is top-left aligned when Sq != Sk.)
  * key_padding_mask follows torch.nn.MultiheadAttention: bool (B, Sk), True marks a padded key
    that no query attends to.
  * a query row that sees no key returns zeros and lse = -inf, as SDPA does; its gradients are 0.
  * lse = log sum_j exp(scale * q . k_j) in natural log, float32, shape (B, Hq, Sq) (varlen:
    (Hq, total_q)); it is differentiable (its gradient folds into the softmax row term).
  * grouped-query attention: Hq must be a multiple of Hkv; query head h reads KV head h // (Hq/Hkv).
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch.library import triton_op, wrap_triton

from genkernels._backend import select
from genkernels.ops._args import direct_call_ok, untraced

BACKENDS = ("torch", "triton")
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256  # the Triton kernels keep a (BLOCK, next_power_of_2(D)) tile in registers


# ----------------------------------------------------------------------------------------------
# Reference
# ----------------------------------------------------------------------------------------------
def causal_allowed(seqlen_q: int, seqlen_k: int, device) -> torch.Tensor:
    """(Sq, Sk) bool, True where query i may see key j: j <= i + Sk - Sq (bottom-right aligned)."""
    rows = torch.arange(seqlen_q, device=device)[:, None]
    cols = torch.arange(seqlen_k, device=device)[None, :]
    return cols <= rows + (seqlen_k - seqlen_q)


def varlen_allowed(cu_seqlens_q, cu_seqlens_k, total_q: int, total_k: int, causal: bool) -> torch.Tensor:
    """(total_q, total_k) bool block-diagonal mask of packed sequences, built without host syncs."""
    batch = cu_seqlens_q.numel() - 1
    cu_q, cu_k = cu_seqlens_q.long(), cu_seqlens_k.long()
    token_q = torch.arange(total_q, device=cu_q.device)
    token_k = torch.arange(total_k, device=cu_k.device)
    seg_q = torch.searchsorted(cu_q[1:], token_q, right=True)  # which sequence each token is in
    seg_k = torch.searchsorted(cu_k[1:], token_k, right=True)
    allowed = (seg_q[:, None] == seg_k[None, :]) & (seg_q < batch)[:, None]
    if causal:
        seg_q_c = seg_q.clamp(max=max(batch - 1, 0))
        seg_k_c = seg_k.clamp(max=max(batch - 1, 0))
        pos_q = token_q - cu_q[seg_q_c]
        pos_k = token_k - cu_k[seg_k_c]
        offset = (cu_k[seg_q_c + 1] - cu_k[seg_q_c]) - (cu_q[seg_q_c + 1] - cu_q[seg_q_c])
        allowed &= pos_k[None, :] <= (pos_q + offset)[:, None]
    return allowed


def decode_allowed(cache_seqlens, seqlen_q: int, seqlen_k: int, causal: bool) -> torch.Tensor:
    """(B, Sq, S_cache) bool: key j is valid if j < cache_seqlens[b] (and causal for new tokens)."""
    lengths = cache_seqlens.long()[:, None, None]
    cols = torch.arange(seqlen_k, device=cache_seqlens.device)[None, None, :]
    allowed = cols < lengths
    if causal:
        rows = torch.arange(seqlen_q, device=cache_seqlens.device)[None, :, None]
        allowed = allowed & (cols <= lengths - seqlen_q + rows)
    return allowed


def _allowed(q, k, causal, key_padding_mask, allowed):
    """Combine every masking source into one (B or 1, Sq, Sk) bool, or None when nothing is masked."""
    if causal:
        c = causal_allowed(q.shape[1], k.shape[1], q.device)[None]
        allowed = c if allowed is None else allowed & c
    if key_padding_mask is not None:
        keep = ~key_padding_mask.bool()[:, None, :]
        allowed = keep if allowed is None else allowed & keep
    return allowed


def _expand_kv(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, S, Hkv, D) -> (B, S, Hq, D): each KV head serves Hq / Hkv consecutive query heads."""
    return t.repeat_interleave(num_heads // t.shape[2], dim=2) if t.shape[2] != num_heads else t


def attention_ref(q, k, v, *, causal=False, scale=None, key_padding_mask=None, allowed=None):
    """Explicit attention on (B, S, H, D) tensors; returns (out (B, Sq, Hq, D), lse (B, Hq, Sq)).

    Scores and p @ v run in the input dtype (what PyTorch does in that dtype); the softmax runs in
    float32 (float64 for float64 inputs). `allowed` is an extra (B or 1, Sq, Sk) bool mask.
    Differentiable, including through rows that see no key (their gradients are zero).
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    k, v = _expand_kv(k, q.shape[2]), _expand_kv(v, q.shape[2])
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k).to(acc_dtype) * scale  # (B, H, Sq, Sk)
    allowed = _allowed(q, k, causal, key_padding_mask, allowed)
    if allowed is not None:
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # (B, H, Sq); -inf where a row sees no key
    p = torch.exp(scores - lse.masked_fill(lse == float("-inf"), 0.0)[..., None])
    out = torch.einsum("bhqk,bkhd->bqhd", p.to(v.dtype), v)
    return out, lse


def attention_backward_ref(dout, q, k, v, out, lse, dlse, scale, allowed):
    """The FlashAttention-2 backward written out in PyTorch (the torch backend of the backward op).

    p = exp(s - lse), dv = p^T do, dp = do v^T, ds = p (dp - delta), delta = rowsum(do o) - dlse,
    dq = scale ds k, dk = scale ds^T q; GQA sums dk, dv over each KV head's query-head group.
    """
    num_heads, num_kv_heads = q.shape[2], k.shape[2]
    f32 = torch.float32
    k_x, v_x = _expand_kv(k, num_heads).to(f32), _expand_kv(v, num_heads).to(f32)
    qf, dof = q.to(f32), dout.to(f32)
    s = torch.einsum("bqhd,bkhd->bhqk", qf, k_x) * scale
    row_lse = lse.masked_fill(lse == float("-inf"), float("inf"))[..., None]
    p = torch.exp(s - row_lse)
    if allowed is not None:
        p = p.masked_fill(~allowed[:, None], 0.0)
    dv = torch.einsum("bhqk,bqhd->bkhd", p, dof)
    dp = torch.einsum("bqhd,bkhd->bhqk", dof, v_x)
    delta = (dof * out.to(f32)).sum(-1).transpose(1, 2)  # (B, H, Sq)
    if dlse is not None:
        delta = delta - dlse
    ds = p * (dp - delta[..., None])
    dq = torch.einsum("bhqk,bkhd->bqhd", ds, k_x) * scale
    dk = torch.einsum("bhqk,bqhd->bkhd", ds, qf) * scale
    if num_kv_heads != num_heads:
        group = num_heads // num_kv_heads
        dk = dk.unflatten(2, (num_kv_heads, group)).sum(3)
        dv = dv.unflatten(2, (num_kv_heads, group)).sum(3)
    return dq, dk, dv


def _varlen_as_dense(q, k, v, cu_seqlens_q, cu_seqlens_k, causal):
    """Packed (total, H, D) tensors as one batch row with a block-diagonal mask."""
    allowed = varlen_allowed(cu_seqlens_q, cu_seqlens_k, q.shape[0], k.shape[0], causal)
    return q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), allowed.unsqueeze(0)


# ----------------------------------------------------------------------------------------------
# torch.library registration (the ops see (B, S, H, D) views, or packed (total, H, D) for varlen)
# ----------------------------------------------------------------------------------------------
def _backend(device: torch.device) -> str:
    return select("attention", device, BACKENDS)


def _launcher(*tensors):
    """How the op bodies launch Triton kernels. wrap_triton records launches for torch.compile and
    fake-tensor tracing, but in eager mode outside the dispatcher's fast path it cost about 0.6 ms
    per launch on an H100 (bench/attention_overhead.py); with plain tensors and nothing tracing the
    kernels are launched directly."""
    return _identity if untraced(*tensors) else wrap_triton


def _identity(kernel):
    return kernel


def _device_scope(q: torch.Tensor, launch):
    """Triton launches on the current CUDA device and its current stream: make that q's device for
    direct launches (tensors on cuda:1 while cuda:0 is current). Traced launches get their device
    guards from the compiler."""
    if launch is _identity and q.is_cuda:
        return torch.cuda.device(q.device)
    return contextlib.nullcontext()


def _empty_lse(q, varlen: bool) -> torch.Tensor:
    if varlen:
        return q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)  # (Hq, total_q)
    return q.new_empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32)  # (B, Hq, Sq)


def _forward_impl(q, k, v, key_padding_mask, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale,
                  causal, allow_tf32):
    varlen = cu_seqlens_q is not None
    out, lse = torch.empty_like(q), _empty_lse(q, varlen)
    seq_axis = 0 if varlen else 1
    if q.numel() == 0 or k.shape[seq_axis] == 0:  # nothing to launch; no key: zeros, lse = -inf
        return out.zero_(), lse.fill_(float("-inf"))
    if _backend(q.device) == "triton":
        from genkernels.kernels import attention as kernels

        batch = cu_seqlens_q.numel() - 1 if varlen else q.shape[0]
        views = [t.unsqueeze(0) if varlen else t for t in (q, k, v, out, lse)]
        launch = _launcher(q, k, v, key_padding_mask, cu_seqlens_q)
        with _device_scope(q, launch):
            kernels.attention_forward(
                launch, *views, key_padding_mask, cu_seqlens_q, cu_seqlens_k, batch,
                max_seqlen_q, max_seqlen_k, scale, causal, allow_tf32, varlen=varlen,
            )
        return out, lse
    if varlen:
        q4, k4, v4, allowed = _varlen_as_dense(q, k, v, cu_seqlens_q, cu_seqlens_k, causal)
        ref_out, ref_lse = attention_ref(q4, k4, v4, scale=scale, allowed=allowed)
        out.copy_(ref_out[0])
        lse.copy_(ref_lse[0])
        return out, lse
    ref_out, ref_lse = attention_ref(q, k, v, causal=causal, scale=scale, key_padding_mask=key_padding_mask)
    out.copy_(ref_out)
    lse.copy_(ref_lse)
    return out, lse


@triton_op("genkernels::attention_forward", mutates_args=())
def _attention_forward_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: Optional[torch.Tensor],
    cu_seqlens_q: Optional[torch.Tensor], cu_seqlens_k: Optional[torch.Tensor],
    max_seqlen_q: int, max_seqlen_k: int, scale: float, causal: bool, allow_tf32: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _forward_impl(q, k, v, key_padding_mask, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                         scale, causal, allow_tf32)


def _backward_impl(dout, q, k, v, out, lse, dlse, key_padding_mask, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                   max_seqlen_k, scale, causal, allow_tf32):
    varlen = cu_seqlens_q is not None
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    seq_axis = 0 if varlen else 1
    if q.numel() == 0 or k.shape[seq_axis] == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    if _backend(q.device) == "triton":
        from genkernels.kernels import attention as kernels

        batch = cu_seqlens_q.numel() - 1 if varlen else q.shape[0]
        delta = torch.empty_like(lse)
        expand = (lambda t: None if t is None else t.unsqueeze(0)) if varlen else (lambda t: t)
        launch = _launcher(dout, q, k, v, out, lse, dlse, key_padding_mask, cu_seqlens_q)
        with _device_scope(q, launch):
            kernels.attention_backward(
                launch, *[expand(t) for t in (dout, q, k, v, out, lse, dlse, delta, dq, dk, dv)],
                key_padding_mask, cu_seqlens_q, cu_seqlens_k, batch, max_seqlen_q, max_seqlen_k,
                scale, causal, allow_tf32, varlen=varlen,
            )
        return dq, dk, dv
    if varlen:
        q4, k4, v4, allowed = _varlen_as_dense(q, k, v, cu_seqlens_q, cu_seqlens_k, causal)
        grads = attention_backward_ref(
            dout.unsqueeze(0), q4, k4, v4, out.unsqueeze(0), lse.unsqueeze(0),
            None if dlse is None else dlse.unsqueeze(0), scale, allowed,
        )
        grads = [g[0] for g in grads]
    else:
        allowed = _allowed(q, k, causal, key_padding_mask, None)
        grads = attention_backward_ref(dout, q, k, v, out, lse, dlse, scale, allowed)
    for target, grad in zip((dq, dk, dv), grads):
        target.copy_(grad)
    return dq, dk, dv


@triton_op("genkernels::attention_backward", mutates_args=())
def _attention_backward_op(
    dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
    lse: torch.Tensor, dlse: Optional[torch.Tensor], key_padding_mask: Optional[torch.Tensor],
    cu_seqlens_q: Optional[torch.Tensor], cu_seqlens_k: Optional[torch.Tensor],
    max_seqlen_q: int, max_seqlen_k: int, scale: float, causal: bool, allow_tf32: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward_impl(dout, q, k, v, out, lse, dlse, key_padding_mask, cu_seqlens_q, cu_seqlens_k,
                          max_seqlen_q, max_seqlen_k, scale, causal, allow_tf32)


def _decode_impl(q, k_cache, v_cache, cache_seqlens, scale, causal, allow_tf32):
    out, lse = torch.empty_like(q), _empty_lse(q, False)
    if q.numel() == 0 or k_cache.shape[1] == 0:
        return out.zero_(), lse.fill_(float("-inf"))
    if _backend(q.device) == "triton":
        from genkernels.kernels import attention as kernels

        batch, seqlen_q, num_heads, head_dim = q.shape
        launch = _launcher(q, k_cache, v_cache, cache_seqlens)
        with _device_scope(q, launch):
            num_splits = kernels.decode_num_splits(batch, k_cache.shape[2], k_cache.shape[1], head_dim,
                                                   q.element_size())
            out_partial = q.new_empty((batch, num_heads, seqlen_q, num_splits, head_dim), dtype=torch.float32)
            lse_partial = q.new_empty((batch, num_heads, seqlen_q, num_splits), dtype=torch.float32)
            kernels.attention_decode(launch, q, k_cache, v_cache, cache_seqlens, out, lse, out_partial, lse_partial,
                                     scale, causal, allow_tf32)
        return out, lse
    allowed = decode_allowed(cache_seqlens, q.shape[1], k_cache.shape[1], causal)
    ref_out, ref_lse = attention_ref(q, k_cache, v_cache, scale=scale, allowed=allowed)
    out.copy_(ref_out)
    lse.copy_(ref_lse)
    return out, lse


@triton_op("genkernels::attention_decode", mutates_args=())
def _attention_decode_op(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cache_seqlens: torch.Tensor,
    scale: float, causal: bool, allow_tf32: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _decode_impl(q, k_cache, v_cache, cache_seqlens, scale, causal, allow_tf32)


# ----------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------
def _setup_context(ctx, inputs, output):
    q, k, v, key_padding_mask, cu_seqlens_q, cu_seqlens_k, *flags = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, key_padding_mask, cu_seqlens_q, cu_seqlens_k)
    ctx.flags = flags  # max_seqlen_q, max_seqlen_k, scale, causal, allow_tf32


def _backward(ctx, dout, dlse, backward=None):
    q, k, v, out, lse, key_padding_mask, cu_seqlens_q, cu_seqlens_k = ctx.saved_tensors
    if dout is None:
        dout = torch.zeros_like(out)
    elif dout.stride(-1) != 1:  # e.g. the stride-0 expand of a .sum() gradient
        dout = dout.contiguous()
    if dlse is not None:
        dlse = dlse.contiguous()  # the kernels read it with lse's (contiguous) strides
    dq, dk, dv = (backward or torch.ops.genkernels.attention_backward)(
        dout, q, k, v, out, lse, dlse, key_padding_mask, cu_seqlens_q, cu_seqlens_k, *ctx.flags
    )
    return dq, dk, dv, None, None, None, None, None, None, None, None


_attention_forward_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerAttention(torch.autograd.Function):
    """The same forward and backward as the registered ops, without the dispatcher: in eager mode
    torch.library's custom-op wrapper cost about 0.6 ms per call on an H100
    (bench/attention_overhead.py), more than the kernels themselves at short lengths. Used only
    when nothing traces (_args.untraced); torch.compile, make_fx and opcheck see the ops."""

    @staticmethod
    def forward(ctx, *inputs):
        output = _forward_impl(*inputs)
        _setup_context(ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, dout, dlse):
        return _backward(ctx, dout, dlse, backward=_backward_impl)


def _forward_entry(*tensors):
    """The cheapest correct route for a public call: the kernels directly when no gradient is
    needed, the eager autograd.Function when one is, the registered op whenever anything traces."""
    if direct_call_ok(*tensors):
        return _forward_impl
    return _EagerAttention.apply if untraced(*tensors) else torch.ops.genkernels.attention_forward


# ----------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------
@torch.compiler.assume_constant_result
def _backend_for(device_type: str) -> str:
    # Resolved once per compiled graph: the backend choice reads a context variable and the
    # environment, which dynamo cannot trace.
    return _backend(torch.device(device_type))


def _default_scale(head_dim: int, scale: Optional[float]) -> float:
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)


def _sdpa(q, k, v, causal, scale, key_padding_mask):
    """The CPU fast path: torch SDPA on (B, H, S, D) views (same masking conventions)."""
    attn_mask = None
    if key_padding_mask is not None:
        attn_mask = ~key_padding_mask[:, None, None, :]
        if causal:
            attn_mask = attn_mask & causal_allowed(q.shape[1], k.shape[1], q.device)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=attn_mask,
        is_causal=causal and attn_mask is None, scale=scale, enable_gqa=k.shape[2] != q.shape[2],
    )
    return out.transpose(1, 2)


def attention(q, k, v, causal=False, scale=None, key_padding_mask=None, layout="bshd",
              return_lse=False, allow_tf32=False):
    """Scaled dot-product attention, fused: out = softmax(scale * q k^T + masks) v.

    q:       (B, Sq, Hq, D) for layout "bshd", (B, Hq, Sq, D) for "bhsd"; fp16, bf16 or fp32
    k, v:    (B, Sk, Hkv, D) / (B, Hkv, Sk, D), Hq a multiple of Hkv (GQA / MQA), same dtype
    causal:  bottom-right aligned (query i sees keys j <= i + Sk - Sq)
    scale:   softmax scale, default 1 / sqrt(D)
    key_padding_mask: bool (B, Sk), True = padded key (ignored), as in nn.MultiheadAttention
    allow_tf32: let fp32 inputs use TF32 tensor cores on GPU
    Returns out in q's layout and dtype, and with return_lse the float32 lse (B, Hq, Sq).
    Both layouts are read in place through strides (no copy). The backward is deterministic
    (bitwise repeatable): dK/dV and dQ are separate passes without atomics.
    """
    _check_layout(layout)
    if layout == "bhsd":
        _check_rank((q, k, v), ("q", "k", "v"), 4)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # views as (B, S, H, D)
    q, k, v = _check_qkv(q, k, v)
    _check_key_padding_mask(key_padding_mask, q, k)
    scale = _default_scale(q.shape[-1], scale)
    use_sdpa = _backend_for(q.device.type) == "torch" and not return_lse and q.numel() > 0 and k.shape[1] > 0
    if use_sdpa and (not causal or q.shape[1] == k.shape[1] or key_padding_mask is not None):
        out, lse = _sdpa(q, k, v, causal, scale, key_padding_mask), None
    else:
        forward = _forward_entry(q, k, v, key_padding_mask)
        out, lse = forward(q, k, v, key_padding_mask, None, None, q.shape[1], k.shape[1], scale, causal, allow_tf32)
    if layout == "bhsd":
        out = out.transpose(1, 2)
    return (out, lse) if return_lse else out


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=False,
                     scale=None, return_lse=False, allow_tf32=False):
    """Attention over variable-length sequences packed without padding (cu_seqlens style).

    q:            (total_q, Hq, D), sequence b is rows cu_seqlens_q[b] : cu_seqlens_q[b + 1]
    k, v:         (total_k, Hkv, D)
    cu_seqlens_*: int32 (B + 1,), cumulative lengths starting at 0
    max_seqlen_*: the longest sequence (sizes the launch grid; must not be smaller than the truth)
    Returns out (total_q, Hq, D) and with return_lse the float32 lse (Hq, total_q).
    """
    q, k, v = _check_qkv(q, k, v, rank=3)
    _check_cu_seqlens(cu_seqlens_q, "cu_seqlens_q", q)
    _check_cu_seqlens(cu_seqlens_k, "cu_seqlens_k", q)
    if cu_seqlens_q.numel() != cu_seqlens_k.numel():
        raise ValueError(
            f"cu_seqlens_q and cu_seqlens_k must describe the same batch, got {cu_seqlens_q.numel()} "
            f"and {cu_seqlens_k.numel()} offsets"
        )
    for name, value in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    out, lse = _forward_entry(q, k, v, cu_seqlens_q, cu_seqlens_k)(
        q, k, v, None, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
        _default_scale(q.shape[-1], scale), causal, allow_tf32,
    )
    return (out, lse) if return_lse else out


def attention_decode(q, k_cache, v_cache, cache_seqlens, scale=None, causal=False, return_lse=False,
                     allow_tf32=False):
    """Attention of a few new tokens against a KV cache, split along the keys (flash-decoding).

    q:             (B, Sq, Hq, D), Sq new tokens (usually 1)
    k_cache, v_cache: (B, S_cache, Hkv, D); sequence b's valid keys are its first cache_seqlens[b]
    cache_seqlens: int (B,) valid lengths, the new tokens' keys included
    causal:        new token t (of Sq) sees keys j <= cache_seqlens[b] - Sq + t
    Returns out (B, Sq, Hq, D) and with return_lse the float32 lse (B, Hq, Sq). Inference only
    (no autograd).
    """
    q, k_cache, v_cache = _check_qkv(q, k_cache, v_cache, names=("q", "k_cache", "v_cache"))
    if not isinstance(cache_seqlens, torch.Tensor) or cache_seqlens.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"cache_seqlens must be an int32/int64 tensor, got {_describe(cache_seqlens)}")
    if cache_seqlens.shape != (q.shape[0],):
        raise ValueError(f"cache_seqlens must have shape ({q.shape[0]},), got {tuple(cache_seqlens.shape)}")
    if cache_seqlens.device != q.device:
        raise ValueError(f"cache_seqlens must be on {q.device}, got {cache_seqlens.device}")
    direct = direct_call_ok(q, k_cache, v_cache, cache_seqlens)
    decode = _decode_impl if direct else torch.ops.genkernels.attention_decode
    out, lse = decode(q, k_cache, v_cache, cache_seqlens, _default_scale(q.shape[-1], scale), causal, allow_tf32)
    return (out, lse) if return_lse else out


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------
def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)} on {x.device}"
    return f"{type(x).__name__} {x!r}"


def _check_layout(layout):
    if layout not in ("bshd", "bhsd"):
        raise ValueError(f"layout must be 'bshd' or 'bhsd', got {layout!r}")


def _check_rank(tensors, names, rank):
    for name, t in zip(names, tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {_describe(t)}")
        if t.dim() != rank:
            shape = "(B, S, H, D)" if rank == 4 else "(total, H, D)"
            raise ValueError(f"{name} must be a {rank}-d tensor {shape}, got shape {tuple(t.shape)}")


def _check_qkv(q, k, v, *, rank=4, names=("q", "k", "v")):
    """Checks q/k/v (seq axis 1 for rank 4, 0 for rank 3); returns them with a unit last stride."""
    _check_rank((q, k, v), names, rank)
    for name, t in zip(names, (q, k, v)):
        if t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{name} must be float16, bfloat16 or float32, got {t.dtype}")
    qn, kn, vn = names
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{qn}, {kn}, {vn} must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"{qn}, {kn}, {vn} must be on one device, got {q.device}, {k.device}, {v.device}")
    if k.shape != v.shape:
        raise ValueError(f"{kn} and {vn} must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if rank == 4 and q.shape[0] != k.shape[0]:
        raise ValueError(f"{qn} and {kn} must have the same batch size, got {q.shape[0]} and {k.shape[0]}")
    head_dim = q.shape[-1]
    if k.shape[-1] != head_dim:
        raise ValueError(f"{qn} and {kn} must have the same head dim, got {head_dim} and {k.shape[-1]}")
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"head dim of {qn} must be in 1..{MAX_HEAD_DIM}, got {head_dim}")
    num_heads, num_kv_heads = q.shape[-2], k.shape[-2]
    if num_kv_heads == 0 or num_heads % num_kv_heads != 0:
        raise ValueError(
            f"the number of heads of {qn} ({num_heads}) must be a multiple of that of {kn} and {vn} ({num_kv_heads})"
        )
    # The kernels address the head dim with unit stride; anything else gets one copy here.
    return tuple(t if t.stride(-1) == 1 or t.numel() == 0 else t.contiguous() for t in (q, k, v))


def _check_key_padding_mask(mask, q, k):
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"key_padding_mask must be a bool tensor (True = padded key), got {_describe(mask)}")
    if mask.shape != (k.shape[0], k.shape[1]):
        raise ValueError(
            f"key_padding_mask must have shape (batch, key_len) = ({k.shape[0]}, {k.shape[1]}), got {tuple(mask.shape)}"
        )
    if mask.device != q.device:
        raise ValueError(f"key_padding_mask must be on {q.device}, got {mask.device}")


def _check_cu_seqlens(cu, name, q):
    if not isinstance(cu, torch.Tensor) or cu.dtype != torch.int32:
        raise TypeError(f"{name} must be an int32 tensor of cumulative lengths, got {_describe(cu)}")
    if cu.dim() != 1 or cu.numel() < 1:
        raise ValueError(f"{name} must be 1-d with batch + 1 entries, got shape {tuple(cu.shape)}")
    if cu.device != q.device:
        raise ValueError(f"{name} must be on {q.device}, got {cu.device}")


__all__ = ["attention", "attention_varlen", "attention_decode", "attention_ref", "attention_backward_ref",
           "causal_allowed", "varlen_allowed", "decode_allowed"]
