"""Attention of new tokens over a paged KV cache, with shared-prefix (Hydragen) grouping.

The cache is a pool of fixed-size blocks per layer.  Keys are stored transposed
within a block, (blocks, kv_heads, head_dim, block_size), so the scores of one
query against a block's bs keys are the bs lanes of one vector.  Values are
(blocks, kv_heads, block_size, head_dim).

A "row" is one (token, query head).  Each row folds the blocks it sees into an
online softmax in position order.  Folding one block into a row is this fixed
sequence of float32 operations (plain multiplies and adds, never FMA, no fastmath),
lane-wise over the bs positions j of the block:

    s  = (sum over even i of q[i] * kt[i, :]) + (sum over odd i), each sum in order of i
    x  = s * scale where j < cnt, else -inf             (cnt: valid positions)
    m' = max(m, max_j x);  c = exp_neg(m - m');  p = exp_neg(x - m')
    l  = l * c + p                                       (bs lanes, summed at the end)
    acc = acc * c;  acc = acc + p[j] * v[j, :] for j < cnt in order
    m  = m'

and at the end out = acc * (1 / L), L the sum of l's bs lanes in a fixed tree.
Rows never mix, so a token's bits do not depend on the other tokens of the call,
on the grouping, on the tiling, on the thread count or on the instruction set.

The fold is emitted as LLVM IR per back end (tile sizes, float lanes) and shape
(head dim, block size) by attention_emit, for every head dim that is a multiple of 8
and of the back end's lanes and every power-of-two block size from 4 to 64;
`_fold_scalar` is the same fold in scalar Numba: the bit-exact oracle of the IR
(paged_attention(..., scalar=True); see the tests), PONDER_ISA=scalar's path, and
the path for other shapes (uses_ir() tells which runs).

Hydragen: tokens that share leading KV blocks (the n samples of one prompt, the
tokens of one prefill chunk) form a group.  The group walks its shared blocks
once, block-major, applying each K/V block to all the group's rows of a KV head
(GQA: its query heads times the tokens); then each token walks the rest of its own
blocks.  The jobs (group, KV head) are taken costliest first from an atomic
counter, so the threads stay balanced whatever the mix of sizes; a step with few
such jobs (decoding one or two sequences) makes a job of each query head instead.
"""

from __future__ import annotations

import hashlib
import pathlib
import types as pytypes

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from ponder.kernels import attention_emit, numba_setup
from ponder.kernels import isa as isa_mod
from ponder.kernels.attention_groups import SPLIT_BELOW, prefix_groups, singleton_groups  # noqa: F401
from ponder.kernels.llvm_ir import LN2_HI as _LN2_HI
from ponder.kernels.llvm_ir import LN2_LO as _LN2_LO
from ponder.kernels.llvm_ir import LOG2E as _LOG2E

numba_setup.prepare()


@njit(cache=True)
def write_kv(k_pool, v_pool, k, v, slot_token, slot_block, slot_offset):
    """Store the new tokens' keys and values: slot s receives token slot_token[s]'s, at
    (slot_block[s], slot_offset[s]).  A plain step has one slot per token; a draft tree's step
    writes a node's K/V into the private tail of every tree path that passes through it.
    One thread: at decode a parallel region costs more than the copy, and a 512-token
    prefill chunk copies 0.4 MB per layer."""
    n = len(slot_token)
    heads, d = k.shape[1], k.shape[2]
    for s in range(n):
        t, b, o = slot_token[s], slot_block[s], slot_offset[s]
        for h in range(heads):
            for i in range(d):
                k_pool[b, h, i, o] = k[t, h, i]
                v_pool[b, h, o, i] = v[t, h, i]


MAX_WORKERS = 64  # see paged_attention
_HERE = pathlib.Path(__file__).parent


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


@intrinsic
def _fetch_add(typingctx, arr, val):
    """Atomically arr[0] += val (arr an int64 array), returning the old value.  Taking
    the array, not its address, keeps it alive (numba frees an array after its last use)."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64 and isinstance(val, types.Integer)):
        return None
    sig = types.int64(arr, val)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        x = context.cast(builder, args[1], signature.args[1], types.int64)
        return builder.atomic_rmw("add", data, x, "monotonic")

    return sig, codegen


@njit(cache=True, inline="always")
def _vmax(a, b):
    return a if a > b else b  # noqa: FURB136 -- exactly the IR's select, the same on ties and NaN


@njit(cache=True)
def _fold_scalar(qs, q0, st, s0, R, kt, v, cnt, scale, d, bs):
    """The fold of _emit_tile written in scalar Numba: the same operations in the same
    order for every row (the bit-exact oracle of the IR, and the path for other shapes)."""
    sf = d + 3 * bs
    s = np.empty(bs, np.float32)
    s2 = np.empty(bs, np.float32)
    for r in range(R):
        qb, sb = q0 + r * d, s0 + r * sf
        for j in range(bs):
            s[j] = 0.0
            s2[j] = 0.0
        for i in range(0, d, 2):
            qi, qi1 = qs[qb + i], qs[qb + i + 1]
            for j in range(bs):
                s[j] = s[j] + qi * kt[i, j]
                s2[j] = s2[j] + qi1 * kt[i + 1, j]
        for j in range(bs):
            s[j] = s[j] + s2[j]
        bmax = np.float32(-np.inf)
        for j in range(bs):
            s[j] = s[j] * scale if j < cnt else np.float32(-np.inf)
            bmax = _vmax(bmax, s[j])
        m_old = st[sb + d + bs]
        m_new = _vmax(m_old, bmax)
        corr = exp_neg(m_old - m_new)
        for j in range(bs):
            p = exp_neg(s[j] - m_new)
            st[sb + d + j] = st[sb + d + j] * corr + p
            st[sb + d + bs + j] = m_new
            st[sb + d + 2 * bs + j] = p
        for i in range(d):
            a = st[sb + i] * corr
            for j in range(cnt):
                a = a + st[sb + d + 2 * bs + j] * v[j, i]
            st[sb + i] = a


@njit(inline="always")
def _kv_addr(pool, blk, kvh):
    return np.int64(pool.ctypes.data) + blk * np.int64(pool.strides[0]) + kvh * np.int64(pool.strides[1])


def _make_fold(be, d, bs):
    """attention_emit's fold as a Numba intrinsic fold(qs, st, R, kt, v, cnt, scale): addresses
    as integers, scale float32."""
    @intrinsic
    def _fold(typingctx, qs, st, R, kt, v, cnt, scale):
        argtys = (qs, st, R, kt, v, cnt)
        if not all(isinstance(a, types.Integer) for a in argtys) or scale != types.float32:
            return None
        sig = types.void(*argtys, scale)

        def codegen(context, builder, signature, args):
            vals = [context.cast(builder, a, t, types.int64) for a, t in zip(args[:6], argtys)]
            attention_emit.emit_fold(builder, be, d, bs, *vals, args[6])
            return context.get_dummy_value()

        return sig, codegen

    return _fold


def _fold_ir_template(qa, sa, R, kt, v, cnt, scale):
    """The IR fold: integers only, so that a call costs no reference counting."""
    _FOLD(qa, sa, R, kt, v, cnt, scale)  # noqa: F821


@njit(cache=True)
def _ascending(cost):
    """Indices that sort cost ascending (a Shell sort: np.argsort cost seconds of compilation)."""
    n = len(cost)
    order = np.empty(n, np.int64)
    for i in range(n):
        order[i] = i
    gap = n // 2
    while gap > 0:
        for i in range(gap, n):
            v = order[i]
            j = i
            while j >= gap and cost[order[j - gap]] > cost[v]:
                order[j] = order[j - gap]
                j -= gap
            order[j] = v
        gap //= 2
    return order


# _USE_IR (a compile-time constant: Numba compiles only the branch it selects) and
# _FOLD_IR are globals of each generated copy (see _driver).
def _paged_attention_template(q, k_pool, v_pool, block_tables, token_row, context_len, scale, out,
                              group_start, group_tokens, group_shared):
    heads, d = q.shape[1], q.shape[2]
    kv_heads, bs = k_pool.shape[1], k_pool.shape[3]
    G = heads // kv_heads
    n_groups = len(group_start) - 1
    # A job is (group, KV head, part): a part is H of the G query heads that share the KV head.
    # Big steps give each job all G (a K/V block is loaded once for G heads); a step of one or
    # two tokens has too few (group, KV head) jobs to share between threads evenly (3 for 2
    # threads on SmolLM2), so each query head is its own job there.  A row's fold is the same
    # either way.
    parts = G if n_groups * kv_heads < SPLIT_BELOW else 1
    H = G // parts
    per_group = kv_heads * parts
    n_jobs = n_groups * per_group
    sf = d + 3 * bs
    # jobs, costliest first, taken dynamically by the threads
    cost = np.empty(n_jobs, np.int64)
    max_rows = 1
    for g in range(n_groups):
        nt = group_start[g + 1] - group_start[g]
        c = group_shared[g] * nt
        for a in range(group_start[g], group_start[g + 1]):
            c += (context_len[group_tokens[a]] + bs - 1) // bs - group_shared[g]
        for jj in range(per_group):
            cost[g * per_group + jj] = -c
        max_rows = max(max_rows, nt * H)
    order = _ascending(cost)
    counter = np.zeros(8, np.int64)  # the job queue's head
    # More workers than threads is harmless (a worker that finds the queue empty does
    # nothing); asking numba for the thread count would make this uncacheable.  The
    # scratch is allocated here: numba would hoist an np.empty out of the prange loop,
    # sharing it between the threads.
    n_workers = min(n_jobs, MAX_WORKERS)
    per = (max_rows * (d + sf) + 15) // 16 * 16
    scratch = np.empty(n_workers * per + 16, np.float32)
    base = (-(np.int64(scratch.ctypes.data) >> 2)) & 15  # 64-byte aligned rows
    for w in prange(n_workers):
        j = _fetch_add(counter, 1)
        if j >= n_jobs:
            continue
        off = base + w * per
        qs = scratch[off:off + max_rows * d]
        st = scratch[off + max_rows * d:off + max_rows * (d + sf)]
        qa, sa = np.int64(qs.ctypes.data), np.int64(st.ctypes.data)
        while j < n_jobs:
            g, kvh, h0 = order[j] // per_group, order[j] % per_group // parts, order[j] % parts * H
            g0, nt = group_start[g], group_start[g + 1] - group_start[g]
            for a in range(nt):
                t = group_tokens[g0 + a]
                for hh in range(H):
                    r = a * H + hh
                    qs[r * d:(r + 1) * d] = q[t, kvh * G + h0 + hh]
                    st[r * sf:r * sf + d + bs] = 0.0
                    st[r * sf + d + bs:r * sf + d + 2 * bs] = -np.inf
            first_table = block_tables[token_row[group_tokens[g0]]]
            for b in range(group_shared[g]):  # shared blocks: block-major, each loaded once
                blk = np.int64(first_table[b])
                if _USE_IR:  # noqa: F821
                    _FOLD_IR(qa, sa, nt * H, _kv_addr(k_pool, blk, kvh), _kv_addr(v_pool, blk, kvh),  # noqa: F821
                             bs, scale)
                else:
                    _fold_scalar(qs, 0, st, 0, nt * H, k_pool[blk, kvh], v_pool[blk, kvh], bs, scale, d, bs)
            for a in range(nt):  # each token's own blocks, in position order
                t = group_tokens[g0 + a]
                table = block_tables[token_row[t]]
                ctx = context_len[t]
                nb = (ctx + bs - 1) // bs
                q0, s0 = a * H * d, a * H * sf
                for b in range(group_shared[g], nb):
                    blk = np.int64(table[b])
                    cnt = min(bs, ctx - b * bs)
                    if _USE_IR:  # noqa: F821
                        _FOLD_IR(qa + 4 * q0, sa + 4 * s0, H, _kv_addr(k_pool, blk, kvh),  # noqa: F821
                                 _kv_addr(v_pool, blk, kvh), cnt, scale)
                    else:
                        _fold_scalar(qs, q0, st, s0, H, k_pool[blk, kvh], v_pool[blk, kvh], cnt, scale, d, bs)
                for hh in range(H):
                    sb = (a * H + hh) * sf
                    w_ = bs
                    while w_ > 1:  # sum of the bs lanes of l: a fixed tree
                        w_ //= 2
                        for i in range(w_):
                            st[sb + d + i] = st[sb + d + i] + st[sb + d + i + w_]
                    inv = np.float32(1.0) / st[sb + d]
                    for i in range(d):
                        out[t, kvh * G + h0 + hh, i] = st[sb + i] * inv
            j = _fetch_add(counter, 1)


def _instantiate(template, name, parallel, **consts):
    g = dict(globals())
    g.update(consts)
    f = pytypes.FunctionType(template.__code__, g, name)
    f.__qualname__ = name
    return njit(parallel=parallel, cache=True)(f)


_SOURCES = ("attention.py", "attention_emit.py", "llvm_ir.py")
_DRIVERS: dict = {}
_RESOLVED: dict = {}   # (isa argument, d, bs, scalar) -> driver


def _driver(be, d: int, bs: int):
    """The compiled attention for a back end's attention tiles and a shape (be None: the scalar
    fold), made on first use.  Back ends with the same tiles share it; its name carries them and
    a hash of the sources, so Numba's on-disk cache never returns one generated for other tiles
    or older code."""
    tiles = (be.ATT_QT, be.ATT_PT, be.ATT_VW) if be is not None else None
    key = (tiles, d, bs) if be is not None else None
    if key not in _DRIVERS:
        h = hashlib.sha256(b"".join((_HERE / s).read_bytes() for s in _SOURCES)).hexdigest()[:10]
        if be is not None:
            tag = f"qt{tiles[0]}_pt{tiles[1]}_vw{tiles[2]}_d{d}_bs{bs}_{h}"
            fold = _instantiate(_fold_ir_template, f"attention_fold_{tag}", False,
                                _FOLD=_make_fold(be, d, bs))
            _DRIVERS[key] = _instantiate(_paged_attention_template, f"paged_attention_{tag}", True,
                                         _USE_IR=True, _FOLD_IR=fold)
        else:
            _DRIVERS[key] = _instantiate(_paged_attention_template, f"paged_attention_scalar_{h}", True,
                                         _USE_IR=False, _FOLD_IR=None)
    return _DRIVERS[key]


def uses_ir(d: int, bs: int, isa: str | None = None) -> bool:
    """Whether attention for head dim d and KV block size bs runs the generated IR fold
    on the instruction set (default: this process's); otherwise the scalar fold."""
    be = isa_mod.backend(isa or isa_mod.current())
    return be is not None and attention_emit.supports(be, d, bs)


def paged_attention(q, k_pool, v_pool, block_tables, token_row, context_len, scale, out,
                    group_start, group_tokens, group_shared, scalar=False, isa=None):
    """out[t, h] = softmax(q[t, h] . K[:context_len[t]]) V, K/V read through block_tables[token_row[t]].

    q: (T, heads, d) float32.  context_len[t] is the number of cached positions
    token t attends to (its position + 1: causality by construction).
    Groups: group g holds tokens group_tokens[group_start[g]:group_start[g + 1]],
    whose first group_shared[g] blocks are the same physical blocks, read fully by
    every token of the group.  A token alone is a group with no shared blocks.
    scalar=True runs the scalar fold instead of the IR (same bits); isa picks the back
    end (default: this process's).
    """
    d, bs = q.shape[2], k_pool.shape[3]
    key = (isa, d, bs, scalar)
    drv = _RESOLVED.get(key)
    if drv is None:  # once per shape: this runs once per layer and step
        if bs & (bs - 1):
            raise ValueError("block size must be a power of two")
        be = None if scalar or not uses_ir(d, bs, isa) else isa_mod.backend(isa or isa_mod.current())
        drv = _RESOLVED[key] = _driver(be, d, bs)
    if not (k_pool.strides[3] == 4 and k_pool.strides[2] == 4 * bs and v_pool.strides[3] == 4
            and v_pool.strides[2] == 4 * d):   # the IR reads whole rows of a block
        drv = _driver(None, d, bs)
    drv(q, k_pool, v_pool, block_tables, token_row, context_len, scale, out, group_start, group_tokens, group_shared)
