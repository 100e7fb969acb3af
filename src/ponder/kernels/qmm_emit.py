"""The generic emitter of the integer-path product kernels: LLVM IR for one row group x all tokens.

A back end (kernels/isa/<name>.py) supplies the lane count L, the tiles, and the
integer dot product of one step (weight_steps / dot_init / dot_step / dot_finish);
this module emits everything else the same way for every back end: the K-block
loop, the prefetch, the broadcasts of the activations, and the float chain.

Exactness contract
------------------
For a given weight matrix, token and activation mode, the float32 output is
bit-identical whatever the batch size M, the token tiling, the number of threads
and the back end (any instruction set, or the scalar oracle in qmm_oracle.py):

* the L lanes of a vector are L *output rows*, so there is no horizontal
  reduction; every row is one sequential chain over the K blocks;
* the integer dot product of a block is exact (every back end computes the same
  int32, in any order, with no saturation: see the back ends' bounds);
* converting it to float32 is a deterministic round-to-nearest of that int32.  It
  is exact (|isum| < 2**24) except for Q8_0 weights in q16 mode, where |isum|
  reaches 32*128*16383 ~ 6.7e7: the conversion rounds, but the same integer always
  rounds to the same float;
* the float part is a fixed sequence of plain fmul/fadd (no fastmath, no
  contraction to FMA), the same in the vector IR and in the scalar oracle;
* a token's chain never depends on the other tokens of its tile.

Per K block k of a row (d_w, m_w: weight scale and min; d_x, s_x: activation scale
and integer sum of the block; dxs = d_x * float32(s_x)):

    Q4_1:  acc = acc + (float32(sum(q*qx)) * (d_w*d_x) + m_w*dxs)
    Q4_0:  acc = acc +  float32(sum(q*qx) - 8*s_x) * (d_w*d_x)
    Q8_0:  acc = acc +  float32(sum(u*qx) - 128*s_x) * (d_w*d_x),  u = q + 128

In q16 mode the block sum is (sum over qh << 7) + sum over ql.
"""

from __future__ import annotations

from llvmlite import ir

from ponder.kernels.llvm_ir import c64, emit_tiled_loop, ptr
from ponder.kernels.qmm_layout import FMT_NAMES, FMT_Q4_0, FMT_Q4_1, FMT_Q8_0, QK, quant_bytes, record_bytes

PF_DIST = 2560   # software prefetch distance in bytes: +5-10% when the weights are cold
# zero point (8 for Q4_0, 128 for Q8_0's u = q + 128) removed as zp * s_x: a shift
_ZP_SHIFT = {FMT_Q4_0: 3, FMT_Q8_0: 7}

_i8, _i32, _i64, _f32 = ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType()


def _vi32(L):
    return ir.VectorType(_i32, L)


def _splat_i32(v, L):
    return ir.Constant(_vi32(L), [v] * L)


def _bcast(builder, addr, ty, L, align):
    # A scalar load + splat folds into a broadcast memory operand ({1toL} on AVX-512,
    # vpbroadcastd on AVX2), so the activations take no registers.
    s = builder.load(ptr(builder, addr, ty), align=align)
    vt = ir.VectorType(ty, L)
    v = builder.insert_element(ir.Constant(vt, ir.Undefined), s, ir.Constant(_i32, 0))
    return builder.shuffle_vector(v, ir.Constant(vt, ir.Undefined), ir.Constant(_vi32(L), [0] * L))


def _emit_tile(builder, be, fmt, bits, T, w, x, dl, dx, aux, y, nb, xs, ss, ys):
    """Emit: for k in range(nb): per token t, acc_t = acc_t + <block term>; then store.

    All arguments are i64 (addresses and strides in bytes): w first record of the
    row group; x quants (q8) or high halves (q16) of the tile's first token, token
    stride xs, and the low halves at x + dl; dx, aux (dxs for Q4_1, s_x otherwise)
    and y likewise, token strides ss (dx, aux) and ys (y).  nb >= 1.
    """
    L = be.LANES
    bstride = record_bytes(fmt, L)
    qbytes = quant_bytes(fmt, L)
    vbytes = 4 * L
    kind = "q8" if fmt == FMT_Q8_0 else "q4"
    wide = bits == 16
    vf = ir.VectorType(_f32, L)
    vi = _vi32(L)
    fn = builder.function
    pre = builder.block
    loop = fn.append_basic_block("qmm.kloop")
    done = fn.append_basic_block("qmm.done")
    builder.branch(loop)

    builder.position_at_end(loop)
    k = builder.phi(_i64)
    k.add_incoming(c64(0), pre)
    accs = []
    for _ in range(T):
        a = builder.phi(vf)
        a.add_incoming(ir.Constant(vf, None), pre)
        accs.append(a)

    wb = builder.add(w, builder.mul(k, c64(bstride)))
    xk = builder.add(x, builder.mul(k, c64(QK)))
    sk = builder.mul(k, c64(4))
    xt = [builder.add(xk, builder.mul(c64(t), xs)) for t in range(T)]
    xlt = [builder.add(a, dl) for a in xt] if wide else None

    if PF_DIST:
        # llvmlite's declare_intrinsic gets llvm.prefetch's signature wrong: declare it by hand.
        pf = builder.module.globals.get("llvm.prefetch.p0") or ir.Function(
            builder.module, ir.FunctionType(ir.VoidType(), [_i8.as_pointer(), _i32, _i32, _i32]),
            "llvm.prefetch.p0")
        for line in range(0, bstride, 64):
            a = builder.add(wb, c64(PF_DIST + line))
            builder.call(pf, [ptr(builder, a, _i8), ir.Constant(_i32, 0), ir.Constant(_i32, 3),
                              ir.Constant(_i32, 1)])

    # the 8 steps' weight operands, loaded once for all the tile's tokens
    nib = _splat_i32(0x0F0F0F0F, L)
    steps = []
    for j in range(qbytes // vbytes):
        wv = builder.load(ptr(builder, builder.add(wb, c64(vbytes * j)), vi), align=1)
        if kind == "q4":
            steps += [builder.and_(wv, nib), builder.and_(builder.lshr(wv, _splat_i32(4, L)), nib)]
        else:
            steps.append(wv)
    assert len(steps) == 8
    steps = be.weight_steps(builder, kind, steps)

    # A single token has one dependent chain per block and half; split it in two
    # (integer sums, so the split changes no bit) to halve its latency.
    nchains = 2 if T == 1 else 1
    halves = [(xt, 0)] + ([(xlt, 1)] if wide else [])
    acc = {(t, h, c): be.dot_init(builder, kind, L) for t in range(T) for h in range(len(halves))
           for c in range(nchains)}
    for s, op in enumerate(steps):
        c = s % nchains
        for t in range(T):
            for xa, h in halves:
                xb = _bcast(builder, builder.add(xa[t], c64(4 * s)), _i32, L, 1)
                acc[t, h, c] = be.dot_step(builder, kind, acc[t, h, c], op, xb)

    dw = builder.fpext(builder.load(ptr(builder, builder.add(wb, c64(qbytes)), ir.VectorType(ir.HalfType(), L)),
                                    align=2), vf)
    if fmt == FMT_Q4_1:
        mw = builder.fpext(builder.load(ptr(builder, builder.add(wb, c64(qbytes + 2 * L)),
                                             ir.VectorType(ir.HalfType(), L)), align=2), vf)
    zp_done = kind == "q8" and be.Q8_SIGNED   # the back end summed q*x, not u*x
    new_accs = []
    for t in range(T):
        hsum = []
        for h in range(len(halves)):
            v = None
            for c in range(nchains):
                f = be.dot_finish(builder, kind, acc[t, h, c])
                v = f if v is None else builder.add(v, f)
            hsum.append(v)
        isum = hsum[0]
        if wide:
            # |sum_hi| <= 32*255*127, so the shift cannot overflow int32
            isum = builder.add(builder.shl(isum, _splat_i32(7, L)), hsum[1])
        srow = builder.add(sk, builder.mul(c64(t), ss))
        if fmt != FMT_Q4_1 and not zp_done:
            sx = _bcast(builder, builder.add(aux, srow), _i32, L, 4)
            isum = builder.sub(isum, builder.shl(sx, _splat_i32(_ZP_SHIFT[fmt], L)))
        fi = builder.sitofp(isum, vf)
        dd = builder.fmul(dw, _bcast(builder, builder.add(dx, srow), _f32, L, 4))
        term = builder.fmul(fi, dd)
        if fmt == FMT_Q4_1:
            term = builder.fadd(term, builder.fmul(mw, _bcast(builder, builder.add(aux, srow), _f32, L, 4)))
        new_accs.append(builder.fadd(accs[t], term))

    k1 = builder.add(k, c64(1))
    body_end = builder.block
    k.add_incoming(k1, body_end)
    for a, na in zip(accs, new_accs):
        a.add_incoming(na, body_end)
    builder.cbranch(builder.icmp_signed("<", k1, nb), loop, done)

    builder.position_at_end(done)
    for t in range(T):
        yt = builder.add(y, builder.mul(c64(t), ys))
        builder.store(new_accs[t], ptr(builder, yt, vf), align=4)


def _emit_group(builder, be, fmt, bits, w, xh, xl, dx, aux, y, nb, M, xs, ss, ys):
    """All M tokens against one row group: tiles of the back end's size, then 4, 2, 1
    for the tail.  The weights of a group (a few KB over all of K) stay in L1 across
    the tiles; every token runs the same op sequence in any tile, so the tiling changes
    no bit."""
    tmax = be.TILES[bits]
    dl = builder.sub(xl, xh)

    def tile(T, t):
        def at(base, stride):
            return builder.add(base, builder.mul(t, stride))
        _emit_tile(builder, be, fmt, bits, T, w, at(xh, xs), dl, at(dx, ss), at(aux, ss),
                   at(y, ys), nb, xs, ss, ys)

    emit_tiled_loop(builder, M, tmax, tuple(T for T in (4, 2, 1) if T < tmax), tile, "qmm")


# The argument vector of the native runtime's product jobs (kernels/native): int64 words, addresses
# and strides in bytes.  The activation quantizer's items (act_quant_emit) read the same vector, so
# that one vector serves both jobs of a product.
ARGS = ("w", "xh", "xl", "dx", "aux", "y", "nb", "M", "xs", "ss", "ys", "gbytes", "G", "C",
        "x", "xrs", "dxs", "sx")
ARG = {name: i for i, name in enumerate(ARGS)}


def load_args(builder, argv, names):
    """The named words of an argument vector (an i64* value) as i64 values."""
    return [builder.load(builder.gep(argv, [c64(ARG[n])])) for n in names]


def item_name(isa, fmt, bits):
    return f"qmm_{FMT_NAMES[fmt]}_{bits}_{isa}"


def emit_item(module, be, fmt, bits):
    """void qmm_<fmt>_<bits>_<isa>(i64* args, i64 c): chunk c of the row groups, all M tokens.

    Chunk c is the contiguous groups [c*G/C, (c+1)*G/C): each thread streams one part of the
    matrix (one group per item, interleaved between threads, measured slower).  The chunking
    changes no bit: a group's rows are computed the same way in any chunk."""
    f = ir.Function(module, ir.FunctionType(ir.VoidType(), [_i64.as_pointer(), _i64]), item_name(be.NAME, fmt, bits))
    argv, c = f.args
    b = ir.IRBuilder(f.append_basic_block("entry"))
    w, xh, xl, dx, aux, y, nb, M, xs, ss, ys, gbytes, G, C = load_args(b, argv, ARGS[:14])
    g0 = b.sdiv(b.mul(c, G), C)
    g1 = b.sdiv(b.mul(b.add(c, c64(1)), G), C)
    entry = b.block
    head, body, out = (f.append_basic_block(n) for n in ("groups", "group", "out"))
    b.branch(head)
    b.position_at_end(head)
    g = b.phi(_i64)
    g.add_incoming(g0, entry)
    b.cbranch(b.icmp_signed("<", g, g1), body, out)
    b.position_at_end(body)
    _emit_group(b, be, fmt, bits, b.add(w, b.mul(g, gbytes)), xh, xl, dx, aux, b.add(y, b.mul(g, c64(be.LANES * 4))),
                nb, M, xs, ss, ys)
    g.add_incoming(b.add(g, c64(1)), b.block)
    b.branch(head)
    b.position_at_end(out)
    b.ret_void()
    return f


def entry_name(isa, fmt, bits, quantize):
    return f"{'linear' if quantize else 'matmul'}{bits}_{FMT_NAMES[fmt]}_{isa}"


def emit_entry(module, be, fmt, bits, quantize, quant_item):
    """void <linear|matmul><bits>_<fmt>_<isa>(i64* pool_state, i64* args, i64 threads): one product.

    linear (quantize): first the quantizer job (quant_item, one token per item; on the caller
    alone below 4 tokens, as act_quant's *_auto do), then the product job; matmul: the product
    job alone.  The product's chunk count C = min(threads, G) is stored into args here.  Jobs
    run on the pool's pool_run (native/pool.py), resolved from the pool's object at load."""
    i64p = _i64.as_pointer()
    run = module.globals.get("pool_run") or ir.Function(
        module, ir.FunctionType(ir.VoidType(), [i64p, _i64, _i64, _i64, _i64]), "pool_run")
    f = ir.Function(module, ir.FunctionType(ir.VoidType(), [i64p, i64p, _i64]), entry_name(be.NAME, fmt, bits, quantize))
    st, argv, threads = f.args
    b = ir.IRBuilder(f.append_basic_block("entry"))

    def smin(a, c):
        return b.select(b.icmp_signed("<", a, c), a, c)

    M, G = load_args(b, argv, ("M", "G"))
    if quantize:
        qthreads = b.select(b.icmp_signed("<", M, c64(4)), c64(1), smin(threads, M))
        b.call(run, [st, b.ptrtoint(quant_item, _i64), b.ptrtoint(argv, _i64), M, b.sub(qthreads, c64(1))])
    C = smin(threads, G)
    b.store(C, b.gep(argv, [c64(ARG["C"])]))
    item = module.globals[item_name(be.NAME, fmt, bits)]
    b.call(run, [st, b.ptrtoint(item, _i64), b.ptrtoint(argv, _i64), C, b.sub(C, c64(1))])
    b.ret_void()
    return f
