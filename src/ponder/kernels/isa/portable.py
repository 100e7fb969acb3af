"""Portable back end (ARM and anything else LLVM targets): generic LLVM vectors, 8 rows per vector.

Correct on every target, not tuned.  vpdpbusd is emulated with shifts and 32-bit
multiplies within the i32 lanes (widening to bytes took LLVM about twice as long to
compile).  Integer products and sums, so the block sum is the same integer as on
the SIMD sets.
"""

from llvmlite import ir

NAME = "portable"
LANES = 8
REQUIRES = (frozenset(),)
TILES = {8: 4, 16: 4}
ATT_QT, ATT_PT, ATT_VW = 3, 1, 8
Q8_SIGNED = False

_i32 = ir.IntType(32)


def _splat(v, n):
    return ir.Constant(ir.VectorType(_i32, n), [v] * n)


def weight_steps(builder, kind, steps):
    return steps


def dot_init(builder, kind, lanes):
    return ir.Constant(ir.VectorType(_i32, lanes), None)


def dot_step(builder, kind, acc, w, x):
    """acc[i] += sum_{b<4} u8(w[4i+b]) * s8(x[4i+b]) -- vpdpbusd's result."""
    n = acc.type.count
    for b in range(4):
        wb = builder.and_(builder.lshr(w, _splat(8 * b, n)), _splat(0xFF, n))
        xb = builder.ashr(builder.shl(x, _splat(24 - 8 * b, n)), _splat(24, n))
        acc = builder.add(acc, builder.mul(wb, xb))
    return acc


def dot_finish(builder, kind, acc):
    return acc
