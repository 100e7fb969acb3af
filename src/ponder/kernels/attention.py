"""Attention of new tokens over a paged KV cache, with shared-prefix (Hydragen) grouping.

The cache is a pool of fixed-size blocks per layer.  Keys are stored transposed
within a block, (blocks, kv_heads, head_dim, block_size=16), so the scores of one
query against a block's 16 keys are the 16 lanes of one vector.  Values are
(blocks, kv_heads, block_size, head_dim).

A "row" is one (token, query head).  Each row folds the blocks it sees into an
online softmax in position order.  Folding one block into a row is this fixed
sequence of float32 operations (plain multiplies and adds, never FMA, no fastmath),
lane-wise over the 16 positions j of the block:

    s  = (sum over even i of q[i] * kt[i, :]) + (sum over odd i), each sum in order of i
    x  = s * scale where j < cnt, else -inf             (cnt: valid positions)
    m' = max(m, max_j x);  c = exp_neg(m - m');  p = exp_neg(x - m')
    l  = l * c + p                                       (16 lanes, summed at the end)
    acc = acc * c;  acc = acc + p[j] * v[j, :] for j < cnt in order
    m  = m'

and at the end out = acc * (1 / L), L the sum of l's 16 lanes in a fixed tree.
Rows never mix, so a token's bits do not depend on the other tokens of the call,
on the grouping, on the tiling or on the thread count.

The fold is emitted as LLVM IR (`_emit_tile`): up to QT=6 rows share one pass over
a block's keys (each key vector loaded once, the queries as {1to16} broadcast
operands, scores in registers), then up to PT=4 rows share a pass over its values.
`_fold_scalar` is the same fold in scalar Numba: the bit-exact oracle of the IR
(paged_attention(..., scalar=True); see the tests) and the path for head dims other
than 64 and 128.

Hydragen: tokens that share leading KV blocks (the n samples of one prompt, the
tokens of one prefill chunk) form a group.  The group walks its shared blocks
once, block-major, applying each K/V block to all the group's rows of a KV head
(GQA: its query heads times the tokens); then each token walks the rest of its own
blocks.  The jobs (group, KV head) are taken costliest first from an atomic
counter, so the threads stay balanced whatever the mix of sizes.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ponder.kernels.llvm_ir import c64, emit_tiled_loop, ptr


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


# --------------------------------------------------------------------------------------
# LLVM IR: fold one KV block into R rows' online softmax

_i1, _i32, _i64, _f32 = ir.IntType(1), ir.IntType(32), ir.IntType(64), ir.FloatType()
_v16f = ir.VectorType(_f32, 16)
_v16i32 = ir.VectorType(_i32, 16)
_v16i1 = ir.VectorType(_i1, 16)
BS = 16          # block size the kernels are written for: one 16-lane vector of scores
QT = 6           # rows (query heads x tokens) sharing one pass over a block's keys
MAX_WORKERS = 64  # see paged_attention
PT = 4           # rows sharing one pass over a block's values (PT x D/16 accumulators)


def _splat_f(v):
    return ir.Constant(_v16f, [float(v)] * 16)


def _load_v(builder, addr, align=4):
    return builder.load(ptr(builder, addr, _v16f), align=align)


def _store_v(builder, val, addr, align=4):
    builder.store(val, ptr(builder, addr, _v16f), align=align)


def _bcast(builder, addr):
    """Load one float32 and splat it: folds into a {1to16} memory operand."""
    s = builder.load(ptr(builder, addr, _f32), align=4)
    v = builder.insert_element(ir.Constant(_v16f, ir.Undefined), s, ir.Constant(_i32, 0))
    return builder.shuffle_vector(v, ir.Constant(_v16f, ir.Undefined), ir.Constant(_v16i32, [0] * 16))


def _ir_max(builder, a, b):
    return builder.select(builder.fcmp_ordered(">", a, b), a, b)


def _hmax(builder, s):
    """Max over the 16 lanes, in every lane (a butterfly; max is exact in any order)."""
    for w in (8, 4, 2, 1):
        perm = [i ^ w for i in range(16)]
        s = _ir_max(builder, s, builder.shuffle_vector(s, ir.Constant(_v16f, ir.Undefined),
                                                     ir.Constant(_v16i32, perm)))
    return s


def _vexp_neg(builder, x):
    """exp_neg, lane-wise: the same operations in the same order as the scalar exp_neg."""
    floor = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_v16f, [_v16f]), "llvm.floor.v16f32")
    lim = _splat_f(-87.0)
    xc = _ir_max(builder, x, lim)
    n = builder.call(floor, [builder.fadd(builder.fmul(xc, _splat_f(_LOG2E)), _splat_f(0.5))])
    r = builder.fsub(builder.fsub(xc, builder.fmul(n, _splat_f(_LN2_HI))), builder.fmul(n, _splat_f(_LN2_LO)))
    p = _splat_f(np.float32(1.0 / 5040.0))
    for c in (1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0):
        p = builder.fadd(builder.fmul(p, r), _splat_f(np.float32(c)))
    e = builder.add(builder.fptosi(n, _v16i32), ir.Constant(_v16i32, [127] * 16))
    two_n = builder.bitcast(builder.shl(e, ir.Constant(_v16i32, [23] * 16)), _v16f)
    two_n = builder.select(builder.fcmp_ordered("<", x, lim), _splat_f(0.0), two_n)
    return builder.fmul(p, two_n)


def _state_floats(d):
    return d + 3 * BS   # acc (d) | l (16 lanes) | m (16 equal lanes) | p (16)


def _emit_tile(builder, R, d, qs, st, kt, v, cnt, scale):
    """Fold one block into R consecutive rows (q rows at qs, state rows at st)."""
    fn = builder.function
    nc = d // BS
    qrow, srow = 4 * d, 4 * _state_floats(d)
    L, M, P = 4 * d, 4 * (d + BS), 4 * (d + 2 * BS)
    U = 8
    zero = ir.Constant(_v16f, None)

    # scores: s_r = (sum over even i of q_r[i] * kt[i, :]) + (sum over odd i), each in
    # order, 16 lanes.  Two chains per row halve the latency of a pass with few rows.
    pre = builder.block
    loop = fn.append_basic_block("att.qk")
    done = fn.append_basic_block("att.qk_done")
    builder.branch(loop)
    builder.position_at_end(loop)
    i = builder.phi(_i64)
    i.add_incoming(c64(0), pre)
    s = []
    for _ in range(2 * R):
        ph = builder.phi(_v16f)
        ph.add_incoming(zero, pre)
        s.append(ph)
    phis = list(s)
    for u in range(U):
        iu = builder.add(i, c64(u))
        k = _load_v(builder, builder.add(kt, builder.mul(iu, c64(4 * BS))))
        for r in range(R):
            qv = _bcast(builder, builder.add(qs, builder.add(c64(r * qrow), builder.mul(iu, c64(4)))))
            s[2 * r + u % 2] = builder.fadd(s[2 * r + u % 2], builder.fmul(qv, k))
    i1 = builder.add(i, c64(U))
    end = builder.block
    i.add_incoming(i1, end)
    for ph, val in zip(phis, s):
        ph.add_incoming(val, end)
    builder.cbranch(builder.icmp_signed("<", i1, c64(d)), loop, done)
    builder.position_at_end(done)
    s = [builder.fadd(s[2 * r], s[2 * r + 1]) for r in range(R)]

    # online softmax, lane-wise
    lanes = ir.Constant(_v16i32, list(range(16)))
    cv = builder.trunc(cnt, _i32)
    cv = builder.shuffle_vector(builder.insert_element(ir.Constant(_v16i32, ir.Undefined), cv, ir.Constant(_i32, 0)),
                                ir.Constant(_v16i32, ir.Undefined), ir.Constant(_v16i32, [0] * 16))
    valid = builder.icmp_signed("<", lanes, cv)
    sv = builder.shuffle_vector(builder.insert_element(ir.Constant(_v16f, ir.Undefined), scale, ir.Constant(_i32, 0)),
                                ir.Constant(_v16f, ir.Undefined), ir.Constant(_v16i32, [0] * 16))
    ninf = _splat_f(-np.inf)
    corr = []
    for r in range(R):
        base = builder.add(st, c64(r * srow))
        x = builder.select(valid, builder.fmul(s[r], sv), ninf)
        m_old = _load_v(builder, builder.add(base, c64(M)), 64)
        m_new = _ir_max(builder, m_old, _hmax(builder, x))
        c = _vexp_neg(builder, builder.fsub(m_old, m_new))
        p = _vexp_neg(builder, builder.fsub(x, m_new))
        lv = _load_v(builder, builder.add(base, c64(L)), 64)
        _store_v(builder, builder.fadd(builder.fmul(lv, c), p), builder.add(base, c64(L)), 64)
        _store_v(builder, m_new, builder.add(base, c64(M)), 64)
        _store_v(builder, p, builder.add(base, c64(P)), 64)
        corr.append(c)

    # values: acc_r = acc_r * corr_r, then acc_r += p_r[j] * v[j, :] for j < cnt in order
    nsub = -(-R // PT)
    sizes = [R // nsub + (1 if k < R % nsub else 0) for k in range(nsub)]
    r0 = 0
    for S in sizes:
        rows = range(r0, r0 + S)
        r0 += S
        acc0 = {}
        for r in rows:
            base = builder.add(st, c64(r * srow))
            for c in range(nc):
                acc0[r, c] = builder.fmul(_load_v(builder, builder.add(base, c64(64 * c)), 64), corr[r])
        pre = builder.block
        loop = fn.append_basic_block("att.pv")
        done = fn.append_basic_block("att.pv_done")
        builder.branch(loop)
        builder.position_at_end(loop)
        j = builder.phi(_i64)
        j.add_incoming(c64(0), pre)
        acc = {}
        for key, a in acc0.items():
            ph = builder.phi(_v16f)
            ph.add_incoming(a, pre)
            acc[key] = ph
        phis = dict(acc)
        vrow = builder.add(v, builder.mul(j, c64(4 * d)))
        vj = [_load_v(builder, builder.add(vrow, c64(64 * c))) for c in range(nc)]
        for r in rows:
            pj = _bcast(builder, builder.add(st, builder.add(c64(r * srow + P), builder.mul(j, c64(4)))))
            for c in range(nc):
                acc[r, c] = builder.fadd(acc[r, c], builder.fmul(pj, vj[c]))
        j1 = builder.add(j, c64(1))
        end = builder.block
        j.add_incoming(j1, end)
        for key, ph in phis.items():
            ph.add_incoming(acc[key], end)
        builder.cbranch(builder.icmp_signed("<", j1, cnt), loop, done)
        builder.position_at_end(done)
        for r in rows:
            base = builder.add(st, c64(r * srow))
            for c in range(nc):
                _store_v(builder, acc[r, c], builder.add(base, c64(64 * c)), 64)


def _emit_fold(builder, d, qs, st, R, kt, v, cnt, scale):
    """All R rows: tiles of QT rows, then 3, 2, 1 for the rest (each row's operations
    are the same in any tile)."""
    qrow, srow = 4 * d, 4 * _state_floats(d)

    def tile(T, t):
        _emit_tile(builder, T, d, builder.add(qs, builder.mul(t, c64(qrow))),
                   builder.add(st, builder.mul(t, c64(srow))), kt, v, cnt, scale)

    emit_tiled_loop(builder, R, QT, (3, 2, 1), tile, "att")


def _make_fold(d):
    @intrinsic
    def _fold(typingctx, qs, st, R, kt, v, cnt, scale):
        argtys = (qs, st, R, kt, v, cnt)
        if not all(isinstance(a, types.Integer) for a in argtys) or scale != types.float32:
            return None
        sig = types.void(*argtys, scale)

        def codegen(context, builder, signature, args):
            vals = [context.cast(builder, a, t, types.int64) for a, t in zip(args[:6], argtys)]
            _emit_fold(builder, d, *vals, args[6])
            return context.get_dummy_value()

        return sig, codegen

    return _fold


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


_fold64 = _make_fold(64)
_fold128 = _make_fold(128)


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


@njit(cache=True)
def _fold_ir(qa, sa, R, kt, v, cnt, scale, d):
    """The IR kernel for head dim d: integers only, so that a call costs no reference counting."""
    if d == 64:
        _fold64(qa, sa, R, kt, v, cnt, scale)
    else:
        _fold128(qa, sa, R, kt, v, cnt, scale)


@njit(cache=True, inline="always")
def _fold(use_ir, qs, qa, q0, st, sa, s0, R, k_pool, v_pool, blk, kvh, cnt, scale, d, bs):
    """Fold block blk of KV head kvh into rows [r0, r0 + R) (q0 = r0 * d, s0 = r0 * sf)."""
    if use_ir:
        kt = np.int64(k_pool.ctypes.data) + blk * np.int64(k_pool.strides[0]) + kvh * np.int64(k_pool.strides[1])
        v = np.int64(v_pool.ctypes.data) + blk * np.int64(v_pool.strides[0]) + kvh * np.int64(v_pool.strides[1])
        _fold_ir(qa + 4 * q0, sa + 4 * s0, R, kt, v, cnt, scale, d)
    else:
        _fold_scalar(qs, q0, st, s0, R, k_pool[blk, kvh], v_pool[blk, kvh], cnt, scale, d, bs)


@njit(parallel=True, cache=True)
def paged_attention(q, k_pool, v_pool, block_tables, token_row, context_len, scale, out,
                    group_start, group_tokens, group_shared, scalar=False):
    """out[t, h] = softmax(q[t, h] . K[:context_len[t]]) V, K/V read through block_tables[token_row[t]].

    q: (T, heads, d) float32.  context_len[t] is the number of cached positions
    token t attends to (its position + 1: causality by construction).
    Groups: group g holds tokens group_tokens[group_start[g]:group_start[g + 1]],
    whose first group_shared[g] blocks are the same physical blocks, read fully by
    every token of the group.  A token alone is a group with no shared blocks.
    scalar=True runs the scalar Numba fold instead of the IR kernels (same bits).
    """
    heads, d = q.shape[1], q.shape[2]
    kv_heads, bs = k_pool.shape[1], k_pool.shape[3]
    if bs & (bs - 1):
        raise ValueError("block size must be a power of two")
    G = heads // kv_heads
    n_groups = len(group_start) - 1
    n_jobs = n_groups * kv_heads
    use_ir = (not scalar and bs == BS and (d == 64 or d == 128)
              and k_pool.strides[3] == 4 and k_pool.strides[2] == 4 * bs
              and v_pool.strides[3] == 4 and v_pool.strides[2] == 4 * d)
    sf = d + 3 * bs
    # jobs (group, kv head), costliest first, taken dynamically by the threads
    cost = np.empty(n_jobs, np.int64)
    max_rows = 1
    for g in range(n_groups):
        nt = group_start[g + 1] - group_start[g]
        c = group_shared[g] * nt
        for a in range(group_start[g], group_start[g + 1]):
            c += (context_len[group_tokens[a]] + bs - 1) // bs - group_shared[g]
        for kvh in range(kv_heads):
            cost[g * kv_heads + kvh] = -c
        max_rows = max(max_rows, nt * G)
    order = np.argsort(cost)
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
            g, kvh = order[j] // kv_heads, order[j] % kv_heads
            g0, nt = group_start[g], group_start[g + 1] - group_start[g]
            for a in range(nt):
                t = group_tokens[g0 + a]
                for hh in range(G):
                    r = a * G + hh
                    qs[r * d:(r + 1) * d] = q[t, kvh * G + hh]
                    st[r * sf:r * sf + d + bs] = 0.0
                    st[r * sf + d + bs:r * sf + d + 2 * bs] = -np.inf
            first_table = block_tables[token_row[group_tokens[g0]]]
            for b in range(group_shared[g]):  # shared blocks: block-major, each loaded once
                _fold(use_ir, qs, qa, 0, st, sa, 0, nt * G, k_pool, v_pool, np.int64(first_table[b]), kvh,
                      bs, scale, d, bs)
            for a in range(nt):  # each token's own blocks, in position order
                t = group_tokens[g0 + a]
                table = block_tables[token_row[t]]
                ctx = context_len[t]
                nb = (ctx + bs - 1) // bs
                for b in range(group_shared[g], nb):
                    _fold(use_ir, qs, qa, a * G * d, st, sa, a * G * sf, G, k_pool, v_pool, np.int64(table[b]),
                          kvh, min(bs, ctx - b * bs), scale, d, bs)
                for hh in range(G):
                    sb = (a * G + hh) * sf
                    w_ = bs
                    while w_ > 1:  # sum of the 16 lanes of l: a fixed tree
                        w_ //= 2
                        for i in range(w_):
                            st[sb + d + i] = st[sb + d + i] + st[sb + d + i + w_]
                    inv = np.float32(1.0) / st[sb + d]
                    for i in range(d):
                        out[t, kvh * G + hh, i] = st[sb + i] * inv
            j = _fetch_add(counter, 1)


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
