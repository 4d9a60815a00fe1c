"""Fused attention: o = softmax(scale * q k^T + mask) v, without the (Sq x Sk) matrix on GPU.

Reading order: reference (pure PyTorch, also the CPU fallback) -> torch.library registration of
the forward and backward ops (Triton kernels in genkernels.kernels.attention) -> autograd ->
public functions `attention`, `attention_varlen` -> validation. The KV-cache decode op and
`attention_decode` live in genkernels.ops.attention_decode (importable from here too); they share
this file's reference, masks and checks.

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
  * NaN propagates: a NaN in q, or in a K/V row a query sees, gives NaN in that query's output
    (an inf in a visible V row gives NaN too). Values at key positions a query does not see
    (padding, past the causal diagonal, another packed sequence, past cache_seqlens) never reach
    its output, whatever they hold.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import torch
import torch.nn.functional as F
from torch.library import triton_op

from genkernels._backend import select
from genkernels.kernels._launch import device_scope, launcher
from genkernels.ops._library import register, untraced

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


def _all_finite(*tensors: torch.Tensor) -> bool:
    """No NaN/inf in any of the tensors, from one sum each: any NaN/inf makes the total non-finite.
    About 25x cheaper than isfinite().all() on CPU; a sum that overflows (|total| > 3e38 in
    float32) answers False, which only costs the caller its slower exact path."""
    total = None
    for t in tensors:
        part = t.sum(dtype=torch.float64 if t.dtype == torch.float64 else torch.float32)
        total = part if total is None else total + part
    return bool(torch.isfinite(total))


def _has_nonfinite(x: torch.Tensor) -> bool:
    """Whether x may hold NaN/inf. Traced calls (fake tensors, compile) cannot branch on data and
    answer True: the exact, slower form is then always taken."""
    return not (untraced(x) and _all_finite(x))


def _masked_product(p, allowed, x):
    """einsum("bhqk,bkhd->bqhd", p, x) for p that is 0 outside `allowed` ((B or 1, Sq, Sk) bool or
    None), without 0 * NaN: x's non-finite entries are taken out of the product and the outputs
    of the rows that see one (allowed there) become NaN. Rows never see garbage at keys they are
    not allowed to see (padding, causal, another packed sequence, past a cache length)."""
    if allowed is None or not _has_nonfinite(x):
        return torch.einsum("bhqk,bkhd->bqhd", p, x)
    bad = ~torch.isfinite(x)
    product = torch.einsum("bhqk,bkhd->bqhd", p, x.masked_fill(bad, 0))
    seen = torch.einsum("bhqk,bkhd->bqhd", allowed[:, None].expand_as(p).to(p.dtype), bad.to(p.dtype))
    return product.masked_fill(seen > 0, float("nan"))


def attention_ref(q, k, v, *, causal=False, scale=None, key_padding_mask=None, allowed=None):
    """Explicit attention on (B, S, H, D) tensors; returns (out (B, Sq, Hq, D), lse (B, Hq, Sq)).

    What PyTorch does in the input dtype: the scores q k^T accumulate in float32 (float64 for
    float64 inputs; an fp16 product would overflow past |q . k| = 65504), the softmax runs in that
    precision, and p @ v runs in the input dtype. `allowed` is an extra (B or 1, Sq, Sk) bool mask.
    Values at masked key positions never reach the output (see _masked_product); NaN elsewhere
    propagates. Differentiable, including through rows that see no key (their gradients are zero).
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    k, v = _expand_kv(k, q.shape[2]), _expand_kv(v, q.shape[2])
    scores = torch.einsum("bqhd,bkhd->bhqk", q.to(acc_dtype), k.to(acc_dtype)) * scale  # (B, H, Sq, Sk)
    allowed = _allowed(q, k, causal, key_padding_mask, allowed)
    if allowed is not None:
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # (B, H, Sq); -inf where a row sees no key
    p = torch.exp(scores - lse.masked_fill(lse == float("-inf"), 0.0)[..., None])
    out = _masked_product(p.to(v.dtype), allowed, v)
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
    if allowed is not None:  # a select, not p = 0 alone: dp at a key holding NaN is NaN
        ds = ds.masked_fill(~allowed[:, None], 0.0)
    dq = _masked_product(ds, allowed, k_x) * scale
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

        if varlen:  # rows no sequence covers (only with unchecked, GPU-resident offsets): zeros, -inf
            out.zero_()
            lse.fill_(float("-inf"))
        batch = cu_seqlens_q.numel() - 1 if varlen else q.shape[0]
        views = [t.unsqueeze(0) if varlen else t for t in (q, k, v, out, lse)]
        launch = launcher(q, k, v, key_padding_mask, cu_seqlens_q)
        with device_scope(q, launch):
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

        if varlen:  # rows no sequence covers (see _forward_impl) get zero gradients
            for grad in (dq, dk, dv):
                grad.zero_()
        batch = cu_seqlens_q.numel() - 1 if varlen else q.shape[0]
        delta = torch.empty_like(lse, dtype=kernels.backward_delta_dtype(q.dtype, allow_tf32))
        expand = (lambda t: None if t is None else t.unsqueeze(0)) if varlen else (lambda t: t)
        launch = launcher(dout, q, k, v, out, lse, dlse, key_padding_mask, cu_seqlens_q)
        with device_scope(q, launch):
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


# ----------------------------------------------------------------------------------------------
# Autograd, and the routed ops (ops/_library: kernels directly without a graph, an eager
# autograd.Function with one, the registered op whenever anything traces)
# ----------------------------------------------------------------------------------------------
def _setup_context(ctx, inputs, output):
    q, k, v, key_padding_mask, cu_seqlens_q, cu_seqlens_k, *flags = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, key_padding_mask, cu_seqlens_q, cu_seqlens_k)
    ctx.flags = flags  # max_seqlen_q, max_seqlen_k, scale, causal, allow_tf32


def _backward(ctx, dout, dlse):
    q, k, v, out, lse, key_padding_mask, cu_seqlens_q, cu_seqlens_k = ctx.saved_tensors
    if dout is None:
        dout = torch.zeros_like(out)
    elif dout.stride(-1) != 1:  # e.g. the stride-0 expand of a .sum() gradient
        dout = dout.contiguous()
    if dlse is not None:
        dlse = dlse.contiguous()  # the kernels read it with lse's (contiguous) strides
    dq, dk, dv = attention_backward_op(
        dout, q, k, v, out, lse, dlse, key_padding_mask, cu_seqlens_q, cu_seqlens_k, *ctx.flags
    )
    return dq, dk, dv, None, None, None, None, None, None, None, None


attention_backward_op = register(_attention_backward_op, impl=_backward_impl)
attention_forward_op = register(_attention_forward_op, impl=_forward_impl, setup_context=_setup_context,
                                backward=_backward)


# ----------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------
@torch.compiler.assume_constant_result
def _backend_for(device_type: str) -> str:
    # Resolved once per compiled graph: the backend choice reads a context variable and the
    # environment, which dynamo cannot trace.
    return _backend(torch.device(device_type))


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


def _sdpa_ok(q, k, v, causal, scale, key_padding_mask, return_lse) -> bool:
    """Whether SDPA gives this call's answer. Its CPU kernels return zeros for a NaN query row or a
    NaN scale and let a NaN at a masked key reach unmasked rows, so non-finite inputs (checked only
    in eager calls: a traced call cannot branch on data) take the reference path, which propagates
    NaN."""
    if _backend_for(q.device.type) != "torch" or return_lse or q.numel() == 0 or k.shape[1] == 0:
        return False
    if not math.isfinite(scale):
        return False
    if causal and q.shape[1] != k.shape[1] and key_padding_mask is None:
        return False  # SDPA's is_causal is top-left aligned; ours bottom-right
    return untraced(q, k, v) and _all_finite(q, k, v)


def attention(q, k, v, causal=False, scale=None, key_padding_mask=None, layout="bshd",
              return_lse=False, allow_tf32=False):
    """Scaled dot-product attention, fused: out = softmax(scale * q k^T + masks) v.

    q:       (B, Sq, Hq, D) for layout "bshd", (B, Hq, Sq, D) for "bhsd"; fp16, bf16 or fp32
    k, v:    (B, Sk, Hkv, D) / (B, Hkv, Sk, D), Hq a multiple of Hkv (GQA / MQA), same dtype
    causal:  bottom-right aligned (query i sees keys j <= i + Sk - Sq)
    scale:   softmax scale, default 1 / sqrt(D) (a NaN scale gives NaN outputs)
    key_padding_mask: bool (B, Sk), True = padded key (ignored), as in nn.MultiheadAttention
    allow_tf32: let fp32 inputs use TF32 tensor cores on GPU
    Returns out in q's layout and dtype, and with return_lse the float32 lse (B, Hq, Sq).
    Both layouts are read in place through strides (no copy). The backward is deterministic
    (bitwise repeatable): dK/dV and dQ are separate passes without atomics. NaN in q or in a key a
    query sees gives NaN in that query's output; whatever masked keys hold does not matter.
    """
    _check_layout(layout)
    if layout == "bhsd":
        _check_rank((q, k, v), ("q", "k", "v"), 4)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # views as (B, S, H, D)
    q, k, v = _check_qkv(q, k, v)
    _check_key_padding_mask(key_padding_mask, q, k)
    scale = _check_scale(q.shape[-1], scale)
    if _sdpa_ok(q, k, v, causal, scale, key_padding_mask, return_lse):
        out, lse = _sdpa(q, k, v, causal, scale, key_padding_mask), None
    else:
        out, lse = attention_forward_op(q, k, v, key_padding_mask, None, None, q.shape[1], k.shape[1], scale,
                                        causal, allow_tf32)
    if layout == "bhsd":
        out = out.transpose(1, 2)
    return (out, lse) if return_lse else out


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=False,
                     scale=None, return_lse=False, allow_tf32=False):
    """Attention over variable-length sequences packed without padding (cu_seqlens style).

    q:            (total_q, Hq, D), sequence b is rows cu_seqlens_q[b] : cu_seqlens_q[b + 1]
    k, v:         (total_k, Hkv, D)
    cu_seqlens_*: int32 (B + 1,), cumulative lengths: 0, non-decreasing, ending at total_q / total_k
                  (a zero-length sequence gives no rows; B = 0 is allowed)
    max_seqlen_*: the longest sequence (sizes the launch grid; must not be smaller than the truth)
    Returns out (total_q, Hq, D) and with return_lse the float32 lse (Hq, total_q).

    Offsets on the CPU are checked here (ValueError). Offsets on the GPU cannot be checked without
    a host sync, so the kernels bound them instead: each sequence is clamped into [0, total], a
    decreasing offset gives an empty sequence, and rows no sequence covers (or past max_seqlen_q)
    come back as zeros with lse = -inf; no value reads or writes outside the tensors.
    """
    q, k, v = _check_qkv(q, k, v, rank=3)
    _check_cu_seqlens(cu_seqlens_q, "cu_seqlens_q", q, q.shape[0], "q")
    _check_cu_seqlens(cu_seqlens_k, "cu_seqlens_k", q, k.shape[0], "k")
    if cu_seqlens_q.numel() != cu_seqlens_k.numel():
        raise ValueError(
            f"cu_seqlens_q and cu_seqlens_k must describe the same batch, got {cu_seqlens_q.numel()} "
            f"and {cu_seqlens_k.numel()} offsets"
        )
    for name, value, cu in (("max_seqlen_q", max_seqlen_q, cu_seqlens_q), ("max_seqlen_k", max_seqlen_k, cu_seqlens_k)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if cu.device.type == "cpu" and cu.numel() > 1:
            longest = int(cu.diff().max())
            if value < longest:
                raise ValueError(f"{name} must be at least the longest sequence ({longest}), got {value}")
    out, lse = attention_forward_op(
        q, k, v, None, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
        _check_scale(q.shape[-1], scale), causal, allow_tf32,
    )
    return (out, lse) if return_lse else out


def __getattr__(name):
    # attention_decode lives in its own module (which imports this one); resolved on first use.
    if name == "attention_decode":
        from genkernels.ops.attention_decode import attention_decode

        return attention_decode
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def _check_scale(head_dim: int, scale) -> float:
    """The softmax scale as a float: 1 / sqrt(D) by default, else any real number, taken as given
    (as SDPA takes it): a NaN scale gives NaN outputs, as in the reference, never zeros."""
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a float (or None for 1/sqrt(head_dim)), got {_describe(scale)}")
    return float(scale)


def _check_cu_seqlens(cu, name, q, total, tensor_name):
    """Type, shape and device always; the values (0, non-decreasing, ending at `total`) where they
    are on the host. GPU-resident offsets are bounded inside the kernels instead (no host sync)."""
    if not isinstance(cu, torch.Tensor) or cu.dtype != torch.int32:
        raise TypeError(f"{name} must be an int32 tensor of cumulative lengths, got {_describe(cu)}")
    if cu.dim() != 1 or cu.numel() < 1:
        raise ValueError(f"{name} must be 1-d with batch + 1 entries, got shape {tuple(cu.shape)}")
    if cu.device != q.device:
        raise ValueError(f"{name} must be on {q.device}, got {cu.device}")
    if cu.device.type != "cpu":
        return
    first, last = int(cu[0]), int(cu[-1])
    if first != 0:
        raise ValueError(f"{name} must start at 0, got {first}")
    if last != total:
        raise ValueError(f"{name} must end at the number of tokens in {tensor_name} ({total}), got {last}")
    steps = cu.diff()
    if steps.numel() and int(steps.min()) < 0:
        b = int(torch.nonzero(steps < 0)[0])
        raise ValueError(
            f"{name} must be non-decreasing (cumulative lengths), got {name}[{b}] = {int(cu[b])} > "
            f"{name}[{b + 1}] = {int(cu[b + 1])}"
        )


__all__ = ["attention", "attention_varlen", "attention_decode", "attention_ref", "attention_backward_ref",
           "causal_allowed", "varlen_allowed", "decode_allowed", "attention_forward_op", "attention_backward_op"]
