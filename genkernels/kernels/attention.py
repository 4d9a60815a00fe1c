"""Triton kernels for fused (flash) attention: forward and backward (decode: attention_decode.py).

Math (FlashAttention-2, Dao 2023, https://arxiv.org/abs/2307.08691): for one query row q_i,
    s_ij = scale * q_i . k_j,   lse_i = log sum_j exp(s_ij),   o_i = sum_j exp(s_ij - lse_i) v_j.
The forward streams key blocks through an online softmax (running max m_i and sum l_i), so the
(Sq x Sk) score matrix never reaches memory; it saves lse_i for the backward, which recomputes
p_ij = exp(s_ij - lse_i) block by block:
    dv_j = sum_i p_ij do_i,   dp_ij = do_i . v_j,   ds_ij = p_ij (dp_ij - delta_i),
    delta_i = do_i . o_i - dlse_i,   dq_i = scale sum_j ds_ij k_j,   dk_j = scale sum_i ds_ij q_i.
The split-KV decode kernels (genkernels.kernels.attention_decode) reuse the helpers below.

Conventions shared by every kernel here (and the decode kernels):
  * tensors are addressed as (batch, seq, heads, dim) through strides, so (b, h, s, d) inputs are
    read in place; the last dimension must be contiguous (stride 1).
  * varlen (IS_VARLEN): sequences are packed along the seq axis; CU_SEQLENS_* give the offsets and
    the batch stride is ignored.
  * exponentials are exp2 with the scale pre-multiplied by log2(e) (one FMUL per score instead of
    a multiply and a natural exp); lse is stored in natural-log units.
  * causal masking is bottom-right aligned (query i sees keys j <= i + Sk - Sq), which is what a
    KV cache needs; for Sq == Sk it is the usual lower triangle.
  * the head dim is padded to BLOCK_D = next_power_of_2(D) with masked loads, so D in 16..256 works.
  * masks are applied only in the MASKED stage (causal diagonal and the last key block); interior
    blocks run without predicates.
  * masked keys never reach the output through a product: their scores become -inf and their
    probabilities 0 through selects, and the V (and, in the backward, K) rows they would multiply
    are selected away too, so a NaN or inf stored at a masked position (padding, the other side of
    the causal diagonal, past a sequence's end) cannot turn 0 * garbage into NaN.
  * bounds: varlen offsets read from CU_SEQLENS_* are clamped into [0, total] and made
    non-decreasing inside the kernels (see _sequence_bounds), so no value of cu_seqlens makes a
    kernel read or write outside its tensors; the host wrapper rejects such values when they are
    on the CPU.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from genkernels._backend import triton_interpret
from genkernels.kernels._launch import capability as _capability
from genkernels.kernels._launch import set_tma_allocator as _set_tma_allocator

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


# ----------------------------------------------------------------------------------------------
# Configurations
# ----------------------------------------------------------------------------------------------
def _cfg(block_m, block_n, num_warps, num_stages, tma=False):
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, "USE_TMA": tma},
                         num_warps=num_warps, num_stages=num_stages)


def _forward_configs(block_d: int, elem_bytes: int = 2, tma: bool = False) -> list[triton.Config]:
    """A short list per GPU generation and head-dim class: tuning takes seconds, not minutes.

    tma: whether the inputs allow tensor-descriptor loads (see tma_ok); then the Hopper lists also
    try them where the sweep found them faster."""
    if triton_interpret():
        # The interpreter runs numpy per op: small tiles keep tests fast and exercise many blocks.
        return [_cfg(16, 16, 1, 1)]
    if elem_bytes == 4:
        # fp32 is the precision path: IEEE products run on FMA units with operands in registers,
        # so big tiles spill; small tiles (TF32 included) keep it register-resident.
        if block_d <= 64:
            return [_cfg(32, 32, 4, 2), _cfg(64, 32, 8, 2)]
        return [_cfg(32, 32, 8, 2), _cfg(32, 16, 4, 2)]
    major, _ = _capability()
    if major >= 9:
        # Measured on an H100 (bench/tune_attention.py, bf16, S = 4096 and 16384, causal and not;
        # bench/results/): no single tile wins every case, so each list holds the per-case winners.
        if block_d <= 64:  # (128, 64) long non-causal, (64, 64) short causal, (64, 128) long causal
            return [_cfg(128, 64, 8, 3), _cfg(64, 64, 4, 3), _cfg(64, 128, 4, 3)]
        if block_d <= 128:  # TMA loads gave +10% at S = 16384 with (64, 64) tiles
            return [_cfg(128, 128, 8, 3), _cfg(64, 64, 4, 3)] + ([_cfg(64, 64, 4, 3, True)] if tma else [])
        # D up to 256: 510 TFLOP/s with (128, 64) tiles, 8 warps and a 2-stage pipeline
        return [_cfg(128, 64, 8, 2), _cfg(64, 32, 4, 2), _cfg(64, 64, 4, 2, tma)]
    if major == 8:  # Ampere/Ada: 164/100 KB shared memory (not measured here)
        if block_d <= 128:
            return [_cfg(128, 64, 8, 3), _cfg(128, 32, 4, 3), _cfg(64, 64, 4, 2)]
        return [_cfg(64, 32, 4, 2), _cfg(64, 64, 8, 1)]
    # Older or unknown GPUs: conservative tiles that fit 48 KB of shared memory.
    return [_cfg(64, 32, 4, 1), _cfg(32, 32, 4, 1)]


def backward_config(block_d: int, elem_bytes: int = 2) -> dict:
    """Fixed backward tiles (no autotuning at first call: the backward compiles three kernels).

    dK/dV programs own a key block and stream query blocks (BLOCK_M small, BLOCK_N large);
    dQ programs own a query block and stream key blocks (the transpose), as in the Triton tutorial.
    """
    if triton_interpret():
        return dict(DKDV_M=16, DKDV_N=16, DQ_M=16, DQ_N=16, num_warps=1, num_stages=1)
    if elem_bytes == 4:  # see _forward_configs: fp32 keeps tiles small
        return dict(DKDV_M=16, DKDV_N=32, DQ_M=32, DQ_N=16, num_warps=4 if block_d <= 64 else 8,
                    num_stages=2 if block_d <= 128 else 1)
    major, _ = _capability()
    # Best of bench/tune_attention.py's sweep on an H100 (bf16, S=4096): D=64 337 TFLOP/s, D=128 380.
    if block_d <= 64:
        cfg = dict(DKDV_M=32, DKDV_N=128, DQ_M=128, DQ_N=32, num_warps=4, num_stages=3)
    elif block_d <= 128:
        # 8 warps spread the fp32 dK/dV accumulators ((BLOCK_N, D) each) over more registers.
        cfg = dict(DKDV_M=64, DKDV_N=128, DQ_M=128, DQ_N=64, num_warps=8, num_stages=3)
    else:
        cfg = dict(DKDV_M=32, DKDV_N=32, DQ_M=32, DQ_N=32, num_warps=8, num_stages=2)
    if major < 9:
        cfg["num_stages"] = min(cfg["num_stages"], 2)
        if block_d > 64:
            cfg.update(DKDV_N=min(cfg["DKDV_N"], 64), DQ_M=min(cfg["DQ_M"], 64))
    return cfg


@functools.lru_cache(maxsize=None)
def forward_kernel(block_d: int, elem_bytes: int, tma: bool = False):
    """The forward kernel autotuned over the configs for this head-dim class (built on first use)."""
    return triton.autotune(
        configs=_forward_configs(block_d, elem_bytes, tma),
        # seqlen_bucket (a power of two, capped) retunes for short vs long sequences without
        # retuning for every length a generation loop produces.
        key=["BLOCK_D", "IS_CAUSAL", "HAS_KEY_MASK", "IS_VARLEN", "seqlen_bucket"],
    )(_attn_fwd_kernel)


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------
DOT_IEEE, DOT_TF32, DOT_UPCAST = 0, 1, 2


def dot_mode(dtype: torch.dtype, allow_tf32: bool) -> int:
    """How tl.dot runs: fp32 inputs use IEEE products unless the caller allows TF32 (fp16/bf16
    ignore the choice). The interpreter's bf16 dot is wrong (triton 3.x), so there bf16 tiles are
    upcast first; bf16 x bf16 products are exact in fp32, so this matches tensor cores."""
    if triton_interpret():
        return DOT_UPCAST if dtype == torch.bfloat16 else DOT_IEEE
    return DOT_TF32 if allow_tf32 else DOT_IEEE


@triton.jit
def _dot(a, b, acc, DOT_MODE: tl.constexpr):
    if DOT_MODE == 1:
        return tl.dot(a, b, acc, input_precision="tf32")
    elif DOT_MODE == 2:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc, input_precision="ieee")


@triton.jit
def _load_2d(ptrs, n_ok, d_ok, MASK_N: tl.constexpr, MASK_D: tl.constexpr):
    # Predicates only where needed: interior key blocks with a power-of-two head dim load unmasked.
    if MASK_N and MASK_D:
        return tl.load(ptrs, mask=n_ok & d_ok, other=0.0)
    elif MASK_N:
        return tl.load(ptrs, mask=n_ok, other=0.0)
    elif MASK_D:
        return tl.load(ptrs, mask=d_ok, other=0.0)
    else:
        return tl.load(ptrs)


@triton.jit
def _bshd_descriptor(T, batch, seqlen, heads, head_dim, stride_b, stride_s, stride_h,
                     BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    """A tensor descriptor (TMA) over a whole (B, S, H, D) tensor, loading (1, BLOCK_S, 1, BLOCK_D)
    boxes: rows past seqlen and columns past head_dim arrive as zeros."""
    return tl.make_tensor_descriptor(T, shape=[batch, seqlen, heads, head_dim],
                                     strides=[stride_b, stride_s, stride_h, 1], block_shape=[1, BLOCK_S, 1, BLOCK_D])


@triton.jit
def _sequence_bounds(CU_SEQLENS_Q, CU_SEQLENS_K, b, seqlen_q, seqlen_k, total_q, total_k, IS_VARLEN: tl.constexpr):
    """(q_start, seqlen_q, k_start, seqlen_k) of batch entry b: packed offsets for varlen, else 0.

    Varlen offsets are clamped so that start <= end stay within [0, total]: offsets that overrun
    the packed tensors, decrease, or do not start at 0 (possible only when cu_seqlens live on the
    GPU, where the host cannot check them without a sync) give shorter or empty sequences, never an
    access outside the tensors."""
    q_start = tl.full((), 0, tl.int32)
    k_start = tl.full((), 0, tl.int32)
    if IS_VARLEN:
        q_start = tl.minimum(tl.maximum(tl.load(CU_SEQLENS_Q + b), 0), total_q)
        seqlen_q = tl.minimum(tl.maximum(tl.load(CU_SEQLENS_Q + b + 1), q_start), total_q) - q_start
        k_start = tl.minimum(tl.maximum(tl.load(CU_SEQLENS_K + b), 0), total_k)
        seqlen_k = tl.minimum(tl.maximum(tl.load(CU_SEQLENS_K + b + 1), k_start), total_k) - k_start
    return q_start, seqlen_q, k_start, seqlen_k


@triton.jit
def _online_softmax_step(s, m_i, l_i):
    """One key block of the online softmax in base 2: (p, alpha, l_i, m_i) updated by scores s.

    A row with every key masked so far keeps m = -inf; shifting by 0 instead keeps exp2 finite
    (p = 0, alpha = 0) rather than producing inf - inf = NaN."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.math.exp2(s - m_shift[:, None])
    alpha = tl.math.exp2(m_i - m_shift)
    l_i = l_i * alpha + tl.sum(p, 1)
    return p, alpha, l_i, m_new


@triton.jit
def _split_nonfinite_values(acc, v, keep, DOT_MODE: tl.constexpr):
    """(acc, v) with v's non-finite entries moved out of the product p @ v.

    Where a tile's keep mask differs between rows (the causal diagonal), a NaN or inf V row that
    some rows see sits in the same tile as rows that must not see it, and p = 0 for those rows
    would still give 0 * NaN = NaN through the dot. So such entries are zeroed in v, and the
    output entries of the rows that do see one become NaN (an inf in a visible V row thus gives
    NaN, not inf). Only tiles that hold a non-finite value pay for the extra dot."""
    bad = (v != v) | (tl.abs(v.to(tl.float32)) == float("inf"))
    if tl.max(tl.max(bad.to(tl.int32), 1), 0) > 0:
        seen = _dot(keep.to(v.dtype), bad.to(v.dtype), tl.zeros(acc.shape, tl.float32), DOT_MODE)
        acc = tl.where(seen > 0, float("nan"), acc)
        v = tl.where(bad, tl.zeros_like(v), v)
    return acc, v


@triton.jit
def _key_ranges(start_m, seqlen_k, causal_offset, IS_CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr):
    """For the query block at start_m: keys [0, full_hi) need no mask; [full_hi, hi) hold the causal
    diagonal and the ragged last block; keys at or past hi are invisible to every row (skipped)."""
    if IS_CAUSAL:
        hi = tl.maximum(tl.minimum(seqlen_k, start_m + BLOCK_M + causal_offset), 0)
        first_row_limit = tl.maximum(start_m + causal_offset + 1, 0)
        full_hi = tl.minimum(first_row_limit // BLOCK_N, seqlen_k // BLOCK_N) * BLOCK_N
    else:
        hi = seqlen_k
        full_hi = seqlen_k // BLOCK_N * BLOCK_N
    return full_hi, hi


# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------
@triton.jit
def _attn_fwd_inner(
    acc, l_i, m_i, q,
    k_base, v_base, mask_base, stride_ks, stride_vs, stride_mn,
    k_desc, v_desc, desc_b, desc_h,
    lo, hi, seqlen_k, causal_offset, qk_scale_log2,
    offs_m, offs_n, offs_d, head_dim,
    MASKED: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
    EVEN_D: tl.constexpr, DOT_MODE: tl.constexpr, USE_TMA: tl.constexpr, BLOCK_N: tl.constexpr,
):
    d_ok = offs_d < head_dim
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        col_ok = cols < seqlen_k
        if USE_TMA:  # bulk tensor copies; rows past the end and columns past D arrive as zeros
            k_t = tl.trans(k_desc.load([desc_b, start_n, desc_h, 0]).reshape(BLOCK_N, q.shape[1]))
        else:
            k_t = _load_2d(k_base + cols[None, :] * stride_ks + offs_d[:, None],  # (D, N)
                           col_ok[None, :], d_ok[:, None], MASKED, not EVEN_D)
        s = _dot(q, k_t, tl.zeros((q.shape[0], BLOCK_N), tl.float32), DOT_MODE) * qk_scale_log2
        if MASKED:
            keep = col_ok[None, :]
            if IS_CAUSAL:
                keep = keep & (cols[None, :] <= offs_m[:, None] + causal_offset)
            s = tl.where(keep, s, float("-inf"))
        if HAS_KEY_MASK:
            padded = tl.load(mask_base + cols * stride_mn, mask=col_ok, other=1) != 0
            s = tl.where(padded[None, :], float("-inf"), s)
        p, alpha, l_i, m_new = _online_softmax_step(s, m_i, l_i)
        if USE_TMA:
            v = v_desc.load([desc_b, start_n, desc_h, 0]).reshape(BLOCK_N, q.shape[1])
        else:
            v = _load_2d(v_base + cols[:, None] * stride_vs + offs_d[None, :],  # (N, D)
                         col_ok[:, None], d_ok[None, :], MASKED, not EVEN_D)
        acc = acc * alpha[:, None]
        if HAS_KEY_MASK:  # a padded key's V row is seen by no row: select it away
            v = tl.where(padded[:, None], tl.zeros_like(v), v)
        if MASKED and IS_CAUSAL:
            acc, v = _split_nonfinite_values(acc, v, keep, DOT_MODE)
        acc = _dot(p.to(v.dtype), v, acc, DOT_MODE)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd_kernel(
    # pointers
    Q, K, V, Out, LSE, KEY_MASK, CU_SEQLENS_Q, CU_SEQLENS_K,
    # sizes
    batch, seqlen_q, seqlen_k, total_q, total_k, num_heads, kv_group_size, head_dim, qk_scale_log2,
    seqlen_bucket,
    # strides
    stride_qb, stride_qs, stride_qh,
    stride_kb, stride_ks, stride_kh,
    stride_vb, stride_vs, stride_vh,
    stride_ob, stride_os, stride_oh,
    stride_lb, stride_lh, stride_ls,
    stride_mb, stride_mn,
    # meta-parameters
    IS_CAUSAL: tl.constexpr, HAS_KEY_MASK: tl.constexpr, IS_VARLEN: tl.constexpr,
    EVEN_D: tl.constexpr, DOT_MODE: tl.constexpr, USE_TMA: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One program: BLOCK_M query rows of one (batch, head); grid (cdiv(max Sq, BLOCK_M), B * H).

    Causal grids run the last query blocks (the most keys) first, so the short ones fill the tail.
    USE_TMA (Hopper and later, dense inputs with 16-byte aligned strides) loads K and V through
    tensor descriptors over the whole (B, S, H, D) tensors instead of pointer arithmetic.
    """
    pid_m = tl.program_id(0)
    if IS_CAUSAL:
        pid_m = tl.num_programs(0) - 1 - pid_m
    start_m = pid_m * BLOCK_M
    off_bh = tl.program_id(1)
    b = off_bh // num_heads
    h = off_bh % num_heads
    h_kv = h // kv_group_size
    q_start, seqlen_q, k_start, seqlen_k = _sequence_bounds(CU_SEQLENS_Q, CU_SEQLENS_K, b, seqlen_q, seqlen_k,
                                                            total_q, total_k, IS_VARLEN)
    if start_m >= seqlen_q:
        return
    b64 = b.to(tl.int64)
    q_base = Q + b64 * stride_qb + q_start.to(tl.int64) * stride_qs + h * stride_qh
    k_base = K + b64 * stride_kb + k_start.to(tl.int64) * stride_ks + h_kv * stride_kh
    v_base = V + b64 * stride_vb + k_start.to(tl.int64) * stride_vs + h_kv * stride_vh
    o_base = Out + b64 * stride_ob + q_start.to(tl.int64) * stride_os + h * stride_oh
    mask_base = KEY_MASK + b64 * stride_mb
    k_desc = None
    v_desc = None
    if USE_TMA:
        num_kv_heads = num_heads // kv_group_size
        k_desc = _bshd_descriptor(K, batch, seqlen_k, num_kv_heads, head_dim, stride_kb, stride_ks, stride_kh,
                                  BLOCK_N, BLOCK_D)
        v_desc = _bshd_descriptor(V, batch, seqlen_k, num_kv_heads, head_dim, stride_vb, stride_vs, stride_vh,
                                  BLOCK_N, BLOCK_D)

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < seqlen_q
    d_ok = offs_d < head_dim
    q = tl.load(q_base + offs_m[:, None] * stride_qs + offs_d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)

    # Key range: [0, full_hi) needs no mask; [full_hi, hi) holds the causal diagonal and the
    # ragged last block; keys at or beyond hi are invisible to every row (causal block skipping).
    causal_offset = seqlen_k - seqlen_q
    full_hi, hi = _key_ranges(start_m, seqlen_k, causal_offset, IS_CAUSAL, BLOCK_M, BLOCK_N)
    acc, l_i, m_i = _attn_fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, mask_base, stride_ks, stride_vs, stride_mn, k_desc, v_desc, b, h_kv,
        0, full_hi, seqlen_k, causal_offset, qk_scale_log2, offs_m, offs_n, offs_d, head_dim,
        False, IS_CAUSAL, HAS_KEY_MASK, EVEN_D, DOT_MODE, USE_TMA, BLOCK_N,
    )
    acc, l_i, m_i = _attn_fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, mask_base, stride_ks, stride_vs, stride_mn, k_desc, v_desc, b, h_kv,
        full_hi, hi, seqlen_k, causal_offset, qk_scale_log2, offs_m, offs_n, offs_d, head_dim,
        True, IS_CAUSAL, HAS_KEY_MASK, EVEN_D, DOT_MODE, USE_TMA, BLOCK_N,
    )

    # Rows that saw no key (all masked) return zeros and lse = -inf, as SDPA does.
    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    tl.store(o_base + offs_m[:, None] * stride_os + offs_d[None, :], out.to(Out.dtype.element_ty),
             mask=row_ok[:, None] & d_ok[None, :])
    log_l = tl.math.log2(tl.where(l_i == 0.0, 1.0, l_i))
    lse = tl.where(l_i == 0.0, float("-inf"), (m_i + log_l) * 0.6931471805599453)
    tl.store(LSE + b64 * stride_lb + h * stride_lh + (q_start + offs_m) * stride_ls, lse, mask=row_ok)


# ----------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------
@triton.jit
def _attn_bwd_preprocess_kernel(
    Out, DOut, DLSE, Delta, CU_SEQLENS_Q,
    seqlen_q, total_q, num_heads, head_dim,
    stride_ob, stride_os, stride_oh,
    stride_dob, stride_dos, stride_doh,
    stride_lb, stride_lh, stride_ls,
    HAS_DLSE: tl.constexpr, IS_VARLEN: tl.constexpr, FP64_DS: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    """delta_i = do_i . o_i - dlse_i (the row term of the softmax gradient), in lse's layout."""
    start_m = tl.program_id(0) * BLOCK_M
    off_bh = tl.program_id(1)
    b = off_bh // num_heads
    h = off_bh % num_heads
    q_start, seqlen_q, _, _ = _sequence_bounds(CU_SEQLENS_Q, CU_SEQLENS_Q, b, seqlen_q, seqlen_q, total_q, total_q,
                                               IS_VARLEN)
    if start_m >= seqlen_q:
        return
    b64 = b.to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    ok = (offs_m[:, None] < seqlen_q) & (offs_d[None, :] < head_dim)
    rows = (q_start + offs_m).to(tl.int64)
    o = tl.load(Out + b64 * stride_ob + rows[:, None] * stride_os + h * stride_oh + offs_d[None, :],
                mask=ok, other=0.0).to(tl.float32)
    do = tl.load(DOut + b64 * stride_dob + rows[:, None] * stride_dos + h * stride_doh + offs_d[None, :],
                 mask=ok, other=0.0).to(tl.float32)
    if FP64_DS:
        delta = tl.sum(o.to(tl.float64) * do.to(tl.float64), 1)
    else:
        delta = tl.sum(o * do, 1)
    lse_ptrs = b64 * stride_lb + h * stride_lh + rows * stride_ls
    if HAS_DLSE:
        delta -= tl.load(DLSE + lse_ptrs, mask=offs_m < seqlen_q, other=0.0)
    tl.store(Delta + lse_ptrs, delta, mask=offs_m < seqlen_q)


@triton.jit
def _dot_fp64(a, b):
    """a @ b in float64, for dp = do . v of fp32 inputs (FP64_DS): ds = p (dp - delta) subtracts two
    nearly equal terms, and dp from an fp32 matmul and delta from an fp32 row sum round differently
    enough to fail the 2x rule against torch's fp32 gradient (with one key torch cancels exactly)."""
    return tl.dot(a.to(tl.float64), b.to(tl.float64), tl.zeros((a.shape[0], b.shape[1]), tl.float64),
                  input_precision="ieee")


@triton.jit
def _load_lse_log2(lse_ptrs, ok):
    # Fully masked rows have lse = -inf; +inf makes their p = exp2(s - inf) = 0 without a NaN.
    lse = tl.load(lse_ptrs, mask=ok, other=float("inf"))
    return tl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634)


@triton.jit
def _attn_bwd_dkdv_inner(
    dk, dv, k, v, key_padded,
    q_base, do_base, lse_base, delta_base,
    stride_qs, stride_dos, stride_ls,
    q_desc, do_desc, desc_b, desc_h,
    lo, hi, seqlen_q, seqlen_k, causal_offset, qk_scale_log2,
    offs_n, offs_d, head_dim,
    MASKED: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
    DOT_MODE: tl.constexpr, USE_TMA: tl.constexpr, FP64_DS: tl.constexpr, BLOCK_M: tl.constexpr,
):
    d_ok = offs_d < head_dim
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + tl.arange(0, BLOCK_M)
        row_ok = rows < seqlen_q
        # Rows past the end load q = do = 0 and lse = +inf, so they contribute p = 0: no mask needed.
        if USE_TMA:
            q_t = tl.trans(q_desc.load([desc_b, start_m, desc_h, 0]).reshape(BLOCK_M, k.shape[1]))
        else:
            q_t = tl.load(q_base + rows[None, :] * stride_qs + offs_d[:, None],  # (D, M)
                          mask=row_ok[None, :] & d_ok[:, None], other=0.0)
        lse2 = _load_lse_log2(lse_base + rows * stride_ls, row_ok)
        s_t = _dot(k, q_t, tl.zeros((k.shape[0], BLOCK_M), tl.float32), DOT_MODE) * qk_scale_log2
        p_t = tl.math.exp2(s_t - lse2[None, :])  # (N, M)
        if MASKED:
            keep = offs_n[:, None] < seqlen_k
            if IS_CAUSAL:
                keep = keep & (offs_n[:, None] <= rows[None, :] + causal_offset)
            p_t = tl.where(keep, p_t, 0.0)
        if HAS_KEY_MASK:
            p_t = tl.where(key_padded[:, None], 0.0, p_t)
        if USE_TMA:
            do = do_desc.load([desc_b, start_m, desc_h, 0]).reshape(BLOCK_M, k.shape[1])
        else:
            do = tl.load(do_base + rows[:, None] * stride_dos + offs_d[None, :],
                         mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        dv = _dot(p_t.to(do.dtype), do, dv, DOT_MODE)
        delta = tl.load(delta_base + rows * stride_ls, mask=row_ok, other=0.0)
        if FP64_DS:
            dp_t = _dot_fp64(v, tl.trans(do))
        else:
            dp_t = _dot(v, tl.trans(do), tl.zeros((k.shape[0], BLOCK_M), tl.float32), DOT_MODE)
        ds_t = p_t * (dp_t - delta[None, :])
        if MASKED:  # a select, not p = 0 alone: dp of a NaN V row (or q . k of a NaN K row) may be NaN
            ds_t = tl.where(keep, ds_t, 0.0)
        ds_t = ds_t.to(k.dtype)
        dk = _dot(ds_t, tl.trans(q_t), dk, DOT_MODE)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv_kernel(
    # pointers
    Q, K, V, DOut, LSE, Delta, DK, DV, KEY_MASK, CU_SEQLENS_Q, CU_SEQLENS_K,
    # sizes
    batch, seqlen_q, seqlen_k, total_q, total_k, num_kv_heads, kv_group_size, head_dim, qk_scale_log2, scale,
    # strides
    stride_qb, stride_qs, stride_qh,
    stride_kb, stride_ks, stride_kh,
    stride_vb, stride_vs, stride_vh,
    stride_dob, stride_dos, stride_doh,
    stride_dkb, stride_dks, stride_dkh,
    stride_dvb, stride_dvs, stride_dvh,
    stride_lb, stride_lh, stride_ls,
    stride_mb, stride_mn,
    # meta-parameters
    IS_CAUSAL: tl.constexpr, HAS_KEY_MASK: tl.constexpr, IS_VARLEN: tl.constexpr,
    DOT_MODE: tl.constexpr, USE_TMA: tl.constexpr, FP64_DS: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One program: dK, dV of BLOCK_N keys of one KV head, summed over its query-head group.

    Each key block is owned by one program, so dK/dV need no atomics; dQ is a separate pass
    (_attn_bwd_dq_kernel). That makes the whole backward deterministic, and on an H100 it was also
    faster than adding dQ here with fp32 atomics: 380 against 129 TFLOP/s (D=128, S=4096, bf16;
    bench/tune_attention.py).
    """
    start_n = tl.program_id(0) * BLOCK_N
    off_bh = tl.program_id(1)
    b = off_bh // num_kv_heads
    h_kv = off_bh % num_kv_heads
    q_start, seqlen_q, k_start, seqlen_k = _sequence_bounds(CU_SEQLENS_Q, CU_SEQLENS_K, b, seqlen_q, seqlen_k,
                                                            total_q, total_k, IS_VARLEN)
    if start_n >= seqlen_k:
        return
    b64 = b.to(tl.int64)
    q_row0 = q_start.to(tl.int64)
    k_row0 = k_start.to(tl.int64)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    kd_ok = (offs_n[:, None] < seqlen_k) & (offs_d[None, :] < head_dim)
    k = tl.load(K + b64 * stride_kb + (k_row0 + offs_n[:, None]) * stride_ks + h_kv * stride_kh + offs_d[None, :],
                mask=kd_ok, other=0.0)
    v = tl.load(V + b64 * stride_vb + (k_row0 + offs_n[:, None]) * stride_vs + h_kv * stride_vh + offs_d[None, :],
                mask=kd_ok, other=0.0)
    key_padded = offs_n < 0  # all False; replaced below when a padding mask is given
    if HAS_KEY_MASK:
        key_padded = tl.load(KEY_MASK + b64 * stride_mb + offs_n * stride_mn, mask=offs_n < seqlen_k, other=1) != 0
        # A padded key gets zero gradients whatever its K/V rows hold (p = 0 alone would leave
        # 0 * NaN in ds for a NaN stored there).
        k = tl.where(key_padded[:, None], tl.zeros_like(k), k)
        v = tl.where(key_padded[:, None], tl.zeros_like(v), v)
    dk = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    q_desc = None
    do_desc = None
    if USE_TMA:  # dense batches only (the launcher checks): rows past seqlen_q arrive as zeros
        num_heads = num_kv_heads * kv_group_size
        q_desc = _bshd_descriptor(Q, batch, seqlen_q, num_heads, head_dim, stride_qb, stride_qs, stride_qh,
                                  BLOCK_M, BLOCK_D)
        do_desc = _bshd_descriptor(DOut, batch, seqlen_q, num_heads, head_dim, stride_dob, stride_dos, stride_doh,
                                   BLOCK_M, BLOCK_D)

    # Query blocks [m_lo, m_full) cross the causal diagonal (masked); [m_full, m_hi) see the whole
    # key block; a ragged last key block masks everything.
    causal_offset = seqlen_k - seqlen_q
    m_hi = seqlen_q
    if IS_CAUSAL:
        m_lo = tl.maximum(start_n - causal_offset, 0) // BLOCK_M * BLOCK_M
        m_full = tl.maximum(start_n + BLOCK_N - 1 - causal_offset, 0)
        m_full = tl.minimum(tl.cdiv(m_full, BLOCK_M) * BLOCK_M, m_hi)
        m_lo = tl.minimum(m_lo, m_hi)
    else:
        m_lo = 0
        m_full = 0
    if start_n + BLOCK_N > seqlen_k:
        m_full = m_hi

    for g in range(0, kv_group_size):
        h = h_kv * kv_group_size + g
        q_base = Q + b64 * stride_qb + q_row0 * stride_qs + h * stride_qh
        do_base = DOut + b64 * stride_dob + q_row0 * stride_dos + h * stride_doh
        lse_base = LSE + b64 * stride_lb + h * stride_lh + q_row0 * stride_ls
        delta_base = Delta + b64 * stride_lb + h * stride_lh + q_row0 * stride_ls
        dk, dv = _attn_bwd_dkdv_inner(
            dk, dv, k, v, key_padded, q_base, do_base, lse_base, delta_base,
            stride_qs, stride_dos, stride_ls, q_desc, do_desc, b, h,
            m_lo, m_full, seqlen_q, seqlen_k, causal_offset, qk_scale_log2, offs_n, offs_d, head_dim,
            True, IS_CAUSAL, HAS_KEY_MASK, DOT_MODE, USE_TMA, FP64_DS, BLOCK_M,
        )
        dk, dv = _attn_bwd_dkdv_inner(
            dk, dv, k, v, key_padded, q_base, do_base, lse_base, delta_base,
            stride_qs, stride_dos, stride_ls, q_desc, do_desc, b, h,
            m_full, m_hi, seqlen_q, seqlen_k, causal_offset, qk_scale_log2, offs_n, offs_d, head_dim,
            False, IS_CAUSAL, HAS_KEY_MASK, DOT_MODE, USE_TMA, FP64_DS, BLOCK_M,
        )
    dk = dk * scale
    tl.store(DK + b64 * stride_dkb + (k_row0 + offs_n[:, None]) * stride_dks + h_kv * stride_dkh + offs_d[None, :],
             dk.to(DK.dtype.element_ty), mask=kd_ok)
    tl.store(DV + b64 * stride_dvb + (k_row0 + offs_n[:, None]) * stride_dvs + h_kv * stride_dvh + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=kd_ok)


@triton.jit
def _attn_bwd_dq_inner(
    dq, q, do, lse2, delta,
    k_base, v_base, mask_base, stride_ks, stride_vs, stride_mn,
    k_desc, v_desc, desc_b, desc_h,
    lo, hi, seqlen_k, causal_offset, qk_scale_log2,
    offs_m, offs_d, head_dim,
    MASKED: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_KEY_MASK: tl.constexpr,
    EVEN_D: tl.constexpr, DOT_MODE: tl.constexpr, USE_TMA: tl.constexpr, FP64_DS: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    d_ok = offs_d < head_dim
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        col_ok = cols < seqlen_k
        if USE_TMA:
            k_t = tl.trans(k_desc.load([desc_b, start_n, desc_h, 0]).reshape(BLOCK_N, q.shape[1]))
            v_t = tl.trans(v_desc.load([desc_b, start_n, desc_h, 0]).reshape(BLOCK_N, q.shape[1]))
        else:
            k_t = _load_2d(k_base + cols[None, :] * stride_ks + offs_d[:, None],  # (D, N)
                           col_ok[None, :], d_ok[:, None], MASKED, not EVEN_D)
            v_t = _load_2d(v_base + cols[None, :] * stride_vs + offs_d[:, None],
                           col_ok[None, :], d_ok[:, None], MASKED, not EVEN_D)
        if HAS_KEY_MASK:  # padded keys' K/V rows are selected away (see the dK/dV kernel)
            padded = tl.load(mask_base + cols * stride_mn, mask=col_ok, other=1) != 0
            k_t = tl.where(padded[None, :], tl.zeros_like(k_t), k_t)
            v_t = tl.where(padded[None, :], tl.zeros_like(v_t), v_t)
        s = _dot(q, k_t, tl.zeros((q.shape[0], BLOCK_N), tl.float32), DOT_MODE) * qk_scale_log2
        p = tl.math.exp2(s - lse2[:, None])
        if HAS_KEY_MASK:
            p = tl.where(padded[None, :], 0.0, p)
        if FP64_DS:
            dp = _dot_fp64(do, v_t)
        else:
            dp = _dot(do, v_t, tl.zeros((q.shape[0], BLOCK_N), tl.float32), DOT_MODE)
        ds = p * (dp - delta[:, None])
        if MASKED:
            keep = col_ok[None, :]
            if IS_CAUSAL:
                keep = keep & (cols[None, :] <= offs_m[:, None] + causal_offset)
            # A select, not p = 0: dp of a key this row does not see may be NaN (a NaN V row below
            # the diagonal), and 0 * NaN would reach dQ.
            ds = tl.where(keep, ds, 0.0)
        ds = ds.to(k_t.dtype)
        k_rows = tl.trans(k_t)  # (N, D)
        if MASKED and IS_CAUSAL:  # likewise a NaN K row below the diagonal times ds = 0
            dq, k_rows = _split_nonfinite_values(dq, k_rows, keep, DOT_MODE)
        dq = _dot(ds, k_rows, dq, DOT_MODE)
    return dq


@triton.jit
def _attn_bwd_dq_kernel(
    # pointers
    Q, K, V, DOut, LSE, Delta, DQ, KEY_MASK, CU_SEQLENS_Q, CU_SEQLENS_K,
    # sizes
    batch, seqlen_q, seqlen_k, total_q, total_k, num_heads, kv_group_size, head_dim, qk_scale_log2, scale,
    # strides
    stride_qb, stride_qs, stride_qh,
    stride_kb, stride_ks, stride_kh,
    stride_vb, stride_vs, stride_vh,
    stride_dob, stride_dos, stride_doh,
    stride_dqb, stride_dqs, stride_dqh,
    stride_lb, stride_lh, stride_ls,
    stride_mb, stride_mn,
    # meta-parameters
    IS_CAUSAL: tl.constexpr, HAS_KEY_MASK: tl.constexpr, IS_VARLEN: tl.constexpr,
    EVEN_D: tl.constexpr, DOT_MODE: tl.constexpr, USE_TMA: tl.constexpr, FP64_DS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One program: dQ of BLOCK_M query rows of one head, keys streamed in order (deterministic)."""
    start_m = tl.program_id(0) * BLOCK_M
    off_bh = tl.program_id(1)
    b = off_bh // num_heads
    h = off_bh % num_heads
    h_kv = h // kv_group_size
    q_start, seqlen_q, k_start, seqlen_k = _sequence_bounds(CU_SEQLENS_Q, CU_SEQLENS_K, b, seqlen_q, seqlen_k,
                                                            total_q, total_k, IS_VARLEN)
    if start_m >= seqlen_q:
        return
    b64 = b.to(tl.int64)
    q_row0 = q_start.to(tl.int64)
    k_row0 = k_start.to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < seqlen_q
    md_ok = row_ok[:, None] & (offs_d[None, :] < head_dim)
    q = tl.load(Q + b64 * stride_qb + (q_row0 + offs_m[:, None]) * stride_qs + h * stride_qh + offs_d[None, :],
                mask=md_ok, other=0.0)
    do = tl.load(DOut + b64 * stride_dob + (q_row0 + offs_m[:, None]) * stride_dos + h * stride_doh
                 + offs_d[None, :], mask=md_ok, other=0.0)
    lse2 = _load_lse_log2(LSE + b64 * stride_lb + h * stride_lh + (q_row0 + offs_m) * stride_ls, row_ok)
    delta = tl.load(Delta + b64 * stride_lb + h * stride_lh + (q_row0 + offs_m) * stride_ls, mask=row_ok, other=0.0)
    k_base = K + b64 * stride_kb + k_row0 * stride_ks + h_kv * stride_kh
    v_base = V + b64 * stride_vb + k_row0 * stride_vs + h_kv * stride_vh
    mask_base = KEY_MASK + b64 * stride_mb
    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    k_desc = None
    v_desc = None
    if USE_TMA:
        num_kv_heads = num_heads // kv_group_size
        k_desc = _bshd_descriptor(K, batch, seqlen_k, num_kv_heads, head_dim, stride_kb, stride_ks, stride_kh,
                                  BLOCK_N, BLOCK_D)
        v_desc = _bshd_descriptor(V, batch, seqlen_k, num_kv_heads, head_dim, stride_vb, stride_vs, stride_vh,
                                  BLOCK_N, BLOCK_D)

    causal_offset = seqlen_k - seqlen_q
    full_hi, hi = _key_ranges(start_m, seqlen_k, causal_offset, IS_CAUSAL, BLOCK_M, BLOCK_N)
    dq = _attn_bwd_dq_inner(
        dq, q, do, lse2, delta, k_base, v_base, mask_base, stride_ks, stride_vs, stride_mn, k_desc, v_desc, b, h_kv,
        0, full_hi, seqlen_k, causal_offset, qk_scale_log2, offs_m, offs_d, head_dim,
        False, IS_CAUSAL, HAS_KEY_MASK, EVEN_D, DOT_MODE, USE_TMA, FP64_DS, BLOCK_N,
    )
    dq = _attn_bwd_dq_inner(
        dq, q, do, lse2, delta, k_base, v_base, mask_base, stride_ks, stride_vs, stride_mn, k_desc, v_desc, b, h_kv,
        full_hi, hi, seqlen_k, causal_offset, qk_scale_log2, offs_m, offs_d, head_dim,
        True, IS_CAUSAL, HAS_KEY_MASK, EVEN_D, DOT_MODE, USE_TMA, FP64_DS, BLOCK_N,
    )
    dq = dq * scale
    tl.store(DQ + b64 * stride_dqb + (q_row0 + offs_m[:, None]) * stride_dqs + h * stride_dqh + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=md_ok)


# ----------------------------------------------------------------------------------------------
# Launchers (called from genkernels.ops.attention inside torch.library.triton_op; tensors are
# already validated and viewed as (B, S, H, D) -- or (1, total, H, D) for varlen)
# ----------------------------------------------------------------------------------------------
def tma_ok(varlen: bool, *tensors) -> bool:
    """Whether kernels may load these tensors through tensor descriptors (TMA): Hopper or newer, not
    traced by torch.compile (device-side descriptors need triton's allocator, set per launch below),
    dense batches, 16-byte aligned base pointers and strides."""
    if triton_interpret() or varlen or _capability()[0] < 9 or torch.compiler.is_compiling():
        return False
    return all(t.data_ptr() % 16 == 0 and all(st * t.element_size() % 16 == 0 for st in t.stride()[:3])
               for t in tensors)


def _bsh(t: torch.Tensor, varlen: bool = False) -> tuple[int, int, int]:
    """(batch, seq, head) strides; packed varlen tensors find sequences through cu_seqlens instead."""
    return 0 if varlen else t.stride(0), t.stride(1), t.stride(2)


def _mask_args(key_padding_mask, placeholder):
    # Absent optional tensors are passed as a placeholder the kernel never reads (its constexpr
    # flag is off): the interpreter and wrap_triton both want a real tensor in every pointer slot.
    if key_padding_mask is None:
        return placeholder, (0, 0)
    mask = key_padding_mask.view(torch.uint8)  # same bytes; Triton's i1 pointers are awkward
    return mask, (mask.stride(0), mask.stride(1))


def attention_forward(wrap, q, k, v, out, lse, key_padding_mask, cu_seqlens_q, cu_seqlens_k,
                      batch, max_seqlen_q, max_seqlen_k, scale, causal, allow_tf32, varlen, config=None):
    """Launch the forward. lse is (B, Hq, Sq) or, for varlen, (Hq, total_q) viewed as (1, Hq, total_q).

    config: an explicit dict(BLOCK_M, BLOCK_N, num_warps, num_stages) instead of the autotuned
    choice (bench/tune_attention.py sweeps these)."""
    num_heads, head_dim = q.shape[2], q.shape[3]
    block_d = max(16, triton.next_power_of_2(head_dim))
    mask, (stride_mb, stride_mn) = _mask_args(key_padding_mask, q)
    has_mask = key_padding_mask is not None
    if not varlen:
        cu_seqlens_q = cu_seqlens_k = q
    tma = tma_ok(varlen, k, v)
    if config is None:
        kernel, config = forward_kernel(block_d, q.element_size(), tma), {}
    else:  # explicit tiles; USE_TMA defaults to what the inputs allow
        kernel, config = _attn_fwd_kernel, {"USE_TMA": tma, **config}
    if tma or config.get("USE_TMA"):
        _set_tma_allocator()
    grid = lambda meta: (triton.cdiv(max_seqlen_q, meta["BLOCK_M"]), batch * num_heads)  # noqa: E731
    wrap(kernel)[grid](
        q, k, v, out, lse, mask, cu_seqlens_q, cu_seqlens_k,
        batch, max_seqlen_q, max_seqlen_k, q.shape[1], k.shape[1], num_heads, num_heads // k.shape[2], head_dim,
        scale * LOG2E,
        min(triton.next_power_of_2(max(max_seqlen_q, max_seqlen_k)), 8192),
        *_bsh(q, varlen), *_bsh(k, varlen), *_bsh(v, varlen), *_bsh(out, varlen), *_bsh(lse, varlen),
        stride_mb, stride_mn,
        IS_CAUSAL=causal, HAS_KEY_MASK=has_mask, IS_VARLEN=varlen,
        EVEN_D=head_dim == block_d, DOT_MODE=dot_mode(q.dtype, allow_tf32), BLOCK_D=block_d,
        **config,
    )


def attention_backward(wrap, dout, q, k, v, out, lse, dlse, delta, dq, dk, dv,
                       key_padding_mask, cu_seqlens_q, cu_seqlens_k, batch, max_seqlen_q, max_seqlen_k,
                       scale, causal, allow_tf32, varlen, config=None):
    """Launch preprocess (delta), dK/dV, then dQ: deterministic, no atomics.

    config: explicit tiles in backward_config's format (for bench/tune_attention.py)."""
    num_heads, head_dim = q.shape[2], q.shape[3]
    num_kv_heads = k.shape[2]
    group = num_heads // num_kv_heads
    block_d = max(16, triton.next_power_of_2(head_dim))
    cfg = config or backward_config(block_d, q.element_size())
    launch = dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    # Descriptor loads in the backward are opt-in through an explicit config (bench/tune_attention.py
    # sweeps them); the default tiles use pointer loads, the ones measured on an H100.
    use_tma = bool(cfg.get("USE_TMA", False))
    if use_tma:
        if varlen:
            raise ValueError("tensor-descriptor loads (USE_TMA) need dense, not packed varlen, inputs")
        _set_tma_allocator()
    mask, (stride_mb, stride_mn) = _mask_args(key_padding_mask, q)
    has_mask = key_padding_mask is not None
    if not varlen:
        cu_seqlens_q = cu_seqlens_k = q
    # delta's dtype picks the precision of dp and delta (backward_delta_dtype): float64 on the fp32
    # IEEE path, float32 otherwise.
    fp64_ds = delta.dtype == torch.float64
    pre_m = 16 if triton_interpret() else 64
    wrap(_attn_bwd_preprocess_kernel)[(triton.cdiv(max_seqlen_q, pre_m), batch * num_heads)](
        out, dout, delta if dlse is None else dlse, delta, cu_seqlens_q, max_seqlen_q, q.shape[1], num_heads, head_dim,
        *_bsh(out, varlen), *_bsh(dout, varlen), *_bsh(lse, varlen),
        HAS_DLSE=dlse is not None, IS_VARLEN=varlen, FP64_DS=fp64_ds, BLOCK_D=block_d, BLOCK_M=pre_m,
        num_warps=1 if triton_interpret() else 4,
    )
    dot = dot_mode(q.dtype, allow_tf32)
    wrap(_attn_bwd_dkdv_kernel)[(triton.cdiv(max_seqlen_k, cfg["DKDV_N"]), batch * num_kv_heads)](
        q, k, v, dout, lse, delta, dk, dv, mask, cu_seqlens_q, cu_seqlens_k,
        batch, max_seqlen_q, max_seqlen_k, q.shape[1], k.shape[1], num_kv_heads, group, head_dim, scale * LOG2E, scale,
        *[stride for t in (q, k, v, dout, dk, dv, lse) for stride in _bsh(t, varlen)],
        stride_mb, stride_mn,
        IS_CAUSAL=causal, HAS_KEY_MASK=has_mask, IS_VARLEN=varlen,
        DOT_MODE=dot, USE_TMA=use_tma, FP64_DS=fp64_ds, BLOCK_D=block_d, BLOCK_M=cfg["DKDV_M"],
        BLOCK_N=cfg["DKDV_N"], **launch,
    )
    wrap(_attn_bwd_dq_kernel)[(triton.cdiv(max_seqlen_q, cfg["DQ_M"]), batch * num_heads)](
        q, k, v, dout, lse, delta, dq, mask, cu_seqlens_q, cu_seqlens_k,
        batch, max_seqlen_q, max_seqlen_k, q.shape[1], k.shape[1], num_heads, group, head_dim, scale * LOG2E, scale,
        *[stride for t in (q, k, v, dout, dq, lse) for stride in _bsh(t, varlen)], stride_mb, stride_mn,
        IS_CAUSAL=causal, HAS_KEY_MASK=has_mask, IS_VARLEN=varlen,
        EVEN_D=head_dim == block_d, DOT_MODE=dot, USE_TMA=use_tma, FP64_DS=fp64_ds, BLOCK_D=block_d,
        BLOCK_M=cfg["DQ_M"], BLOCK_N=cfg["DQ_N"], **launch,
    )



def backward_delta_dtype(dtype: torch.dtype, allow_tf32: bool) -> torch.dtype:
    """dtype of the backward's delta scratch (B, Hq, Sq), which also sets the precision of dp: float64
    for fp32 inputs with IEEE products (the precision path), float32 otherwise (fp16/bf16 or TF32,
    whose own rounding dwarfs the cancellation in dp - delta)."""
    return torch.float64 if dtype == torch.float32 and not allow_tf32 else torch.float32


__all__ = ["attention_forward", "attention_backward", "backward_delta_dtype", "backward_config", "dot_mode", "LOG2E", "LN2"]
