"""Attention of a few new tokens against a KV cache (flash-decoding): the decode op and `attention_decode`.

Reading order: registration of the decode op (Triton kernels in genkernels.kernels.attention_decode;
on CPU the reference of genkernels.ops.attention under a length mask) -> public function. The
masking conventions, reference and checks are genkernels.ops.attention's. Inference only: the op
has no backward, so inputs that need a gradient are refused at the call.
"""
from __future__ import annotations

import torch
from torch.library import triton_op

from genkernels.kernels._launch import device_scope, launcher
from genkernels.ops._library import needs_grad, register
from genkernels.ops.attention import (
    _backend,
    _check_qkv,
    _check_scale,
    _describe,
    _empty_lse,
    attention_ref,
    decode_allowed,
)


# ----------------------------------------------------------------------------------------------
# torch.library registration
# ----------------------------------------------------------------------------------------------
def _decode_impl(q, k_cache, v_cache, cache_seqlens, scale, causal, allow_tf32):
    out, lse = torch.empty_like(q), _empty_lse(q, False)
    if q.numel() == 0 or k_cache.shape[1] == 0:
        return out.zero_(), lse.fill_(float("-inf"))
    if _backend(q.device) == "triton":
        from genkernels.kernels import attention_decode as kernels

        batch, seqlen_q, num_heads, head_dim = q.shape
        launch = launcher(q, k_cache, v_cache, cache_seqlens)
        with device_scope(q, launch):
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


attention_decode_op = register(_attention_decode_op, impl=_decode_impl)


# ----------------------------------------------------------------------------------------------
# Public function
# ----------------------------------------------------------------------------------------------
def attention_decode(q, k_cache, v_cache, cache_seqlens, scale=None, causal=False, return_lse=False,
                     allow_tf32=False):
    """Attention of a few new tokens against a KV cache, split along the keys (flash-decoding).

    q:             (B, Sq, Hq, D), Sq new tokens (usually 1)
    k_cache, v_cache: (B, S_cache, Hkv, D); sequence b's valid keys are its first cache_seqlens[b]
    cache_seqlens: int (B,) valid lengths in [0, S_cache], the new tokens' keys included
    causal:        new token t (of Sq) sees keys j <= cache_seqlens[b] - Sq + t
    Returns out (B, Sq, Hq, D) and with return_lse the float32 lse (B, Hq, Sq); a sequence of
    length 0 gives zeros and lse = -inf. Inference only (no autograd): inputs that require grad
    are refused unless grad mode is off.

    Lengths on the CPU are checked here (ValueError). Lengths on the GPU cannot be checked without
    a host sync, so the kernel clamps them into [0, S_cache]: a longer length reads the whole
    cache of its own sequence, a negative one none of it; nothing outside the cache is read.
    """
    q, k_cache, v_cache = _check_qkv(q, k_cache, v_cache, names=("q", "k_cache", "v_cache"))
    if needs_grad(q, k_cache, v_cache):
        names = [n for n, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)) if t.requires_grad]
        raise ValueError(
            f"attention_decode has no backward (inference only), but {', '.join(names)} require grad: call it "
            f"under torch.no_grad() / torch.inference_mode(), pass detached tensors, or use attention() "
            f"for a differentiable call"
        )
    if not isinstance(cache_seqlens, torch.Tensor) or cache_seqlens.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"cache_seqlens must be an int32/int64 tensor, got {_describe(cache_seqlens)}")
    if cache_seqlens.shape != (q.shape[0],):
        raise ValueError(f"cache_seqlens must have shape ({q.shape[0]},), got {tuple(cache_seqlens.shape)}")
    if cache_seqlens.device != q.device:
        raise ValueError(f"cache_seqlens must be on {q.device}, got {cache_seqlens.device}")
    if cache_seqlens.device.type == "cpu" and cache_seqlens.numel():
        low, high = int(cache_seqlens.min()), int(cache_seqlens.max())
        if low < 0 or high > k_cache.shape[1]:
            raise ValueError(
                f"cache_seqlens must lie in [0, {k_cache.shape[1]}] (the cache length of k_cache), got values "
                f"from {low} to {high}"
            )
        if low == high > 0 and q.shape[1] == 1 and not return_lse and not torch.compiler.is_compiling():
            k_cache, v_cache = k_cache[:, :high], v_cache[:, :high]  # keys past the length are never read
            # one new token per sequence, every sequence the same length (batch-1 generation): the
            # whole sliced cache is visible (causal or not), so CPU SDPA needs no mask; this skips the
            # masked reference's per-step overhead, which dominates a small model's decode step
            out = torch.nn.functional.scaled_dot_product_attention(
                q.transpose(1, 2), k_cache.transpose(1, 2), v_cache.transpose(1, 2),
                scale=_check_scale(q.shape[-1], scale), enable_gqa=k_cache.shape[2] != q.shape[2])
            return out.transpose(1, 2).contiguous()  # (B, 1, H, D)
    out, lse = attention_decode_op(q, k_cache, v_cache, cache_seqlens, _check_scale(q.shape[-1], scale), causal,
                                   allow_tf32)
    return (out, lse) if return_lse else out


__all__ = ["attention_decode", "attention_decode_op"]
