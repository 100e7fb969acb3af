"""Attention of new tokens over a paged KV cache.

The cache is a pool of fixed-size blocks per layer, shape (blocks, kv_heads,
block_size, head_dim); a sequence's block table lists its blocks in position
order.  Each (token, head) pair is computed by one thread as an online softmax
over the blocks in position order: scores of one block, then a rescale of the
running max, sum and accumulator.  The blocks a token sees and the order they are
folded in depend only on its position, so decode, chunked prefill and batched
steps all give the same bits.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def write_kv(k_pool, v_pool, k, v, slot_block, slot_offset):
    """Store the new tokens' keys and values: token t goes to (slot_block[t], slot_offset[t])."""
    n, heads, d = k.shape
    for t in prange(n):
        b, o = slot_block[t], slot_offset[t]
        for h in range(heads):
            for i in range(d):
                k_pool[b, h, o, i] = k[t, h, i]
                v_pool[b, h, o, i] = v[t, h, i]


@njit(parallel=True, cache=True)
def paged_attention(q, k_pool, v_pool, block_tables, token_row, context_len, scale, out):
    """out[t, h] = softmax(q[t, h] . K[:context_len[t]]) V, K/V read through block_tables[token_row[t]].

    q: (T, heads, d) float32; context_len[t] is how many cached positions token t
    attends to (its own position + 1, so causality is by construction).
    """
    n, heads, d = q.shape
    kv_heads, bs = k_pool.shape[1], k_pool.shape[2]
    group = heads // kv_heads
    for job in prange(n * heads):
        t, h = job // heads, job % heads
        kvh = h // group
        table = block_tables[token_row[t]]
        ctx = context_len[t]
        scores = np.empty(bs, np.float32)
        acc = np.zeros(d, np.float32)
        m = -np.inf
        total = np.float32(0.0)
        for b in range((ctx + bs - 1) // bs):
            blk = table[b]
            cnt = min(bs, ctx - b * bs)
            block_max = -np.inf
            for j in range(cnt):
                s = np.float32(0.0)
                for i in range(d):
                    s += q[t, h, i] * k_pool[blk, kvh, j, i]
                s *= scale
                scores[j] = s
                block_max = max(block_max, s)
            m_new = max(m, block_max)
            corr = np.float32(np.exp(m - m_new))
            total *= corr
            for i in range(d):
                acc[i] *= corr
            for j in range(cnt):
                p = np.float32(np.exp(scores[j] - m_new))
                total += p
                for i in range(d):
                    acc[i] += p * v_pool[blk, kvh, j, i]
            m = m_new
        inv = np.float32(1.0) / total
        for i in range(d):
            out[t, h, i] = acc[i] * inv
