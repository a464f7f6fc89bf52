"""Fused attention kernels in Triton (CUDA; tested on the CPU with TRITON_INTERPRET=1 against SDPA).

prefill_attention: flash-attention forward over variable-length packed sequences (no padding: a
    batch of conversations of different lengths is one (total_tokens, H, d) tensor with cumulative
    offsets, as FlashAttention's varlen API takes it). Causal, bottom-right aligned when a sequence
    has more keys than queries (a continued prefill); optionally a block mask: tokens that share a
    block id >= 0 (one image's or one clip's tokens) also see each other in both directions.
    GQA: query head h reads key/value head h // (H // KH).
decode_attention: flash-decoding. One query per sequence over a KV cache, the cache split along its
    length into chunks processed in parallel (so a long multimodal context fills the GPU even at
    batch 1), then the chunks' partial results are merged by their log-sum-exp.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit
def _prefill_kernel(Q, K, V, O, cu_q, cu_k, blocks, sm_scale,
                    sqt, sqh, skt, skh, svt, svh, sot, soh,
                    GROUP: tl.constexpr, CAUSAL: tl.constexpr, USE_BLOCKS: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr):
    m_blk = tl.program_id(0)
    b = tl.program_id(1)
    h = tl.program_id(2)
    q0 = tl.load(cu_q + b)
    k0 = tl.load(cu_k + b)
    lq = tl.load(cu_q + b + 1) - q0
    lk = tl.load(cu_k + b + 1) - k0
    if m_blk * BLOCK_M < lq:
        kvh = h // GROUP
        offs_m = m_blk * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, D)
        q = tl.load(Q + (q0 + offs_m)[:, None] * sqt + h * sqh + offs_d[None, :], mask=offs_m[:, None] < lq, other=0.0)
        qpos = offs_m + (lk - lq)  # each query's position among the keys (bottom-right alignment)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        if USE_BLOCKS:
            qb = tl.load(blocks + q0 + offs_m, mask=offs_m < lq, other=-1)
        end = lk
        if CAUSAL and not USE_BLOCKS:  # keys past the last query of this tile are never seen
            end = tl.minimum(lk, (m_blk + 1) * BLOCK_M + lk - lq)
        for start in range(0, end, BLOCK_N):
            n = start + offs_n
            k = tl.load(K + (k0 + n)[None, :] * skt + kvh * skh + offs_d[:, None], mask=n[None, :] < lk, other=0.0)
            s = tl.dot(q, k).to(tl.float32) * sm_scale
            valid = (n[None, :] < lk) & (offs_m[:, None] < lq)
            if CAUSAL:
                allowed = n[None, :] <= qpos[:, None]
                if USE_BLOCKS:
                    kb = tl.load(blocks + k0 + n, mask=n < lk, other=-2)
                    allowed = allowed | ((qb[:, None] == kb[None, :]) & (qb[:, None] >= 0))
                valid = valid & allowed
            s = tl.where(valid, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing to see yet
            p = tl.exp(s - m_safe[:, None])
            alpha = tl.exp(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(V + (k0 + n)[:, None] * svt + kvh * svh + offs_d[None, :], mask=n[:, None] < lk, other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v).to(tl.float32)
            m_i = m_new
        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        tl.store(O + (q0 + offs_m)[:, None] * sot + h * soh + offs_d[None, :], out.to(O.dtype.element_ty),
                 mask=offs_m[:, None] < lq)


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor,
                      causal: bool = True, blocks: torch.Tensor | None = None, sm_scale: float | None = None,
                      block_m: int = 32, block_n: int = 32) -> torch.Tensor:
    """q (Tq, H, d), k and v (Tk, KH, d) packed; cu_q, cu_k (B+1,) int32 offsets -> (Tq, H, d).
    blocks: (Tk,) int32 block id per token (-1: text), only with cu_q == cu_k (a fresh prefill)."""
    tq, heads, d = q.shape
    kv_heads = k.shape[1]
    if heads % kv_heads or d not in (16, 32, 64, 128):
        raise ValueError(f"unsupported shape: {heads} query heads over {kv_heads} kv heads, head dim {d}")
    if blocks is not None and not torch.equal(cu_q, cu_k):
        raise ValueError("a block mask needs the queries and keys to be the same tokens")
    out = torch.empty_like(q)
    batch = cu_q.numel() - 1
    max_q = int((cu_q[1:] - cu_q[:-1]).max()) if batch else 0
    grid = (triton.cdiv(max(max_q, 1), block_m), batch, heads)
    _prefill_kernel[grid](q, k, v, out, cu_q, cu_k, blocks if blocks is not None else cu_q,
                          sm_scale or 1.0 / math.sqrt(d),
                          q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                          out.stride(0), out.stride(1), GROUP=heads // kv_heads, CAUSAL=causal,
                          USE_BLOCKS=blocks is not None, BLOCK_M=block_m, BLOCK_N=block_n, D=d)
    return out


@triton.jit
def _decode_split_kernel(Q, K, V, lengths, O_part, LSE, sm_scale, chunk,
                         sqb, sqh, skb, skh, skt, svb, svh, svt, sob, soh, sos, slb, slh,
                         GROUP: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr):
    b = tl.program_id(0)
    h = tl.program_id(1)
    split = tl.program_id(2)
    kvh = h // GROUP
    length = tl.load(lengths + b)
    lo = split * chunk
    hi = tl.minimum(lo + chunk, length)
    offs_d = tl.arange(0, D)
    offs_n = tl.arange(0, BLOCK_N)
    q = tl.load(Q + b * sqb + h * sqh + offs_d).to(tl.float32)
    m_i = tl.full((), float("-inf"), tl.float32)
    l_i = tl.full((), 0.0, tl.float32)
    acc = tl.zeros([D], tl.float32)
    for start in range(lo, hi, BLOCK_N):
        n = start + offs_n
        keep = n < hi
        k = tl.load(K + b * skb + kvh * skh + n[:, None] * skt + offs_d[None, :], mask=keep[:, None], other=0.0)
        s = tl.sum(k.to(tl.float32) * q[None, :], 1) * sm_scale
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 0))
        p = tl.exp(s - m_new)
        alpha = tl.exp(m_i - m_new)
        v = tl.load(V + b * svb + kvh * svh + n[:, None] * svt + offs_d[None, :], mask=keep[:, None], other=0.0)
        acc = acc * alpha + tl.sum(p[:, None] * v.to(tl.float32), 0)
        l_i = l_i * alpha + tl.sum(p, 0)
        m_i = m_new
    empty = l_i == 0.0
    tl.store(O_part + b * sob + h * soh + split * sos + offs_d, acc / tl.where(empty, 1.0, l_i))
    tl.store(LSE + b * slb + h * slh + split, tl.where(empty, float("-inf"), m_i + tl.log(tl.where(empty, 1.0, l_i))))


@triton.jit
def _decode_merge_kernel(O_part, LSE, O, splits, sob, soh, sos, slb, slh, sb, sh,
                         SPLITS: tl.constexpr, D: tl.constexpr):
    b = tl.program_id(0)
    h = tl.program_id(1)
    offs_s = tl.arange(0, SPLITS)
    offs_d = tl.arange(0, D)
    lse = tl.load(LSE + b * slb + h * slh + offs_s, mask=offs_s < splits, other=float("-inf"))
    top = tl.max(lse, 0)
    w = tl.exp(lse - top)
    part = tl.load(O_part + b * sob + h * soh + offs_s[:, None] * sos + offs_d[None, :], mask=(offs_s < splits)[:, None],
                   other=0.0)
    out = tl.sum(w[:, None] * part, 0) / tl.sum(w, 0)
    tl.store(O + b * sb + h * sh + offs_d, out.to(O.dtype.element_ty))


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, lengths: torch.Tensor,
                     splits: int | None = None, block_n: int = 32, sm_scale: float | None = None) -> torch.Tensor:
    """q (B, H, d), k_cache and v_cache (B, KH, Lmax, d), lengths (B,) valid cache entries -> (B, H, d)."""
    batch, heads, d = q.shape
    kv_heads = k_cache.shape[1]
    longest = int(lengths.max())
    if splits is None:  # enough chunks to keep many programs busy, each at least a few tiles long
        splits = max(1, min(64, triton.cdiv(longest, 4 * block_n)))
    chunk = triton.cdiv(max(longest, 1), splits)
    part = torch.empty(batch, heads, splits, d, device=q.device, dtype=torch.float32)
    lse = torch.empty(batch, heads, splits, device=q.device, dtype=torch.float32)
    _decode_split_kernel[(batch, heads, splits)](
        q, k_cache, v_cache, lengths, part, lse, sm_scale or 1.0 / math.sqrt(d), chunk,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), part.stride(0), part.stride(1), part.stride(2),
        lse.stride(0), lse.stride(1), GROUP=heads // kv_heads, BLOCK_N=block_n, D=d)
    out = torch.empty_like(q)
    _decode_merge_kernel[(batch, heads)](part, lse, out, splits, part.stride(0), part.stride(1), part.stride(2),
                                         lse.stride(0), lse.stride(1), out.stride(0), out.stride(1),
                                         SPLITS=triton.next_power_of_2(splits), D=d)
    return out
