"""AVX2 back end (AMD Zen 1-3, Intel Haswell and later): vpmaddubsw + vpmaddwd, 8 rows per vector.

The same lane structure as the VNNI sets (lane i = output row i; a step is 4 K
elements of 8 rows, 32 bytes; the activations are a broadcast 4-byte group), with
vpdpbusd's job done by vpmaddubsw (u8 x s8 pairs summed into int16, saturating)
then vpmaddwd by ones (int16 pairs into int32).  The int16 stage must never
saturate or wrap, so that the block sum is the exact integer every back end gets.
The activations are in [-127, 127] in both modes (see act_quant: q8 and both q16
halves), which gives:

* Q4 (weights 0..15): a vpmaddubsw lane is at most 2*15*127 = 3810 in magnitude, so
  the 8 steps of a block are summed in int16 (at most 30480 < 32767) and widened
  once per block: 8 vpmaddubsw + 8 vpaddw + 1 vpmaddwd per token and half.
* Q8_0 (weights -128..127, stored as u = q + 128): u times s8 would saturate, so the
  sign moves onto the activation as llama.cpp does: vpmaddubsw(|q|, sign(x, q)),
  each pair at most 2*128*127 = 32512; this sums q*x directly (no zero point),
  widened every step.  The integer is the same sum(u*x) - 128*s_x the other sets get.

Tiles for 16 ymm registers: per token one float accumulator and one int16
accumulator per activation half.
"""

from llvmlite import ir

NAME = "avx2"
LANES = 8
REQUIRES = (frozenset({"avx2", "f16c"}),)
TILES = {8: 6, 16: 4}
ATT_QT, ATT_PT, ATT_VW = 3, 1, 8
Q8_SIGNED = True

_i1, _i8, _i16, _i32 = ir.IntType(1), ir.IntType(8), ir.IntType(16), ir.IntType(32)
_v32i8, _v16i16, _v8i32 = ir.VectorType(_i8, 32), ir.VectorType(_i16, 16), ir.VectorType(_i32, 8)
_ONES16 = ir.Constant(_v16i16, [1] * 16)


def _call(builder, name, ret, *args):
    fn = builder.module.declare_intrinsic(name, fnty=ir.FunctionType(ret, [a.type for a in args]))
    return builder.call(fn, list(args))


def _maddubs(builder, u, s):
    return _call(builder, "llvm.x86.avx2.pmadd.ub.sw", _v16i16, u, s)


def _widen(builder, v16):
    return _call(builder, "llvm.x86.avx2.pmadd.wd", _v8i32, v16, _ONES16)


def weight_steps(builder, kind, steps):
    if kind != "q8":
        return steps
    out = []
    for u in steps:
        q = builder.xor(builder.bitcast(u, _v32i8), ir.Constant(_v32i8, [0x80] * 32))
        out.append((_call(builder, "llvm.abs.v32i8", _v32i8, q, ir.Constant(_i1, 0)), q))
    return out


def dot_init(builder, kind, lanes):
    return ir.Constant(_v8i32 if kind == "q8" else _v16i16, None)


def dot_step(builder, kind, acc, w, x):
    xb = builder.bitcast(x, _v32i8)
    if kind == "q8":
        absq, q = w
        sx = _call(builder, "llvm.x86.avx2.psign.b", _v32i8, xb, q)
        return builder.add(acc, _widen(builder, _maddubs(builder, absq, sx)))
    return builder.add(acc, _maddubs(builder, builder.bitcast(w, _v32i8), xb))


def dot_finish(builder, kind, acc):
    return acc if kind == "q8" else _widen(builder, acc)
