"""Triton kernels for split-KV decode (flash-decoding, Dao et al. 2023): a few new tokens against a KV cache.

The key axis of each sequence's cache is split over programs; each writes a partial output and its
lse (base 2), and a second kernel combines the splits with the lse weights:
    o = sum_s w_s o_s / sum_s w_s,   w_s = 2^(lse_s - max_s lse_s).
The math, dot modes and layout conventions are those of genkernels.kernels.attention (whose shared
helpers this module imports). Bounds: every cache read is predicated on j < min(cache_seqlens[b],
S_cache); a length outside [0, S_cache] is clamped into it inside the kernel (the host wrapper
rejects such values when they are on the CPU).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from genkernels._backend import triton_interpret
from genkernels.kernels import _launch
from genkernels.kernels.attention import LOG2E, _bsh, _dot, _online_softmax_step, _split_nonfinite_values, dot_mode


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------
def decode_config(block_d: int, elem_bytes: int = 2) -> dict:
    if triton_interpret():
        return dict(BLOCK_N=16, num_warps=1, num_stages=1)
    row_bytes = block_d * elem_bytes  # one K or V row; wider rows get fewer keys per block
    if row_bytes <= 256:
        return dict(BLOCK_N=64, num_warps=4, num_stages=3)
    return dict(BLOCK_N=32 if row_bytes <= 512 else 16, num_warps=4, num_stages=2)


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------
@triton.jit
def _attn_decode_split_kernel(
    # pointers
    Q, K, V, CACHE_SEQLENS, OutPartial, LSEPartial,
    # sizes
    seqlen_q, seqlen_cache, num_kv_heads, kv_group_size, head_dim, split_size, qk_scale_log2,
    # strides
    stride_qb, stride_qs, stride_qh,
    stride_kb, stride_ks, stride_kh,
    stride_vb, stride_vs, stride_vh,
    stride_pb, stride_ph, stride_ps, stride_psplit,  # OutPartial (B, Hq, Sq, splits, D), D contiguous
    stride_lb, stride_lh, stride_ls,                  # LSEPartial (B, Hq, Sq, splits), splits contiguous
    # meta-parameters
    IS_CAUSAL: tl.constexpr, DOT_MODE: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One program: one key split of one (batch, KV head) for all its query heads and new tokens.

    The G query heads sharing a KV head and the Sq new tokens are stacked into the M dimension
    (row r -> head h_kv * G + r // Sq, token r % Sq), so each cached key is read once per group and
    tl.dot gets a tile of at least 16 rows even for a single token.
    """
    split = tl.program_id(0)
    off_bh = tl.program_id(1)
    b = off_bh // num_kv_heads
    h_kv = off_bh % num_kv_heads
    b64 = b.to(tl.int64)
    # Clamped into [0, S_cache]: a length past the cache (or negative), possible only when
    # cache_seqlens live on the GPU where the host cannot check them, reads no other sequence's
    # cache and nothing past the tensor.
    seqlen_k = tl.minimum(tl.maximum(tl.load(CACHE_SEQLENS + b).to(tl.int32), 0), seqlen_cache)
    rows = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < kv_group_size * seqlen_q
    token = rows % seqlen_q
    h = h_kv * kv_group_size + rows // seqlen_q
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < head_dim
    q = tl.load(Q + b64 * stride_qb + token[:, None] * stride_qs + h[:, None] * stride_qh + offs_d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    k_base = K + b64 * stride_kb + h_kv * stride_kh
    v_base = V + b64 * stride_vb + h_kv * stride_vh
    # New token t sits at cache position seqlen_k - Sq + t (the cache already holds it).
    row_limit = seqlen_k - seqlen_q + token

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    lo = split * split_size
    hi = tl.minimum(lo + split_size, seqlen_k)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        col_ok = cols < hi
        k_t = tl.load(k_base + cols[None, :].to(tl.int64) * stride_ks + offs_d[:, None],
                      mask=col_ok[None, :] & d_ok[:, None], other=0.0)
        s = _dot(q, k_t, tl.zeros((BLOCK_M, BLOCK_N), tl.float32), DOT_MODE) * qk_scale_log2
        keep = col_ok[None, :]
        if IS_CAUSAL:
            keep = keep & (cols[None, :] <= row_limit[:, None])
        s = tl.where(keep, s, float("-inf"))
        p, alpha, l_i, m_new = _online_softmax_step(s, m_i, l_i)
        v = tl.load(v_base + cols[:, None].to(tl.int64) * stride_vs + offs_d[None, :],
                    mask=col_ok[:, None] & d_ok[None, :], other=0.0)
        acc = acc * alpha[:, None]
        if IS_CAUSAL:
            acc, v = _split_nonfinite_values(acc, v, keep, DOT_MODE)
        acc = _dot(p.to(v.dtype), v, acc, DOT_MODE)
        m_i = m_new
    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    # base 2 here (the combine kernel converts); -inf for a row that saw no key in this split
    lse2 = tl.where(l_i == 0.0, float("-inf"), m_i + tl.math.log2(tl.where(l_i == 0.0, 1.0, l_i)))
    tl.store(OutPartial + b64 * stride_pb + h[:, None] * stride_ph + token[:, None] * stride_ps
             + split * stride_psplit + offs_d[None, :], out, mask=row_ok[:, None] & d_ok[None, :])
    tl.store(LSEPartial + b64 * stride_lb + h * stride_lh + token * stride_ls + split, lse2, mask=row_ok)


@triton.jit
def _attn_decode_combine_kernel(
    OutPartial, LSEPartial, Out, LSE,
    num_heads, seqlen_q, num_splits, head_dim,
    stride_pb, stride_ph, stride_ps, stride_psplit,
    stride_lpb, stride_lph, stride_lps,
    stride_ob, stride_os, stride_oh,
    stride_lb, stride_lh, stride_ls,
    BLOCK_D: tl.constexpr, BLOCK_SPLITS: tl.constexpr,
):
    """One program: one (batch, head, token); o = sum_s w_s o_s / sum_s w_s with w_s = 2^(lse_s - max)."""
    pid = tl.program_id(0)
    t = pid % seqlen_q
    h = (pid // seqlen_q) % num_heads
    b = (pid // (seqlen_q * num_heads)).to(tl.int64)
    splits = tl.arange(0, BLOCK_SPLITS)
    offs_d = tl.arange(0, BLOCK_D)
    split_ok = splits < num_splits
    lse2 = tl.load(LSEPartial + b * stride_lpb + h * stride_lph + t * stride_lps + splits,
                   mask=split_ok, other=float("-inf"))
    m = tl.max(lse2, 0)
    m_shift = tl.where(m == float("-inf"), 0.0, m)
    w = tl.math.exp2(lse2 - m_shift)
    total = tl.sum(w, 0)
    o = tl.load(OutPartial + b * stride_pb + h * stride_ph + t * stride_ps + splits[:, None] * stride_psplit
                + offs_d[None, :], mask=split_ok[:, None] & (offs_d[None, :] < head_dim), other=0.0)
    out = tl.sum(o * w[:, None], 0) / tl.where(total == 0.0, 1.0, total)
    tl.store(Out + b * stride_ob + t * stride_os + h * stride_oh + offs_d, out.to(Out.dtype.element_ty),
             mask=offs_d < head_dim)
    log_total = tl.math.log2(tl.where(total == 0.0, 1.0, total))
    lse = tl.where(total == 0.0, float("-inf"), (m + log_total) * 0.6931471805599453)
    tl.store(LSE + b * stride_lb + h * stride_lh + t * stride_ls, lse)


# ----------------------------------------------------------------------------------------------
# Launchers (called from genkernels.ops.attention_decode inside torch.library.triton_op)
# ----------------------------------------------------------------------------------------------
def decode_num_splits(batch: int, num_kv_heads: int, max_seqlen_k: int, head_dim: int, elem_bytes: int) -> int:
    """Enough splits to give every SM about two programs, but never splits shorter than a block."""
    block_n = decode_config(max(16, triton.next_power_of_2(head_dim)), elem_bytes)["BLOCK_N"]
    if triton_interpret():
        return max(1, min(4, triton.cdiv(max_seqlen_k, block_n)))
    sms = _launch.multiprocessor_count(torch.cuda.current_device())
    want = triton.cdiv(2 * sms, max(1, batch * num_kv_heads))
    return max(1, min(want, triton.cdiv(max_seqlen_k, block_n), 128))


def attention_decode(wrap, q, k_cache, v_cache, cache_seqlens, out, lse, out_partial, lse_partial,
                     scale, causal, allow_tf32):
    """Launch split + combine. out_partial (B, Hq, Sq, splits, D) fp32, lse_partial (B, Hq, Sq, splits)."""
    batch, seqlen_q, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    group = num_heads // num_kv_heads
    num_splits = out_partial.shape[3]
    block_d = max(16, triton.next_power_of_2(head_dim))
    cfg = decode_config(block_d, q.element_size())
    block_m = max(16, triton.next_power_of_2(group * seqlen_q)) if group * seqlen_q <= 64 else 64
    split_size = triton.cdiv(triton.cdiv(k_cache.shape[1], num_splits), cfg["BLOCK_N"]) * cfg["BLOCK_N"]
    grid = (num_splits, batch * num_kv_heads, triton.cdiv(group * seqlen_q, block_m))
    wrap(_attn_decode_split_kernel)[grid](
        q, k_cache, v_cache, cache_seqlens, out_partial, lse_partial,
        seqlen_q, k_cache.shape[1], num_kv_heads, group, head_dim, split_size, scale * LOG2E,
        *_bsh(q), *_bsh(k_cache), *_bsh(v_cache),
        *out_partial.stride()[:4], *lse_partial.stride()[:3],
        IS_CAUSAL=causal, DOT_MODE=dot_mode(q.dtype, allow_tf32), BLOCK_D=block_d,
        BLOCK_M=block_m, BLOCK_N=cfg["BLOCK_N"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    wrap(_attn_decode_combine_kernel)[(batch * num_heads * seqlen_q,)](
        out_partial, lse_partial, out, lse, num_heads, seqlen_q, num_splits, head_dim,
        *out_partial.stride()[:4], *lse_partial.stride()[:3], *_bsh(out), *lse.stride(),
        BLOCK_D=block_d, BLOCK_SPLITS=max(2, triton.next_power_of_2(num_splits)),
        num_warps=1 if triton_interpret() else 4,
    )


__all__ = ["attention_decode", "decode_config", "decode_num_splits"]
