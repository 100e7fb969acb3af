"""The activation quantizers (q8 and q16) as LLVM IR items for the native runtime: one token per item.

The same float operations in the same order as act_quant_numba._quantize_token (the Numba version,
which stays the reference and the oracle's quantizer): the bits are the contract, so every
step below is the plain IEEE operation Numba emits for that line, with no fast-math flags
and no contraction (llvmlite emits none unless asked):

    amax = max over the block of |x|      fabs, then fcmp ogt + select (NaN never wins)
    d    = amax / float32(qmax)           float32 fdiv
    q    = round_half_away(x / d)         float32 fdiv; fpext, fabs, + 0.5, floor, fptosi i32;
                                          negated when not (x/d >= 0)
    q    = min(max(q, -qmax), qmax)
    s    = sum of q (exact); dx = d; sx = s; dxs = d * float32(s)

A block whose d is 0 is all zeros.  q16 splits q into qh = sign(q) * (|q| >> 7) and
ql = sign(q) * (|q| & 127).  The item reads qmm_emit.ARGS: x and xrs (the float input and its
row stride), xh/xl/xs (quants and their row stride), dx/dxs/sx and their row stride ss, nb.
"""

from __future__ import annotations

from llvmlite import ir

from ponder.kernels.act_quant import Q8_MAX, Q16_MAX
from ponder.kernels.llvm_ir import c64, emit_loop, ptr
from ponder.kernels.qmm_emit import load_args
from ponder.kernels.qmm_layout import QK

_i8, _i32, _i64, _f32, _f64 = ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType(), ir.DoubleType()


def item_name(bits: int, isa: str) -> str:
    return f"quant_{bits}_{isa}"


def _intrinsic(mod, name, ty):
    return mod.declare_intrinsic(name, [ty])


def emit_item(module: ir.Module, bits: int, isa: str) -> ir.Function:
    """void quant_<bits>_<isa>(i64* args, i64 t): token t of x quantized into xh (and xl), dx, dxs, sx."""
    row = _emit_row(module, bits, f"quant_row_{bits}_{isa}")
    f = ir.Function(module, ir.FunctionType(ir.VoidType(), [_i64.as_pointer(), _i64]), item_name(bits, isa))
    argv, t = f.args
    b = ir.IRBuilder(f.append_basic_block("entry"))
    x, xrs, xh, xl, xs, dx, dxs, sx, ss, nb = load_args(b, argv, ("x", "xrs", "xh", "xl", "xs", "dx", "dxs", "sx",
                                                                  "ss", "nb"))
    srow = b.mul(t, ss)
    b.call(row, [ptr(b, b.add(x, b.mul(t, xrs)), _f32), ptr(b, b.add(xh, b.mul(t, xs)), _i8),
                 ptr(b, b.add(xl, b.mul(t, xs)), _i8), ptr(b, b.add(dx, srow), _f32), ptr(b, b.add(dxs, srow), _f32),
                 ptr(b, b.add(sx, srow), _i32), nb])
    b.ret_void()
    return f


def _emit_row(module: ir.Module, bits: int, name: str) -> ir.Function:
    """quant_row(x, qh, ql, dx, dxs, sx, nb): one token, through typed pointers that do not alias
    (noalias), so that LLVM may vectorize the element loops (the float operations stay per element)."""
    wide = bits == 16
    qmax = Q16_MAX if wide else Q8_MAX
    f32p, i8p, i32p = _f32.as_pointer(), _i8.as_pointer(), _i32.as_pointer()
    f = ir.Function(module, ir.FunctionType(ir.VoidType(), [f32p, i8p, i8p, f32p, f32p, i32p, _i64]), name)
    f.linkage = "internal"
    for a in f.args[:6]:
        a.add_attribute("noalias")
    xrow, hrow, lrow, dx, dxs, sx, nb = f.args
    b = ir.IRBuilder(f.append_basic_block("entry"))
    fabs32 = _intrinsic(module, "llvm.fabs", _f32)
    fabs64 = _intrinsic(module, "llvm.fabs", _f64)
    floor64 = _intrinsic(module, "llvm.floor", _f64)
    qmax_i = ir.Constant(_i32, qmax)

    def block(k):
        base = b.mul(k, c64(QK))

        def elem(i):
            return b.load(b.gep(xrow, [b.add(base, i)]), align=4)

        def store_q(row, i, v):
            b.store(b.trunc(v, _i8), b.gep(row, [b.add(base, i)]))

        def amax_step(i, amax):
            a = b.call(fabs32, [elem(i)])
            return [b.select(b.fcmp_ordered(">", a, amax), a, amax)]
        amax, = emit_loop(b, c64(0), c64(QK), "amax", amax_step, [ir.Constant(_f32, 0.0)])
        d = b.fdiv(amax, ir.Constant(_f32, float(qmax)))
        zero, quant, blk_end = (f.append_basic_block(n) for n in ("zero", "quant", "block.end"))
        b.cbranch(b.fcmp_ordered("==", d, ir.Constant(_f32, 0.0)), zero, quant)

        b.position_at_end(zero)  # d == 0: zeros

        def zero_step(j):
            store_q(hrow, j, ir.Constant(_i32, 0))
            if wide:
                store_q(lrow, j, ir.Constant(_i32, 0))
        emit_loop(b, c64(0), c64(QK), "zero", zero_step)
        zero_end = b.block
        b.branch(blk_end)

        b.position_at_end(quant)

        def quant_step(j, s):
            v = b.fdiv(elem(j), d)
            r = b.fptosi(b.call(floor64, [b.fadd(b.call(fabs64, [b.fpext(v, _f64)]), ir.Constant(_f64, 0.5))]), _i32)
            nonneg = b.fcmp_ordered(">=", b.fpext(v, _f64), ir.Constant(_f64, 0.0))
            q = b.select(nonneg, r, b.neg(r))
            q = b.select(b.icmp_signed(">", q, b.neg(qmax_i)), q, b.neg(qmax_i))     # max(q, -qmax)
            q = b.select(b.icmp_signed("<", q, qmax_i), q, qmax_i)                   # min(., qmax)
            if wide:
                pos = b.icmp_signed(">=", q, ir.Constant(_i32, 0))
                mag = b.select(pos, q, b.neg(q))
                h, lo = b.ashr(mag, ir.Constant(_i32, 7)), b.and_(mag, ir.Constant(_i32, 127))
                store_q(hrow, j, b.select(pos, h, b.neg(h)))
                store_q(lrow, j, b.select(pos, lo, b.neg(lo)))
            else:
                store_q(hrow, j, q)
            return [b.add(s, b.sext(q, _i64))]
        s, = emit_loop(b, c64(0), c64(QK), "q", quant_step, [c64(0)])
        quant_end = b.block
        b.branch(blk_end)

        b.position_at_end(blk_end)
        sum_ = b.phi(_i64)
        sum_.add_incoming(c64(0), zero_end)
        sum_.add_incoming(s, quant_end)
        b.store(d, b.gep(dx, [k]), align=4)
        b.store(b.trunc(sum_, _i32), b.gep(sx, [k]), align=4)
        b.store(b.fmul(d, b.sitofp(sum_, _f32)), b.gep(dxs, [k]), align=4)
    emit_loop(b, c64(0), nb, "blocks", block)
    b.ret_void()
    return f
