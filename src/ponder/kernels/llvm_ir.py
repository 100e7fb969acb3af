"""Pieces shared by the kernels that emit LLVM IR (qmatmul, attention, the native runtime).

The kernels process rows in tiles that share one pass over their data; every row
runs the same operations in any tile, so the tiling never changes a bit.  No Numba here:
the native runtime builds its objects from these without importing it.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

I64 = ir.IntType(64)
_F32, _I32 = ir.FloatType(), ir.IntType(32)

# exp_neg's constants (kernels/attention.py has the scalar Numba twin, the oracle of this IR)
LOG2E = np.float32(1.4426950408889634)
LN2_HI = np.float32(0.693359375)  # ln 2 split in two so that n * ln2 subtracts exactly
LN2_LO = np.float32(-2.12194440e-4)


def c64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def ptr(builder: ir.IRBuilder, addr, ty):
    """An integer address as a pointer to ty."""
    return builder.inttoptr(addr, ty.as_pointer())


def emit_loop(builder: ir.IRBuilder, start, stop, name: str, body, carried=()) -> list:
    """Emit `for i in range(start, stop): carried = body(i, *carried)` (i64 bounds, step 1).

    body(i, *values) emits one iteration at the builder's position (it may branch and add
    blocks) and returns the next values of the loop-carried ones (phis of their initial values'
    types), or None when there are none.  Returns their values after the loop, where the
    builder is left.
    """
    fn = builder.function
    pre = builder.block
    head, loop_body, out = (fn.append_basic_block(f"{name}{part}") for part in ("", ".body", ".out"))
    builder.branch(head)
    builder.position_at_end(head)
    i = builder.phi(I64)
    i.add_incoming(start, pre)
    phis = []
    for v in carried:
        phi = builder.phi(v.type)
        phi.add_incoming(v, pre)
        phis.append(phi)
    builder.cbranch(builder.icmp_signed("<", i, stop), loop_body, out)
    builder.position_at_end(loop_body)
    nxt = body(i, *phis) or []
    end = builder.block
    i.add_incoming(builder.add(i, c64(1)), end)
    for phi, v in zip(phis, nxt):
        phi.add_incoming(v, end)
    builder.branch(head)
    builder.position_at_end(out)
    return phis


def emit_tiled_loop(builder: ir.IRBuilder, total, tmax: int, tails: tuple[int, ...], tile, name: str) -> None:
    """Emit: t = 0; while total - t >= tmax: tile(tmax, t); t += tmax; then for each T in tails
    (descending): if total - t >= T: tile(T, t); t += T.

    tile(T, t) emits the code of one tile of T rows starting at row t (an i64 value).
    """
    fn = builder.function

    def remaining_at_least(t, n):
        return builder.icmp_signed(">=", builder.sub(total, t), c64(n))

    pre = builder.block
    head = fn.append_basic_block(f"{name}.tiles")
    body = fn.append_basic_block(f"{name}.tile")
    tail = fn.append_basic_block(f"{name}.tail")
    builder.branch(head)
    builder.position_at_end(head)
    t = builder.phi(I64)
    t.add_incoming(c64(0), pre)
    builder.cbranch(remaining_at_least(t, tmax), body, tail)
    builder.position_at_end(body)
    tile(tmax, t)
    t.add_incoming(builder.add(t, c64(tmax)), builder.block)
    builder.branch(head)
    builder.position_at_end(tail)
    cur = t
    for T in tails:
        do = fn.append_basic_block(f"{name}.rest")
        nxt = fn.append_basic_block(f"{name}.next")
        skip_from = builder.block
        builder.cbranch(remaining_at_least(cur, T), do, nxt)
        builder.position_at_end(do)
        tile(T, cur)
        after = builder.add(cur, c64(T))
        do_end = builder.block
        builder.branch(nxt)
        builder.position_at_end(nxt)
        phi = builder.phi(I64)
        phi.add_incoming(after, do_end)
        phi.add_incoming(cur, skip_from)
        cur = phi


def _like(ty, value):
    """A constant of type ty (float32, int32 or a vector of them) with every lane `value`."""
    if isinstance(ty, ir.VectorType):
        return ir.Constant(ty, [value] * ty.count)
    return ir.Constant(ty, value)


def declare_intrinsic(module: ir.Module, name: str, ty):
    """The overload of a unary float intrinsic (llvm.floor, llvm.fabs, ...) for float32/float64 or a
    vector of them (llvmlite's declare_intrinsic does not mangle vector types)."""
    vec = isinstance(ty, ir.VectorType)
    elem = ty.element if vec else ty
    suffix = ("f32" if isinstance(elem, ir.FloatType) else "f64")
    full = f"{name}.v{ty.count}{suffix}" if vec else f"{name}.{suffix}"
    try:
        return module.get_global(full)
    except KeyError:
        return ir.Function(module, ir.FunctionType(ty, [ty]), full)


def emit_max(builder: ir.IRBuilder, a, b):
    """a > b ? a : b (ordered: a NaN a never wins), scalar or lane-wise: attention._vmax(a, b), and
    Numba's max(b, a) for floats (Numba's max(a, b) is b > a ? b : a: it keeps a on ties and NaN)."""
    return builder.select(builder.fcmp_ordered(">", a, b), a, b)


def emit_exp_neg(builder: ir.IRBuilder, x):
    """attention.exp_neg of a float32 or a float32 vector: exp(x) for x <= 0, the same operations
    in the same order (exact range reduction, a degree-7 polynomial; 0 below -87)."""
    ty = x.type
    ity = ir.VectorType(_I32, ty.count) if isinstance(ty, ir.VectorType) else _I32
    floor = declare_intrinsic(builder.module, "llvm.floor", ty)
    lim = _like(ty, -87.0)
    xc = emit_max(builder, lim, x)   # Numba's max(x, -87.0): NaN stays NaN
    k = builder.call(floor, [builder.fadd(builder.fmul(xc, _like(ty, float(LOG2E))), _like(ty, 0.5))])
    r = builder.fsub(builder.fsub(xc, builder.fmul(k, _like(ty, float(LN2_HI)))), builder.fmul(k, _like(ty, float(LN2_LO))))
    p = _like(ty, float(np.float32(1.0 / 5040.0)))
    for c in (1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0):
        p = builder.fadd(builder.fmul(p, r), _like(ty, float(np.float32(c))))
    e = builder.add(builder.fptosi(k, ity), _like(ity, 127))
    two_n = builder.bitcast(builder.shl(e, _like(ity, 23)), ty)
    two_n = builder.select(builder.fcmp_ordered("<", x, lim), _like(ty, 0.0), two_n)
    return builder.fmul(p, two_n)
