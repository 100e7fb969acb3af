"""LLVM IR of the attention fold: one KV block into R rows' online softmax, for a back end,
a head dim d and a block size bs.

The scores of one query against a block's bs keys are one <bs x float> vector (LLVM
splits it into the back end's registers), the values are processed in chunks of the
back end's float lanes (ATT_VW), so the vector width is a property of the back end,
not of the KV block size.  Up to QT rows share one pass over the keys (QT scaled
from the back end's ATT_QT, given for bs=16, to the block size) and up to PT rows
one pass over the values, in column slices that fit the register file.  Each row
runs the operations of the fold documented in attention.py, in the same order as the
scalar fold there (the bit-exact oracle): tiles and slices change no bit.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir

from ponder.kernels.llvm_ir import c64, emit_exp_neg, emit_max, emit_tiled_loop, ptr

U = 8            # unroll of the key pass over the head dim (d must be a multiple)
ACC_VREGS = {16: 16, 8: 8}   # value accumulators per pass, by float lanes per register

_i32, _i64, _f32 = ir.IntType(32), ir.IntType(64), ir.FloatType()


def supports(be, d: int, bs: int) -> bool:
    """Whether the IR fold is generated for this shape (otherwise the scalar fold runs)."""
    return d % U == 0 and d % be.ATT_VW == 0 and 4 <= bs <= 64 and bs & (bs - 1) == 0


def state_floats(d: int, bs: int) -> int:
    return d + 3 * bs   # acc (d) | l (bs lanes) | m (bs equal lanes) | p (bs)


def _vf(n):
    return ir.VectorType(_f32, n)


def _vi(n):
    return ir.VectorType(_i32, n)


def _splat_f(v, n):
    return ir.Constant(_vf(n), [float(v)] * n)


def _align(offset_bytes):
    """The alignment a vector access at a multiple of offset_bytes from a 64-byte aligned base has."""
    return math.gcd(64, offset_bytes) if offset_bytes else 64


def _load_v(builder, addr, n, align=4):
    return builder.load(ptr(builder, addr, _vf(n)), align=align)


def _store_v(builder, val, addr, align=4):
    builder.store(val, ptr(builder, addr, val.type), align=align)


def _bcast(builder, addr, n):
    """Load one float32 and splat it: folds into a broadcast memory operand."""
    s = builder.load(ptr(builder, addr, _f32), align=4)
    v = builder.insert_element(ir.Constant(_vf(n), ir.Undefined), s, ir.Constant(_i32, 0))
    return builder.shuffle_vector(v, ir.Constant(_vf(n), ir.Undefined), ir.Constant(_vi(n), [0] * n))


def _hmax(builder, s, n):
    """Max over the n lanes, in every lane (a butterfly; max is exact in any order)."""
    w = n // 2
    while w >= 1:
        perm = [i ^ w for i in range(n)]
        s = emit_max(builder, s, builder.shuffle_vector(s, ir.Constant(_vf(n), ir.Undefined),
                                                     ir.Constant(_vi(n), perm)))
        w //= 2
    return s


def _emit_tile(builder, be, R, d, bs, qs, st, kt, v, cnt, scale):
    """Fold one block into R consecutive rows (q rows at qs, state rows at st)."""
    fn = builder.function
    vw = be.ATT_VW
    nc = d // vw
    qrow, srow = 4 * d, 4 * state_floats(d, bs)
    L, M, P = 4 * d, 4 * (d + bs), 4 * (d + 2 * bs)
    al = _align(srow)
    zero = ir.Constant(_vf(bs), None)

    # scores: s_r = (sum over even i of q_r[i] * kt[i, :]) + (sum over odd i), each in
    # order, bs lanes.  Two chains per row halve the latency of a pass with few rows.
    pre = builder.block
    loop = fn.append_basic_block("att.qk")
    done = fn.append_basic_block("att.qk_done")
    builder.branch(loop)
    builder.position_at_end(loop)
    i = builder.phi(_i64)
    i.add_incoming(c64(0), pre)
    s = []
    for _ in range(2 * R):
        ph = builder.phi(_vf(bs))
        ph.add_incoming(zero, pre)
        s.append(ph)
    phis = list(s)
    for u in range(U):
        iu = builder.add(i, c64(u))
        k = _load_v(builder, builder.add(kt, builder.mul(iu, c64(4 * bs))), bs)
        for r in range(R):
            qv = _bcast(builder, builder.add(qs, builder.add(c64(r * qrow), builder.mul(iu, c64(4)))), bs)
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
    lanes = ir.Constant(_vi(bs), list(range(bs)))
    cv = builder.trunc(cnt, _i32)
    cv = builder.shuffle_vector(builder.insert_element(ir.Constant(_vi(bs), ir.Undefined), cv, ir.Constant(_i32, 0)),
                                ir.Constant(_vi(bs), ir.Undefined), ir.Constant(_vi(bs), [0] * bs))
    valid = builder.icmp_signed("<", lanes, cv)
    sv = builder.shuffle_vector(builder.insert_element(ir.Constant(_vf(bs), ir.Undefined), scale, ir.Constant(_i32, 0)),
                                ir.Constant(_vf(bs), ir.Undefined), ir.Constant(_vi(bs), [0] * bs))
    ninf = _splat_f(-np.inf, bs)
    corr = []
    for r in range(R):
        base = builder.add(st, c64(r * srow))
        x = builder.select(valid, builder.fmul(s[r], sv), ninf)
        m_old = _load_v(builder, builder.add(base, c64(M)), bs, min(al, _align(M)))
        m_new = emit_max(builder, m_old, _hmax(builder, x, bs))
        c = emit_exp_neg(builder, builder.fsub(m_old, m_new))
        p = emit_exp_neg(builder, builder.fsub(x, m_new))
        lv = _load_v(builder, builder.add(base, c64(L)), bs, min(al, _align(L)))
        _store_v(builder, builder.fadd(builder.fmul(lv, c), p), builder.add(base, c64(L)), min(al, _align(L)))
        _store_v(builder, m_new, builder.add(base, c64(M)), min(al, _align(M)))
        _store_v(builder, p, builder.add(base, c64(P)), min(al, _align(P)))
        corr.append(c)

    # values: acc_r = acc_r * corr_r, then acc_r += p_r[j] * v[j, :] for j < cnt in order;
    # in passes of at most PT rows times as many column chunks as the registers hold
    nsub = -(-R // be.ATT_PT)
    sizes = [R // nsub + (1 if k < R % nsub else 0) for k in range(nsub)]
    r0 = 0
    for S in sizes:
        rows = range(r0, r0 + S)
        r0 += S
        per = max(1, ACC_VREGS[vw] // S)
        for c0 in range(0, nc, per):
            cols = range(c0, min(nc, c0 + per))
            _emit_values(builder, rows, cols, st, srow, al, v, cnt, d, vw, P, corr)


def _emit_values(builder, rows, cols, st, srow, al, v, cnt, d, vw, P, corr):
    fn = builder.function
    cb = 4 * vw
    acc0 = {}
    for r in rows:
        base = builder.add(st, c64(r * srow))
        cr = corr[r] if corr[r].type.count == vw else None
        for c in cols:
            if cr is None:  # the row's correction is the same in every lane: take vw of them
                cr = builder.shuffle_vector(corr[r], ir.Constant(corr[r].type, ir.Undefined),
                                            ir.Constant(_vi(vw), [0] * vw))
            acc0[r, c] = builder.fmul(_load_v(builder, builder.add(base, c64(cb * c)), vw, min(al, _align(cb * c))),
                                      cr)
    pre = builder.block
    loop = fn.append_basic_block("att.pv")
    done = fn.append_basic_block("att.pv_done")
    builder.branch(loop)
    builder.position_at_end(loop)
    j = builder.phi(_i64)
    j.add_incoming(c64(0), pre)
    acc = {}
    for key, a in acc0.items():
        ph = builder.phi(_vf(vw))
        ph.add_incoming(a, pre)
        acc[key] = ph
    phis = dict(acc)
    vrow = builder.add(v, builder.mul(j, c64(4 * d)))
    vj = {c: _load_v(builder, builder.add(vrow, c64(cb * c)), vw) for c in cols}
    for r in rows:
        pj = _bcast(builder, builder.add(st, builder.add(c64(r * srow + P), builder.mul(j, c64(4)))), vw)
        for c in cols:
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
        for c in cols:
            _store_v(builder, acc[r, c], builder.add(base, c64(cb * c)), min(al, _align(cb * c)))


def emit_fold(builder, be, d, bs, qs, st, R, kt, v, cnt, scale):
    """All R rows: tiles of QT rows, then smaller ones for the rest (each row's operations
    are the same in any tile)."""
    qrow, srow = 4 * d, 4 * state_floats(d, bs)
    qt = max(1, be.ATT_QT * 16 // bs)

    def tile(T, t):
        _emit_tile(builder, be, T, d, bs, builder.add(qs, builder.mul(t, c64(qrow))),
                   builder.add(st, builder.mul(t, c64(srow))), kt, v, cnt, scale)

    emit_tiled_loop(builder, R, qt, tuple(T for T in (3, 2, 1) if T < qt), tile, "att")
