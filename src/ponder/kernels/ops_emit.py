"""The forward pass's serial kernels and the sampler's as LLVM IR: the native runtime's "ops" unit.

The twins of the Numba kernels in kernels/ops.py (rms_norm, add_rms_norm, qkv_heads, silu_mul),
attention.write_kv and kernels/sampling_numba.py (max_, weights, walk, kept_total), which stay
the reference and the PONDER_NATIVE=0 path.  The contract is the same bits: every kernel here does
the float operations of its Numba twin, in the same order and at the same precision, with no
fast-math flag and no contraction (llvmlite emits none).  Where Numba's types decide a
precision, this module follows them:

    rms_norm      ss = sum over i of float64(x)^2, in order (one chain per token, never split;
                  up to 8 tokens' chains run side by side);
                  inv = float32(1.0 / sqrt(ss / float64(dim) + eps)), all float64 (eps is a
                  Python float); out = (x * inv) * w in float32
    add_rms_norm  x = x + y (float32, in place), then rms_norm of the new x
    qkv_heads     a + bias; RoPE: a*c - b*s, b*c + a*s (two products, then the sub / add)
    silu_mul      e = exp_neg(-|g|), n = g >= 0 ? 1 : e (a select), out = (g * (n / (1 + e))) * up
    max           16 lanes: lane = x > lane ? x : lane; then the lanes in order (v > m: v),
                  then the tail (x > m: x): Numba's max(a, b) is b > a ? b : a
    weights       out = exp_neg((x - max) * inv_temp) in float32 (inv_temp a float32); their sum
                  in 8 interleaved float64 partial sums (lane j: 0.0 + out[j] + out[j+8] + ...),
                  added in lane order to 0.0, then the tail one by one
    walk          acc = float64 running sum of the weights >= min_w, in id order; the first id where
                  acc > target, else the last kept id (-1 if none)
    kept_total    the float64 sum of the weights >= min_w, in id order

exp_neg is llvm_ir.emit_exp_neg (the twin of attention.exp_neg).  A comparison with min_w is done
in float64: for a float32 min_w it is the float32 comparison Numba does, and for a Python float
the float64 one.  Element-wise loops are emitted as explicit vectors of `LANES` float32 plus a
scalar tail (the same operations per element, so the width changes no bit); the reductions'
orders are the Numba kernels' own.  The IR names no instruction set: the unit is compiled for
the host CPU, as the others are.

Each kernel is an entry `void ops_<name>(i64* state, i64* argv, i64 threads)` (the type the
runtime's call builtin calls; state and threads are unused: these kernels run on the calling
thread alone, since a parallel region costs more than they do at decode).  argv holds the
words named in ARGS[name]: addresses, sizes, row strides in bytes, column offsets in elements,
and floats as their double's bits (native/pycall.py).  Arrays' rows are unit-stride float32
(int64 positions / slot tokens, int32 slot blocks / offsets); kernels/ops_native.py and
kernels/sampling_native.py are the Python side.  Scalar results go into a small array given
as the last word (`res`).
"""

from __future__ import annotations

from llvmlite import ir

from ponder.kernels.llvm_ir import c64, declare_intrinsic, emit_exp_neg, emit_loop, emit_max, emit_tiled_loop

LANES = 16   # float32 lanes of the element-wise loops (two registers on AVX2: LLVM splits them)

ARGS = {
    "rms_norm": ("x", "xrs", "w", "out", "ors", "n", "dim", "eps"),
    "add_rms_norm": ("x", "xrs", "y", "yrs", "w", "out", "ors", "n", "dim", "eps"),
    "qkv_heads": ("qs", "qrs", "qcol", "ks", "krs", "kcol", "vs", "vrs", "vcol", "bq", "nbq", "bk", "nbk",
                  "bv", "nbv", "pos", "cos", "sin", "crs", "q", "k", "v", "n", "hq", "hkv", "d"),
    "silu_mul": ("g", "grs", "gcol", "u", "urs", "ucol", "out", "ors", "n", "dim"),
    "write_kv": ("kp", "vp", "k", "v", "tok", "blk", "off", "n", "heads", "d", "bs"),
    "max": ("x", "n", "res"),
    "weights": ("x", "n", "inv_temp", "out", "res"),
    "walk": ("w", "n", "target", "min_w", "res"),
    "kept_total": ("w", "n", "min_w", "res"),
}

_f32, _f64, _i32, _i64 = ir.FloatType(), ir.DoubleType(), ir.IntType(32), ir.IntType(64)
_ENTRY = ir.FunctionType(ir.VoidType(), [_i64.as_pointer(), _i64.as_pointer(), _i64])


def entry_name(kernel: str) -> str:
    return f"ops_{kernel}"


# -- small pieces ---------------------------------------------------------------------------------

def _const(ty, value, w=1):
    return ir.Constant(ty, value) if w == 1 else ir.Constant(ir.VectorType(ty, w), [value] * w)


def _splat(b, s, w):
    if w == 1:
        return s
    vt = ir.VectorType(s.type, w)
    v = b.insert_element(ir.Constant(vt, ir.Undefined), s, ir.Constant(_i32, 0))
    return b.shuffle_vector(v, ir.Constant(vt, ir.Undefined), ir.Constant(ir.VectorType(_i32, w), [0] * w))


def _at(b, base, i, w):
    """Pointer to element i of base (a typed pointer), as a pointer to w of them."""
    p = b.gep(base, [i])
    return p if w == 1 else b.bitcast(p, ir.VectorType(base.type.pointee, w).as_pointer())


def _ld(b, base, i, w=1):
    return b.load(_at(b, base, i, w), align=8 if base.type.pointee == _i64 else 4)


def _st(b, v, base, i, w=1):
    b.store(v, _at(b, base, i, w), align=4)


def _row(b, addr, t, rs, col=None, ty=_f32):
    """Row t of a 2-D array at addr (row stride rs bytes), from column col: a ty*."""
    a = b.add(addr, b.mul(t, rs))
    if col is not None:
        a = b.add(a, b.mul(col, c64(4)))
    return b.inttoptr(a, ty.as_pointer())


def _map(b, n, name, body, lanes=LANES):
    """body(i, w) for i = 0, lanes, 2*lanes, ... with w = lanes while a whole vector fits, then
    body(i, 1) for the rest.  body does the same operations for an element in either."""
    body_n = b.and_(n, c64(-lanes))
    emit_loop(b, c64(0), b.ashr(n, c64(lanes.bit_length() - 1)), f"{name}.v",
              lambda c: body(b.mul(c, c64(lanes)), lanes))
    emit_loop(b, body_n, n, f"{name}.s", lambda i: body(i, 1))


def _if(b, cond, name, then, otherwise):
    """if cond: then() else: otherwise(), each emitting at the builder's position."""
    f = b.function
    yes, no, end = (f.append_basic_block(f"{name}.{x}") for x in ("then", "else", "end"))
    b.cbranch(cond, yes, no)
    b.position_at_end(yes)
    then()
    b.branch(end)
    b.position_at_end(no)
    otherwise()
    b.branch(end)
    b.position_at_end(end)


def _entry(mod, kernel):
    """The entry function of a kernel, its builder and its argv words by name (i64 values;
    the float words as doubles)."""
    f = ir.Function(mod, _ENTRY, entry_name(kernel))
    _, argv, _ = f.args
    b = ir.IRBuilder(f.append_basic_block("entry"))
    words = {}
    for k, name in enumerate(ARGS[kernel]):
        v = b.load(b.gep(argv, [c64(k)]))
        words[name] = b.bitcast(v, _f64) if name in ("eps", "inv_temp", "target", "min_w") else v
    return f, b, words


def _p(b, addr, ty=_f32):
    return b.inttoptr(addr, ty.as_pointer())


# -- the forward pass's kernels -----------------------------------------------------------------------

def _norm_rows(b, xs, w, outs, dim, eps):
    """outs[j] = xs[j] / sqrt(mean(xs[j]^2) + eps) * w for a tile of rows (float* each).  Each row's
    sum of squares is one chain in order; the tile's chains run side by side (the same bits as one
    row at a time, several times faster in prefill)."""
    sqrt = declare_intrinsic(b.module, "llvm.sqrt", _f64)

    def square(i, *ss):
        out = []
        for x, s in zip(xs, ss):
            v = b.fpext(_ld(b, x, i), _f64)
            out.append(b.fadd(s, b.fmul(v, v)))
        return out
    sums = emit_loop(b, c64(0), dim, "ss", square, [_const(_f64, 0.0)] * len(xs))
    for x, out, ss in zip(xs, outs, sums):
        root = b.call(sqrt, [b.fadd(b.fdiv(ss, b.sitofp(dim, _f64)), eps)])
        inv = b.fptrunc(b.fdiv(_const(_f64, 1.0), root), _f32)

        def scale(i, lanes, x=x, out=out, inv=inv):
            _st(b, b.fmul(b.fmul(_ld(b, x, i, lanes), _splat(b, inv, lanes)), _ld(b, w, i, lanes)), out, i, lanes)
        _map(b, dim, "norm", scale)


def _emit_norm(mod, add):
    kernel = "add_rms_norm" if add else "rms_norm"
    _, b, a = _entry(mod, kernel)
    w = _p(b, a["w"])

    def tile(T, t0):
        ts = [b.add(t0, c64(j)) for j in range(T)]
        xs = [_row(b, a["x"], t, a["xrs"]) for t in ts]
        if add:
            for t, x in zip(ts, xs):
                y = _row(b, a["y"], t, a["yrs"])

                def plus(i, lanes, x=x, y=y):
                    _st(b, b.fadd(_ld(b, x, i, lanes), _ld(b, y, i, lanes)), x, i, lanes)
                _map(b, a["dim"], "add", plus)
        _norm_rows(b, xs, w, [_row(b, a["out"], t, a["ors"]) for t in ts], a["dim"], a["eps"])
    emit_tiled_loop(b, a["n"], 8, (4, 2, 1), tile, "tokens")
    b.ret_void()


def _heads(b, a, src, rs, col, bias, nbias, heads, out, rotate):
    """attention heads of one projection: out[t, h, :] = src[t, col + h*d ...] (+ bias), RoPE'd if rotate."""
    d = a["d"]
    half = b.sdiv(d, c64(2))
    pos, crs = _p(b, a["pos"], _i64), a["crs"]
    bias = _p(b, bias)

    def token(t):
        s = _row(b, src, t, rs, col)
        p = _ld(b, pos, t)
        cos, sin = _row(b, a["cos"], p, crs), _row(b, a["sin"], p, crs)

        def head(h):
            o = b.mul(h, d)
            o_row = _p(b, b.add(out, b.mul(b.add(b.mul(t, heads), h), b.mul(d, c64(4)))))

            def version(biased):
                def rope(i, lanes):
                    j = b.add(i, half)
                    x1, x2 = _ld(b, s, b.add(o, i), lanes), _ld(b, s, b.add(o, j), lanes)
                    if biased:
                        x1 = b.fadd(x1, _ld(b, bias, b.add(o, i), lanes))
                        x2 = b.fadd(x2, _ld(b, bias, b.add(o, j), lanes))
                    c, sn = _ld(b, cos, i, lanes), _ld(b, sin, i, lanes)
                    _st(b, b.fsub(b.fmul(x1, c), b.fmul(x2, sn)), o_row, i, lanes)
                    _st(b, b.fadd(b.fmul(x2, c), b.fmul(x1, sn)), o_row, j, lanes)

                def copy(i, lanes):
                    v = _ld(b, s, b.add(o, i), lanes)
                    if biased:
                        v = b.fadd(v, _ld(b, bias, b.add(o, i), lanes))
                    _st(b, v, o_row, i, lanes)
                return lambda: _map(b, half if rotate else d, "rope" if rotate else "copy", rope if rotate else copy)
            _if(b, b.icmp_signed(">", nbias, c64(0)), "bias", version(True), version(False))
        emit_loop(b, c64(0), heads, "heads", head)
    emit_loop(b, c64(0), a["n"], "tokens", token)


def _emit_qkv(mod):
    _, b, a = _entry(mod, "qkv_heads")
    _heads(b, a, a["qs"], a["qrs"], a["qcol"], a["bq"], a["nbq"], a["hq"], a["q"], True)
    _heads(b, a, a["ks"], a["krs"], a["kcol"], a["bk"], a["nbk"], a["hkv"], a["k"], True)
    _heads(b, a, a["vs"], a["vrs"], a["vcol"], a["bv"], a["nbv"], a["hkv"], a["v"], False)
    b.ret_void()


def _emit_silu(mod):
    _, b, a = _entry(mod, "silu_mul")
    fabs = declare_intrinsic(mod, "llvm.fabs", _f32)

    def token(t):
        g_row, u_row = _row(b, a["g"], t, a["grs"], a["gcol"]), _row(b, a["u"], t, a["urs"], a["ucol"])
        out = _row(b, a["out"], t, a["ors"])

        def elem(i, lanes):
            g = _ld(b, g_row, i, lanes)
            f = fabs if lanes == 1 else declare_intrinsic(mod, "llvm.fabs", g.type)
            # -abs(g) as Numba negates a float (fsub from -0.0)
            e = emit_exp_neg(b, b.fsub(_const(_f32, -0.0, lanes), b.call(f, [g])))
            one = _const(_f32, 1.0, lanes)
            num = b.select(b.fcmp_ordered(">=", g, _const(_f32, 0.0, lanes)), one, e)
            _st(b, b.fmul(b.fmul(g, b.fdiv(num, b.fadd(one, e))), _ld(b, u_row, i, lanes)), out, i, lanes)
        _map(b, a["dim"], "silu", elem)
    emit_loop(b, c64(0), a["n"], "tokens", token)
    b.ret_void()


def _emit_write_kv(mod):
    """k_pool[blk, h, i, off] = k[t, h, i]; v_pool[blk, h, off, i] = v[t, h, i] for each slot."""
    _, b, a = _entry(mod, "write_kv")
    heads, d, bs = a["heads"], a["d"], a["bs"]
    kp, vp, k, v = (_p(b, a[x]) for x in ("kp", "vp", "k", "v"))
    tok, blk, off = _p(b, a["tok"], _i64), _p(b, a["blk"], _i32), _p(b, a["off"], _i32)

    def slot(s):
        t, bl, o = _ld(b, tok, s), b.sext(_ld(b, blk, s), _i64), b.sext(_ld(b, off, s), _i64)

        def head(h):
            src = b.mul(b.add(b.mul(t, heads), h), d)
            bh = b.add(b.mul(bl, heads), h)
            kdst = b.add(b.mul(b.mul(bh, d), bs), o)
            vdst = b.gep(vp, [b.mul(b.add(b.mul(bh, bs), o), d)])
            ks = b.gep(k, [src])
            emit_loop(b, c64(0), d, "k", lambda i: _st(b, _ld(b, ks, i), kp, b.add(kdst, b.mul(i, bs))))
            vs = b.gep(v, [src])
            _map(b, d, "v", lambda i, lanes: _st(b, _ld(b, vs, i, lanes), vdst, i, lanes))
        emit_loop(b, c64(0), heads, "heads", head)
    emit_loop(b, c64(0), a["n"], "slots", slot)
    b.ret_void()


# -- the sampler's kernels ----------------------------------------------------------------------------

def _emit_max_fn(mod):
    """float ponder_ops_max(float* x, i64 n): sampling_numba.max_ (internal; the entries call it)."""
    f = ir.Function(mod, ir.FunctionType(_f32, [_f32.as_pointer(), _i64]), "ponder_ops_max")
    f.linkage = "internal"
    x, n = f.args
    b = ir.IRBuilder(f.append_basic_block("entry"))
    lanes, = emit_loop(b, c64(0), b.ashr(n, c64(4)), "lanes",
                       lambda c, m: [emit_max(b, _ld(b, x, b.mul(c, c64(16)), 16), m)],
                       [_const(_f32, float("-inf"), 16)])
    m = b.extract_element(lanes, ir.Constant(_i32, 0))
    for j in range(1, 16):
        m = emit_max(b, b.extract_element(lanes, ir.Constant(_i32, j)), m)
    m, = emit_loop(b, b.and_(n, c64(-16)), n, "tail", lambda k, m: [emit_max(b, _ld(b, x, k), m)], [m])
    b.ret(m)
    return f


def _emit_max(mod, max_fn):
    _, b, a = _entry(mod, "max")
    _st(b, b.call(max_fn, [_p(b, a["x"]), a["n"]]), _p(b, a["res"]), c64(0))
    b.ret_void()


def _emit_weights(mod, max_fn):
    _, b, a = _entry(mod, "weights")
    x, out, n = _p(b, a["x"]), _p(b, a["out"]), a["n"]
    m = b.call(max_fn, [x, n])
    inv_temp = b.fptrunc(a["inv_temp"], _f32)

    def weight(i, lanes):
        w = emit_exp_neg(b, b.fmul(b.fsub(_ld(b, x, i, lanes), _splat(b, m, lanes)), _splat(b, inv_temp, lanes)))
        _st(b, w, out, i, lanes)
        return w

    v8 = ir.VectorType(_f64, 8)

    def wide(w, lo):
        return b.fpext(b.shuffle_vector(w, ir.Constant(w.type, ir.Undefined),
                                        ir.Constant(ir.VectorType(_i32, 8), list(range(lo, lo + 8)))), v8)

    def sixteen(c, acc):   # ids 16c .. 16c+15: lane j gets id 16c+j, then 16c+8+j (the order of ids)
        w = weight(b.mul(c, c64(16)), 16)
        return [b.fadd(b.fadd(acc, wide(w, 0)), wide(w, 8))]
    acc, = emit_loop(b, c64(0), b.ashr(n, c64(4)), "w16", sixteen, [_const(_f64, 0.0, 8)])
    # at most one chunk of 8 after the chunks of 16
    acc, = emit_loop(b, b.shl(b.ashr(n, c64(4)), c64(1)), b.ashr(n, c64(3)), "w8",
                     lambda c, acc: [b.fadd(acc, b.fpext(weight(b.mul(c, c64(8)), 8), v8))], [acc])
    total = _const(_f64, 0.0)
    for j in range(8):
        total = b.fadd(total, b.extract_element(acc, ir.Constant(_i32, j)))
    total, = emit_loop(b, b.and_(n, c64(-8)), n, "tail",
                       lambda k, s: [b.fadd(s, b.fpext(weight(k, 1), _f64))], [total])
    _st(b, total, _p(b, a["res"], _f64), c64(0))
    b.ret_void()


def _kept_step(b, w, k, min_w, acc, on_kept=None):
    """One id of a walk over the weights: if w[k] >= min_w (compared in float64), acc += w[k] and
    on_kept(acc) runs (it may return); the next acc and whether w[k] was kept, as phis."""
    f = b.function
    wd = b.fpext(_ld(b, w, k), _f64)
    start = b.block
    take, join = f.append_basic_block("kept"), f.append_basic_block("next")
    b.cbranch(b.fcmp_ordered(">=", wd, min_w), take, join)
    b.position_at_end(take)
    acc1 = b.fadd(acc, wd)
    if on_kept is not None:
        on_kept(acc1)
    took = b.block
    b.branch(join)
    b.position_at_end(join)
    acc_next, kept = b.phi(_f64), b.phi(ir.IntType(1))
    acc_next.add_incoming(acc1, took)
    acc_next.add_incoming(acc, start)
    kept.add_incoming(ir.Constant(ir.IntType(1), 1), took)
    kept.add_incoming(ir.Constant(ir.IntType(1), 0), start)
    return acc_next, kept


def _emit_walk(mod):
    f, b, a = _entry(mod, "walk")
    w, res, target = _p(b, a["w"]), _p(b, a["res"], _i64), a["target"]

    def step(k, acc, last):
        def passed(acc1):
            found, on = f.append_basic_block("found"), f.append_basic_block("on")
            b.cbranch(b.fcmp_ordered(">", acc1, target), found, on)
            b.position_at_end(found)
            b.store(k, res)
            b.ret_void()
            b.position_at_end(on)
        acc, kept = _kept_step(b, w, k, a["min_w"], acc, passed)
        return [acc, b.select(kept, k, last)]
    _, last = emit_loop(b, c64(0), a["n"], "ids", step, [_const(_f64, 0.0), c64(-1)])
    b.store(last, res)
    b.ret_void()


def _emit_kept_total(mod):
    _, b, a = _entry(mod, "kept_total")
    w = _p(b, a["w"])
    total, = emit_loop(b, c64(0), a["n"], "ids", lambda k, t: [_kept_step(b, w, k, a["min_w"], t)[0]],
                       [_const(_f64, 0.0)])
    _st(b, total, _p(b, a["res"], _f64), c64(0))
    b.ret_void()


def emit(mod: ir.Module) -> None:
    """Add every kernel's entry (ops_<name> for name in ARGS) to mod."""
    _emit_norm(mod, False)
    _emit_norm(mod, True)
    _emit_qkv(mod)
    _emit_silu(mod)
    _emit_write_kv(mod)
    max_fn = _emit_max_fn(mod)
    _emit_max(mod, max_fn)
    _emit_weights(mod, max_fn)
    _emit_walk(mod)
    _emit_kept_total(mod)
