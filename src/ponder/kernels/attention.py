"""Attention of new tokens over a paged KV cache, with shared-prefix (Hydragen) grouping.

The cache is a pool of fixed-size blocks per layer.  Keys are stored transposed
within a block, (blocks, kv_heads, head_dim, block_size), so the scores of one
query against a block's 16 keys are 16 independent lanes each summed over the
head dimension in index order: vectorized, with a fixed reduction order.
Values are (blocks, kv_heads, block_size, head_dim).

Each (token, query head) folds the blocks it sees into an online softmax in
position order: the block's scores, a rescale of the running max, sum and
accumulator, then the block's values.  `_fold_block` is the only code that does
this, whichever loop calls it, so a token's output is the same bits whatever
batch, group or chunk it runs in.

Hydragen: tokens that share leading KV blocks (the n samples of one prompt, the
tokens of one prefill chunk) form a group.  The group walks its shared blocks
once, block-major, applying each K/V block (kept hot in L1) to every query of
the group and to the query heads that share a KV head (GQA); then each token
walks the rest of its own blocks.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic


@njit(parallel=True, cache=True)
def write_kv(k_pool, v_pool, k, v, slot_block, slot_offset):
    """Store the new tokens' keys and values: token t goes to (slot_block[t], slot_offset[t])."""
    n, heads, d = k.shape
    for t in prange(n):
        b, o = slot_block[t], slot_offset[t]
        for h in range(heads):
            for i in range(d):
                k_pool[b, h, i, o] = k[t, h, i]
                v_pool[b, h, o, i] = v[t, h, i]


_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)  # ln 2 split in two so that n * ln2 subtracts exactly
_LN2_LO = np.float32(-2.12194440e-4)


@intrinsic
def _bits_to_f32(typingctx, bits):
    """Reinterpret an int32 as a float32 (an LLVM bitcast: no memory, vectorizable)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@njit(cache=True, inline="always")
def exp_neg(x):
    """exp(x) for x <= 0 in float32: exact range reduction and a degree-7 polynomial.

    Our own, rather than libm's, because it vectorizes (libm's expf call does not)
    and because its bits are the same on every machine and C library.  Within 2
    ulp of the true value; 0 below -87.
    """
    xc = max(x, np.float32(-87.0))
    n = np.floor(xc * _LOG2E + np.float32(0.5))
    r = (xc - n * _LN2_HI) - n * _LN2_LO
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    scale = np.int32(n) + np.int32(127)
    two_n = np.float32(0.0) if x < np.float32(-87.0) else _bits_to_f32(scale << 23)
    return p * two_n


@njit(cache=True, inline="always")
def _fold_block(q, kt, v, cnt, scale, scores, state_m, state_l, acc):
    """Fold one KV block (cnt valid positions) into one query's online softmax.

    q: (d,); kt: (d, bs) keys transposed; v: (bs, d).  state_m / state_l are
    1-element arrays (running max and sum); acc: (d,) running weighted values.
    """
    d, bs = kt.shape
    for j in range(bs):
        scores[j] = 0.0
    for i in range(d):
        qi = q[i]
        for j in range(bs):  # 16 independent lanes, each summed over i in order
            scores[j] += qi * kt[i, j]
    block_max = -np.inf
    for j in range(cnt):
        scores[j] *= scale
        block_max = max(block_max, scores[j])
    m_old = state_m[0]
    m_new = max(m_old, block_max)
    corr = exp_neg(m_old - m_new)
    total = state_l[0] * corr
    for i in range(d):
        acc[i] *= corr
    for j in range(cnt):
        scores[j] = exp_neg(scores[j] - m_new)
    for j in range(cnt):
        p = scores[j]
        total += p
        for i in range(d):
            acc[i] += p * v[j, i]
    state_m[0] = m_new
    state_l[0] = total


@njit(parallel=True, cache=True)
def paged_attention(q, k_pool, v_pool, block_tables, token_row, context_len, scale, out,
                    group_start, group_tokens, group_shared):
    """out[t, h] = softmax(q[t, h] . K[:context_len[t]]) V, K/V read through block_tables[token_row[t]].

    q: (T, heads, d) float32.  context_len[t] is the number of cached positions
    token t attends to (its position + 1: causality by construction).
    Groups: group g holds tokens group_tokens[group_start[g]:group_start[g + 1]],
    whose first group_shared[g] blocks are the same physical blocks, read fully by
    every token of the group.  A token alone is a group with no shared blocks.
    """
    n, heads, d = q.shape
    kv_heads, bs = k_pool.shape[1], k_pool.shape[3]
    group = heads // kv_heads
    n_groups = len(group_start) - 1
    for job in prange(n_groups * kv_heads):
        g, kvh = job // kv_heads, job % kv_heads
        members = group_tokens[group_start[g]:group_start[g + 1]]
        nt = len(members)
        m = np.full((nt, group, 1), -np.inf, np.float32)
        lsum = np.zeros((nt, group, 1), np.float32)
        acc = np.zeros((nt, group, d), np.float32)
        scores = np.empty(bs, np.float32)
        first_table = block_tables[token_row[members[0]]]
        for b in range(group_shared[g]):  # shared blocks: block-major, each loaded once
            blk = first_table[b]
            kt, v = k_pool[blk, kvh], v_pool[blk, kvh]
            for a in range(nt):
                t = members[a]
                for hh in range(group):
                    _fold_block(q[t, kvh * group + hh], kt, v, bs, scale, scores, m[a, hh], lsum[a, hh], acc[a, hh])
        for a in range(nt):  # each token's own blocks, in position order
            t = members[a]
            table = block_tables[token_row[t]]
            ctx = context_len[t]
            for b in range(group_shared[g], (ctx + bs - 1) // bs):
                blk = table[b]
                cnt = min(bs, ctx - b * bs)
                kt, v = k_pool[blk, kvh], v_pool[blk, kvh]
                for hh in range(group):
                    _fold_block(q[t, kvh * group + hh], kt, v, cnt, scale, scores, m[a, hh], lsum[a, hh], acc[a, hh])
            for hh in range(group):
                inv = np.float32(1.0) / lsum[a, hh, 0]
                for i in range(d):
                    out[t, kvh * group + hh, i] = acc[a, hh, i] * inv


def singleton_groups(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every token its own group: the plain paged attention."""
    return np.arange(n + 1, dtype=np.int64), np.arange(n, dtype=np.int64), np.zeros(n, np.int64)


def prefix_groups(block_tables: np.ndarray, token_row: np.ndarray, context_len: np.ndarray, block_size: int,
                  min_shared: int = 1, max_group: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group tokens whose sequences start with the same physical KV blocks.

    Tokens are grouped by their table's first block; a group's shared count is
    the length of the common run of identical block ids that every member reads
    in full.  Groups sharing fewer than `min_shared` blocks are split into
    singletons, and large groups into pieces of `max_group` tokens so that the
    threads get balanced work (a shared block is then read once per piece, from
    cache).
    """
    n = len(token_row)
    full = context_len // block_size  # blocks each token reads in full
    first = block_tables[token_row, 0]
    starts, members, shared = [0], [], []
    for key in np.unique(first):
        idx = np.nonzero(first == key)[0]
        tables = block_tables[token_row[idx]]
        limit = int(full[idx].min())
        same = (tables[:, :limit] == tables[0, :limit]).all(axis=0)
        common = int(np.argmin(same)) if not same.all() else limit
        if len(idx) > 1 and common >= min_shared:
            for piece in range(0, len(idx), max_group):
                members.extend(idx[piece:piece + max_group].tolist())
                starts.append(len(members))
                shared.append(common)
        else:
            for t in idx.tolist():
                members.append(t)
                starts.append(len(members))
                shared.append(0)
    assert len(members) == n
    return np.array(starts, np.int64), np.array(members, np.int64), np.array(shared, np.int64)
