"""vpdpbusd, shared by the two VNNI back ends (512-bit EVEX and 256-bit VEX/EVEX forms).

vpdpbusd(acc, w, x): acc[i] += sum over b < 4 of u8(w[4i+b]) * s8(x[4i+b]), exact in
int32 (no saturation).  LLVM changed the operand types of the intrinsic from <n x i32>
to <4n x i8>; the old form is only accepted through auto-upgrade, so we ask the
linked LLVM which one it keeps.
"""

from __future__ import annotations

from functools import lru_cache

from llvmlite import ir

_i8, _i32 = ir.IntType(8), ir.IntType(32)


@lru_cache(maxsize=None)
def operand_is_bytes(lanes: int) -> bool:
    import llvmlite.binding as llvm

    name = f"llvm.x86.avx512.vpdpbusd.{32 * lanes}"
    vi, vb = f"<{lanes} x i32>", f"<{4 * lanes} x i8>"
    src = (f"declare {vi} @{name}({vi}, {vb}, {vb})\n"
           f"define {vi} @f({vi} %a, {vb} %b) {{\n"
           f"  %r = call {vi} @{name}({vi} %a, {vb} %b, {vb} %b)\n"
           f"  ret {vi} %r\n}}\n")
    try:
        m = llvm.parse_assembly(src)
        m.verify()
        return f"{vb} %b, {vb} %b" in str(m)
    except RuntimeError:
        return False


def dpbusd(builder: ir.IRBuilder, acc, w, x):
    """acc, w, x: <n x i32> (n = 8 or 16) -> acc + vpdpbusd(w, x)."""
    n = acc.type.count
    vi = ir.VectorType(_i32, n)
    opty = ir.VectorType(_i8, 4 * n) if operand_is_bytes(n) else vi
    fn = builder.module.declare_intrinsic(f"llvm.x86.avx512.vpdpbusd.{32 * n}",
                                          fnty=ir.FunctionType(vi, [vi, opty, opty]))
    return builder.call(fn, [acc, builder.bitcast(w, opty), builder.bitcast(x, opty)])


# Back-end hooks shared by both VNNI sets: Q8_0 keeps the unsigned u = q + 128 operand
# (the generic emitter removes the zero point), the accumulator is the int32 sum itself.
Q8_SIGNED = False


def weight_steps(builder, kind, steps):
    return steps


def dot_init(builder, kind, lanes):
    return ir.Constant(ir.VectorType(_i32, lanes), None)


def dot_step(builder, kind, acc, w, x):
    return dpbusd(builder, acc, w, x)


def dot_finish(builder, kind, acc):
    return acc
