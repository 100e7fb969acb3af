"""Quantized matrix products y = W x for CPU inference (Numba + hand-emitted LLVM IR).

Weights: llama.cpp Q4_1, Q4_0 and Q8_0.  Activations are quantized per token and per
32-element block in one of two modes:

* q8  (bits=8): int8, d = amax/127, exactly llama.cpp's q8_1.  Fastest.
* q16 (bits=16, the default): a 15-bit integer q in [-16383, 16383], d = amax/16383,
  stored as two int8 halves q = 128*qh + ql (qh = q >> 7 in [-128, 127],
  ql = q & 127 in [0, 127]).  Each step runs two vpdpbusd with the same weight operand,
  one per half, and the block sum is (sum_hi << 7) + sum_lo.  About 130x less
  activation error than q8 (see Notes).

Exactness contract
------------------
For a given weight matrix, token and mode, the float32 output is bit-identical
whatever the batch size M, the token tiling, the number of threads, and whichever
kernel runs (the SIMD intrinsic, with or without VNNI, or the scalar fallback).
It holds because:

* the 16 lanes of a vector are 16 *output rows*, so there is no horizontal
  reduction; every row is one sequential chain over the K blocks;
* the integer dot product of a block is exact (any summation order gives the
  same int32);
* converting it to float32 is a deterministic round-to-nearest of that int32.  It is
  exact (|isum| < 2**24) except for Q8_0 weights in q16 mode, where |isum| reaches
  32*128*16383 ~ 6.7e7: the conversion rounds, but the same integer always rounds
  to the same float, so the contract still holds;
* the float part is a fixed sequence of plain fmul/fadd (no fastmath, no
  contraction to FMA), the same in the vector IR and in the scalar code;
* a token's chain never depends on the other tokens of its tile.

Per K block k of a row (d_w, m_w: weight scale and min; d_x, s_x: activation scale
and integer sum of the block; dxs = d_x * float32(s_x), computed once per token):

    Q4_1:  acc = acc + (float32(sum(q*qx)) * (d_w*d_x) + m_w*dxs)
    Q4_0:  acc = acc +  float32(sum(q*qx) - 8*s_x) * (d_w*d_x)
    Q8_0:  acc = acc +  float32(sum(u*qx) - 128*s_x) * (d_w*d_x),  u = q + 128

Packed layout (see pack): rows in groups of 16; per (group g, block k) one
contiguous record, records ordered g-major so that one row group streams
sequentially through memory:

    Q4_1: 256 B quants | 16 x fp16 d | 16 x fp16 m      = 320 B (16 rows x 20 B, as GGUF)
    Q4_0: 256 B quants | 16 x fp16 d                    = 288 B
    Q8_0: 512 B quants | 16 x fp16 d                    = 544 B

A "step" s (0..7) covers K elements 4s..4s+3 of the block for all 16 rows: 64 bytes,
byte 4r+b = element 4s+b of row r.  That is exactly one vpdpbusd operand (lane r =
row r).  Q8_0 stores the 8 steps as they are (u = q+128, so the operand is
unsigned).  Q4 packs two steps per 64-byte vector: vector j holds step 2j in the low
nibbles and step 2j+1 in the high nibbles.  The fp16 scales are widened in the
kernel (vcvtph2ps, exact), which keeps the byte count equal to GGUF's.

API
---
Python: ``from_gguf(fmt, raw, rows, K) -> QMatrix``; ``quantize(x, out=None, bits=16)
-> QAct``; ``matmul(W, a, out=None) -> y [M, rows]`` (dispatches on ``a.bits``);
``matmul_scalar(W, a)`` (the bit-exact scalar oracle).

njit-callable, arrays only (y is float32 [M, G*16], C-contiguous rows; the
activation arrays need contiguous rows, any row stride):

    quantize_act(x, qx, dx, dxs, sx)              q8, serial
    quantize_act_par / quantize_act_auto          q8, prange over tokens / by M
    quantize_act16(x, qh, ql, dx, dxs, sx)        q16, serial
    quantize_act16_par / quantize_act16_auto      q16
    qmm_q4_1(w, qx, dx, dxs, y)   qmm_q4_0(w, qx, dx, sx, y)   qmm_q8_0(w, qx, dx, sx, y)
    qmm16_q4_1(w, qh, ql, dx, dxs, y)   qmm16_q4_0(w, qh, ql, dx, sx, y)
    qmm16_q8_0(w, qh, ql, dx, sx, y)

w is QMatrix.buf; aux arrays (dxs for Q4_1, sx otherwise) as in the formulas above.
All but the two serial quantizers are parallel=True.  A *cached non-parallel* njit
caller of a parallel function segfaults when NUMBA_NUM_THREADS differs from the
process that wrote the cache (numba #8578, #4807): make such callers parallel=True
too (the *_auto quantizers are, without a prange, for that reason).

Caching: cache=True everywhere.  The on-disk cache is keyed by CPU and source file,
not by PONDER_QMM_NO_VNNI (testing only: forces the portable IR): use a separate
NUMBA_CACHE_DIR with it.

Notes
-----
Speed, SmolLM2-135M weight products (30 layers x 7 Q4_1 + Q8_0 head 49152x576, with
the activation quantization; from one parallel njit step function; 2 threads, VNNI,
median of 7 on a shared machine, so +-10%):

    step time    M=1      M=16     M=256
    q8           4.0 ms   7.6 ms   86 ms
    q16          4.2 ms   9.9 ms   134 ms

Decode is bound by the weight bandwidth, so q16 costs ~nothing there; batched it is
bound by vpdpbusd, of which it runs twice as many.

Accuracy, relative L2 error of an output row vector against float64 (same
dequantized weights, exact x), 576x576 / 1536x576 / 576x1536, every format alike:
q8 median 5.3e-3, max 6.5e-3 (Gaussian x), 8e-3 / 1.3e-2 (Student-t3 x); q16
median 4.1e-5, max 4.9e-5 (Gaussian), 6.2e-5 / 9.5e-5 (Student-t3): ~128x smaller.
"""

import os
import warnings

import numpy as np
from numba import njit, prange, types
from numba.core.errors import NumbaPerformanceWarning
from numba.core import cgutils
from numba.extending import intrinsic
from llvmlite import ir
import llvmlite.binding as llvm

from ponder.kernels.llvm_ir import c64, emit_tiled_loop, ptr

QK = 32          # K elements per quantization block
RG = 16          # output rows per group = lanes of a 512-bit vector of int32/float32
# Tokens sharing one load of the weights (measured).  q8: past 8 the token pointers
# spill.  q16 keeps two int32 accumulators per token: at 8 tokens the zmm registers
# spill and M=256 runs 1.8x slower than at 6 (4 and 6 tie at M=256; 6 wins at M=16).
TMAX = {8: 8, 16: 6}
PF_DIST = 2560   # software prefetch distance in bytes: +5-10% when the weights are cold
DEFAULT_BITS = 16
Q16_MAX = 16383  # 2**14 - 1: |q| < 2**14 keeps qh = q >> 7 within int8

FMT_Q4_0, FMT_Q4_1, FMT_Q8_0 = 2, 3, 8    # ggml type ids
_QBYTES = {FMT_Q4_0: 256, FMT_Q4_1: 256, FMT_Q8_0: 512}
_BSTRIDE = {FMT_Q4_0: 288, FMT_Q4_1: 320, FMT_Q8_0: 544}
# zero point (8 for Q4_0, 128 for Q8_0's u = q + 128) removed as zp * s_x: a shift
_ZP_SHIFT = {FMT_Q4_0: 3, FMT_Q8_0: 7}
BS_Q4_0, BS_Q4_1, BS_Q8_0 = 288, 320, 544


# parallel=True without a prange is deliberate here (see the docstring on cached callers).
warnings.filterwarnings("ignore", message="(?s).*no transformation for parallel execution was possible",
                        category=NumbaPerformanceWarning)

# --------------------------------------------------------------------------------------
# CPU capability

def _host_has_vnni():
    if os.environ.get("PONDER_QMM_NO_VNNI", "") not in ("", "0"):
        return False
    try:
        f = llvm.get_host_cpu_features()
        return bool(f.get("avx512vnni", False)) and bool(f.get("avx512bw", False))
    except Exception:
        return False


def _vnni_operand_is_bytes():
    # LLVM changed the vpdpbusd operand types from <16 x i32> to <64 x i8>; the old form
    # is only accepted through auto-upgrade.  Ask the linked LLVM which one it keeps.
    src = ("declare <16 x i32> @llvm.x86.avx512.vpdpbusd.512(<16 x i32>, <64 x i8>, <64 x i8>)\n"
           "define <16 x i32> @f(<16 x i32> %a, <64 x i8> %b) {\n"
           "  %r = call <16 x i32> @llvm.x86.avx512.vpdpbusd.512(<16 x i32> %a, <64 x i8> %b, <64 x i8> %b)\n"
           "  ret <16 x i32> %r\n}\n")
    try:
        m = llvm.parse_assembly(src)
        m.verify()
        return "<64 x i8> %b, <64 x i8> %b" in str(m)
    except Exception:
        return False


HAS_VNNI = _host_has_vnni()
_VNNI_BYTES = _vnni_operand_is_bytes() if HAS_VNNI else False


# --------------------------------------------------------------------------------------
# LLVM IR for one row group x all tokens, looping over all K blocks

_i8, _i32, _i64, _f32 = ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType()
_v16i32 = ir.VectorType(_i32, 16)
_v64i8 = ir.VectorType(_i8, 64)
_v16f = ir.VectorType(_f32, 16)
_v16h = ir.VectorType(ir.HalfType(), 16)


def _splat_i32(v):
    return ir.Constant(_v16i32, [v] * 16)


def _bcast_i32(builder, addr):
    # A scalar load + splat folds into the {1to16} memory operand of vpdpbusd, so the
    # activations take no registers.
    s = builder.load(ptr(builder, addr, _i32), align=1)
    v = builder.insert_element(ir.Constant(_v16i32, ir.Undefined), s, ir.Constant(_i32, 0))
    return builder.shuffle_vector(v, ir.Constant(_v16i32, ir.Undefined),
                                  ir.Constant(_v16i32, [0] * 16))


def _bcast_f32(builder, addr):
    s = builder.load(ptr(builder, addr, _f32), align=4)
    v = builder.insert_element(ir.Constant(_v16f, ir.Undefined), s, ir.Constant(_i32, 0))
    return builder.shuffle_vector(v, ir.Constant(_v16f, ir.Undefined),
                                  ir.Constant(_v16i32, [0] * 16))


def _dot_u8s8(builder, vnni, acc, w, x):
    """acc[i] += sum_{b<4} u8(w[4i+b]) * s8(x[4i+b]) -- vpdpbusd semantics (no saturation)."""
    if vnni:
        opty = _v64i8 if _VNNI_BYTES else _v16i32
        fn = builder.module.declare_intrinsic(
            "llvm.x86.avx512.vpdpbusd.512", fnty=ir.FunctionType(_v16i32, [_v16i32, opty, opty]))
        return builder.call(fn, [acc, builder.bitcast(w, opty), builder.bitcast(x, opty)])
    # Integer products and sums, so this gives the same bits as vpdpbusd.  Bytes are
    # extracted with shifts within the i32 lanes: widening to <64 x i32> took LLVM about
    # twice as long to compile.
    for b in range(4):
        wb = builder.and_(builder.lshr(w, _splat_i32(8 * b)), _splat_i32(0xFF))
        xb = builder.ashr(builder.shl(x, _splat_i32(24 - 8 * b)), _splat_i32(24))
        acc = builder.add(acc, builder.mul(wb, xb))
    return acc


def _emit_tile(builder, fmt, bits, T, vnni, w, x, dl, dx, aux, y, nb, xs, ss, ys):
    """Emit: for k in range(nb): per token t, acc_t = acc_t + <block term>; then store.

    All arguments are i64 (addresses and strides in bytes): w first record of the
    row group; x quants (q8) or high halves (q16) of the tile's first token, token
    stride xs, and the low halves at x + dl; dx, aux (dxs for Q4_1, s_x otherwise)
    and y likewise, token strides ss (dx, aux) and ys (y).  nb >= 1.
    """
    bstride = _BSTRIDE[fmt]
    qbytes = _QBYTES[fmt]
    q4 = fmt in (FMT_Q4_0, FMT_Q4_1)
    wide = bits == 16
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
        a = builder.phi(_v16f)
        a.add_incoming(ir.Constant(_v16f, None), pre)
        accs.append(a)

    wb = builder.add(w, builder.mul(k, c64(bstride)))
    xk = builder.add(x, builder.mul(k, c64(QK)))
    sk = builder.mul(k, c64(4))
    xt = [builder.add(xk, builder.mul(c64(t), xs)) for t in range(T)]
    xlt = [builder.add(a, dl) for a in xt] if wide else None

    if PF_DIST:
        # llvmlite's declare_intrinsic gets llvm.prefetch's signature wrong: declare it by hand.
        pf = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [_i8.as_pointer(), _i32, _i32, _i32]),
            "llvm.prefetch.p0")
        for line in range(0, bstride, 64):
            a = builder.add(wb, c64(PF_DIST + line))
            builder.call(pf, [ptr(builder, a, _i8), ir.Constant(_i32, 0), ir.Constant(_i32, 3),
                              ir.Constant(_i32, 1)])

    # A single token has one dependent vpdpbusd chain per block and half; split it in
    # two (integer sums, so the split changes no bit) to halve its latency.
    nchains = 2 if T == 1 else 1
    zero = ir.Constant(_v16i32, None)
    hi = [[zero] * nchains for _ in range(T)]
    lo = [[zero] * nchains for _ in range(T)]
    nib = _splat_i32(0x0F0F0F0F)
    step = 0
    for j in range(qbytes // 64):
        wv = builder.load(ptr(builder, builder.add(wb, c64(64 * j)), _v16i32), align=1)
        if q4:
            halves = [builder.and_(wv, nib), builder.and_(builder.lshr(wv, _splat_i32(4)), nib)]
        else:
            halves = [wv]
        for h in halves:
            c = step % nchains
            for t in range(T):
                xb = _bcast_i32(builder, builder.add(xt[t], c64(4 * step)))
                hi[t][c] = _dot_u8s8(builder, vnni, hi[t][c], h, xb)
                if wide:
                    xb = _bcast_i32(builder, builder.add(xlt[t], c64(4 * step)))
                    lo[t][c] = _dot_u8s8(builder, vnni, lo[t][c], h, xb)
            step += 1
    assert step == 8

    dw = builder.fpext(builder.load(ptr(builder, builder.add(wb, c64(qbytes)), _v16h),
                                    align=2), _v16f)
    if fmt == FMT_Q4_1:
        mw = builder.fpext(builder.load(ptr(builder, builder.add(wb, c64(qbytes + 32)),
                                             _v16h), align=2), _v16f)
    new_accs = []
    for t in range(T):
        isum = hi[t][0]
        for c in range(1, nchains):
            isum = builder.add(isum, hi[t][c])
        if wide:
            # |sum_hi| <= 32*255*128, so the shift cannot overflow int32
            isum = builder.shl(isum, _splat_i32(7))
            for c in range(nchains):
                isum = builder.add(isum, lo[t][c])
        srow = builder.add(sk, builder.mul(c64(t), ss))
        if fmt != FMT_Q4_1:
            sx = _bcast_i32(builder, builder.add(aux, srow))
            isum = builder.sub(isum, builder.shl(sx, _splat_i32(_ZP_SHIFT[fmt])))
        fi = builder.sitofp(isum, _v16f)
        dd = builder.fmul(dw, _bcast_f32(builder, builder.add(dx, srow)))
        term = builder.fmul(fi, dd)
        if fmt == FMT_Q4_1:
            term = builder.fadd(term, builder.fmul(mw, _bcast_f32(builder, builder.add(aux, srow))))
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
        builder.store(new_accs[t], ptr(builder, yt, _v16f), align=4)


def _emit_group(builder, fmt, bits, vnni, w, xh, xl, dx, aux, y, nb, M, xs, ss, ys):
    """All M tokens against one row group: tiles of TMAX tokens, then 4, 2, 1 for the
    tail.  The weights of a group (a few KB over all of K) stay in L1 across the tiles;
    every token runs the same op sequence in any tile, so the tiling changes no bit."""
    tmax = TMAX[bits]
    dl = builder.sub(xl, xh)

    def tile(T, t):
        def at(base, stride):
            return builder.add(base, builder.mul(t, stride))
        _emit_tile(builder, fmt, bits, T, vnni, w, at(xh, xs), dl, at(dx, ss), at(aux, ss),
                   at(y, ys), nb, xs, ss, ys)

    emit_tiled_loop(builder, M, tmax, tuple(T for T in (4, 2, 1) if T < tmax), tile, "qmm")


def _make_kernel(fmt, bits, vnni=HAS_VNNI):
    """kern(w, xh, xl, dx, aux, y, nb, M, xs, ss, ys): one row group, all tokens.
    Addresses and strides in bytes; xl is ignored in q8 mode."""
    @intrinsic
    def _kern(typingctx, w, xh, xl, dx, aux, y, nb, M, xs, ss, ys):
        argtys = (w, xh, xl, dx, aux, y, nb, M, xs, ss, ys)
        if not all(isinstance(a, types.Integer) for a in argtys):
            return None
        sig = types.void(*argtys)

        def codegen(context, builder, signature, args):
            vals = [context.cast(builder, v, t, types.int64) for v, t in zip(args, argtys)]
            _emit_group(builder, fmt, bits, vnni, *vals)
            return context.get_dummy_value()

        return sig, codegen

    return _kern


# Module-level so that the drivers below can be cached (cache=True).
_k8_q4_1, _k8_q4_0, _k8_q8_0 = (_make_kernel(f, 8) for f in (FMT_Q4_1, FMT_Q4_0, FMT_Q8_0))
_k16_q4_1, _k16_q4_0, _k16_q8_0 = (_make_kernel(f, 16) for f in (FMT_Q4_1, FMT_Q4_0, FMT_Q8_0))


# --------------------------------------------------------------------------------------
# Drivers: parallel over row groups.  ctypes.data is unsigned and numba makes
# uint64 + int64 a float64, hence the int64 casts.  The six drivers differ only in the
# kernel they call; they are written out rather than made by a factory because Numba's
# on-disk cache (cache=True) keys functions by module and name, and closures made by a
# factory would share one name.

@njit(inline="always")
def _a(arr):
    return np.int64(arr.ctypes.data)


@njit(parallel=True, cache=True)
def qmm_q4_1(w, qx, dx, dxs, y):
    """q8: y[t, :] = W qx[t] for Q4_1 packed w (uint8 [G, nb, 320]); y float32 [M, G*16]."""
    G, nb, M = w.shape[0], w.shape[1], np.int64(qx.shape[0])
    wa, xa, da, aa, ya = _a(w), _a(qx), _a(dx), _a(dxs), _a(y)
    xs, ss, ys = np.int64(qx.strides[0]), np.int64(dx.strides[0]), np.int64(y.strides[0])
    for g in prange(G):
        _k8_q4_1(wa + np.int64(g) * nb * BS_Q4_1, xa, xa, da, aa, ya + np.int64(g) * (RG * 4),
                 nb, M, xs, ss, ys)


@njit(parallel=True, cache=True)
def qmm_q4_0(w, qx, dx, sx, y):
    """q8, Q4_0 packed w (uint8 [G, nb, 288]); sx = int32 activation block sums."""
    G, nb, M = w.shape[0], w.shape[1], np.int64(qx.shape[0])
    wa, xa, da, aa, ya = _a(w), _a(qx), _a(dx), _a(sx), _a(y)
    xs, ss, ys = np.int64(qx.strides[0]), np.int64(dx.strides[0]), np.int64(y.strides[0])
    for g in prange(G):
        _k8_q4_0(wa + np.int64(g) * nb * BS_Q4_0, xa, xa, da, aa, ya + np.int64(g) * (RG * 4),
                 nb, M, xs, ss, ys)


@njit(parallel=True, cache=True)
def qmm_q8_0(w, qx, dx, sx, y):
    """q8, Q8_0 packed w (uint8 [G, nb, 544]); sx = int32 activation block sums."""
    G, nb, M = w.shape[0], w.shape[1], np.int64(qx.shape[0])
    wa, xa, da, aa, ya = _a(w), _a(qx), _a(dx), _a(sx), _a(y)
    xs, ss, ys = np.int64(qx.strides[0]), np.int64(dx.strides[0]), np.int64(y.strides[0])
    for g in prange(G):
        _k8_q8_0(wa + np.int64(g) * nb * BS_Q8_0, xa, xa, da, aa, ya + np.int64(g) * (RG * 4),
                 nb, M, xs, ss, ys)


# q16: qh and ql must have the same row stride (the kernel reaches ql as qh + const).

@njit(parallel=True, cache=True)
def qmm16_q4_1(w, qh, ql, dx, dxs, y):
    """q16, Q4_1: like qmm_q4_1 with the activations as high/low int8 halves."""
    assert qh.strides[0] == ql.strides[0]
    G, nb, M = w.shape[0], w.shape[1], np.int64(qh.shape[0])
    wa, xa, la, da, aa, ya = _a(w), _a(qh), _a(ql), _a(dx), _a(dxs), _a(y)
    xs, ss, ys = np.int64(qh.strides[0]), np.int64(dx.strides[0]), np.int64(y.strides[0])
    for g in prange(G):
        _k16_q4_1(wa + np.int64(g) * nb * BS_Q4_1, xa, la, da, aa, ya + np.int64(g) * (RG * 4),
                  nb, M, xs, ss, ys)


@njit(parallel=True, cache=True)
def qmm16_q4_0(w, qh, ql, dx, sx, y):
    """q16, Q4_0."""
    assert qh.strides[0] == ql.strides[0]
    G, nb, M = w.shape[0], w.shape[1], np.int64(qh.shape[0])
    wa, xa, la, da, aa, ya = _a(w), _a(qh), _a(ql), _a(dx), _a(sx), _a(y)
    xs, ss, ys = np.int64(qh.strides[0]), np.int64(dx.strides[0]), np.int64(y.strides[0])
    for g in prange(G):
        _k16_q4_0(wa + np.int64(g) * nb * BS_Q4_0, xa, la, da, aa, ya + np.int64(g) * (RG * 4),
                  nb, M, xs, ss, ys)


@njit(parallel=True, cache=True)
def qmm16_q8_0(w, qh, ql, dx, sx, y):
    """q16, Q8_0."""
    assert qh.strides[0] == ql.strides[0]
    G, nb, M = w.shape[0], w.shape[1], np.int64(qh.shape[0])
    wa, xa, la, da, aa, ya = _a(w), _a(qh), _a(ql), _a(dx), _a(sx), _a(y)
    xs, ss, ys = np.int64(qh.strides[0]), np.int64(dx.strides[0]), np.int64(y.strides[0])
    for g in prange(G):
        _k16_q8_0(wa + np.int64(g) * nb * BS_Q8_0, xa, la, da, aa, ya + np.int64(g) * (RG * 4),
                  nb, M, xs, ss, ys)


# --------------------------------------------------------------------------------------
# Activation quantization.  s_x is kept as an exact int32 (llama.cpp's q8_1 stores it
# as a float) so that the zero-point correction stays in the integer sum.

@njit(inline="always")
def _round_half_away(v):
    # in float64 so that |v| + 0.5 is exact
    r = np.int32(np.floor(abs(np.float64(v)) + 0.5))
    return r if v >= 0 else -r


@njit(cache=True, inline="always")
def _quantize_token(x, qx, dx, dxs, sx, t):
    K = x.shape[1]
    for k in range(K // QK):
        amax = np.float32(0.0)
        for i in range(QK):
            a = abs(x[t, k * QK + i])
            if a > amax:
                amax = a
        d = amax / np.float32(127.0)
        s = np.int32(0)
        if d == np.float32(0.0):
            for i in range(QK):
                qx[t, k * QK + i] = 0
        else:
            for i in range(QK):
                q = _round_half_away(x[t, k * QK + i] / d)      # float32 division
                qx[t, k * QK + i] = q
                s += q
        dx[t, k] = d
        sx[t, k] = s
        dxs[t, k] = d * np.float32(s)


@njit(cache=True, inline="always")
def _quantize_token16(x, qh, ql, dx, dxs, sx, t):
    K = x.shape[1]
    for k in range(K // QK):
        amax = np.float32(0.0)
        for i in range(QK):
            a = abs(x[t, k * QK + i])
            if a > amax:
                amax = a
        d = amax / np.float32(Q16_MAX)
        s = np.int32(0)
        if d == np.float32(0.0):
            for i in range(QK):
                qh[t, k * QK + i] = 0
                ql[t, k * QK + i] = 0
        else:
            for i in range(QK):
                q = _round_half_away(x[t, k * QK + i] / d)      # float32 division
                # a subnormal d is inexact enough to push |x/d| past the range
                q = min(max(q, np.int32(-Q16_MAX)), np.int32(Q16_MAX))
                qh[t, k * QK + i] = q >> 7
                ql[t, k * QK + i] = q & 127
                s += q
        dx[t, k] = d
        sx[t, k] = s
        dxs[t, k] = d * np.float32(s)


@njit(cache=True)
def quantize_act(x, qx, dx, dxs, sx):
    """q8: x float32 [M, K] -> qx int8 [M, K], dx/dxs float32 [M, K//32], sx int32 [M, K//32].
    Serial: for decode (M = 1) a parallel launch would cost more than the work."""
    for t in range(x.shape[0]):
        _quantize_token(x, qx, dx, dxs, sx, t)


@njit(parallel=True, cache=True)
def quantize_act_par(x, qx, dx, dxs, sx):
    for t in prange(x.shape[0]):
        _quantize_token(x, qx, dx, dxs, sx, t)


@njit(parallel=True, cache=True)
def quantize_act_auto(x, qx, dx, dxs, sx):
    if x.shape[0] < 4:
        quantize_act(x, qx, dx, dxs, sx)
    else:
        quantize_act_par(x, qx, dx, dxs, sx)


@njit(cache=True)
def quantize_act16(x, qh, ql, dx, dxs, sx):
    """q16: x float32 [M, K] -> qh, ql int8 [M, K] (q = 128*qh + ql), dx, dxs, sx as q8."""
    for t in range(x.shape[0]):
        _quantize_token16(x, qh, ql, dx, dxs, sx, t)


@njit(parallel=True, cache=True)
def quantize_act16_par(x, qh, ql, dx, dxs, sx):
    for t in prange(x.shape[0]):
        _quantize_token16(x, qh, ql, dx, dxs, sx, t)


@njit(parallel=True, cache=True)
def quantize_act16_auto(x, qh, ql, dx, dxs, sx):
    if x.shape[0] < 4:
        quantize_act16(x, qh, ql, dx, dxs, sx)
    else:
        quantize_act16_par(x, qh, ql, dx, dxs, sx)


class QAct:
    """Quantized activations of M tokens.  bits=8: qx holds the int8 quants, ql is
    None.  bits=16: qx holds the high halves qh, ql the low halves."""
    __slots__ = ("bits", "qx", "ql", "dx", "dxs", "sx")

    def __init__(self, M, K, bits=DEFAULT_BITS):
        if bits not in (8, 16):
            raise ValueError("bits must be 8 or 16")
        nb = K // QK
        self.bits = bits
        self.qx = np.empty((M, K), np.int8)
        self.ql = np.empty((M, K), np.int8) if bits == 16 else None
        self.dx = np.empty((M, nb), np.float32)
        self.dxs = np.empty((M, nb), np.float32)
        self.sx = np.empty((M, nb), np.int32)

    @property
    def values(self):
        """The integer quants as int32 [M, K] (q = 128*qh + ql in q16 mode)."""
        if self.bits == 8:
            return self.qx.astype(np.int32)
        return self.qx.astype(np.int32) * 128 + self.ql


def quantize(x, out=None, bits=DEFAULT_BITS):
    """x float32 [M, K] or [K] -> QAct.  out, if given, must have the same bits and shape."""
    x = np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32)
    M, K = x.shape
    if K % QK:
        raise ValueError("K must be a multiple of 32")
    if out is None:
        a = QAct(M, K, bits)
    elif out.bits != bits or out.qx.shape != (M, K):
        raise ValueError("out does not match x and bits")
    else:
        a = out
    if bits == 16:
        quantize_act16_auto(x, a.qx, a.ql, a.dx, a.dxs, a.sx)
    else:
        quantize_act_auto(x, a.qx, a.dx, a.dxs, a.sx)
    return a


# --------------------------------------------------------------------------------------
# Packing (load time)

def _aligned_empty(shape, align=64):
    n = int(np.prod(shape))
    raw = np.empty(n + align, np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off:off + n].reshape(shape)


class QMatrix:
    """A weight matrix repacked for the kernels.  buf: uint8 [G, nb, record bytes]."""
    __slots__ = ("fmt", "rows", "cols", "buf")

    def __init__(self, fmt, rows, cols, buf):
        self.fmt, self.rows, self.cols, self.buf = fmt, rows, cols, buf

    @property
    def nbytes(self):
        return self.buf.nbytes


def _group_steps(q, rows_p, nb):
    # [R, K] -> [G, nb, step(8), row(16), byte(4)]
    G = rows_p // RG
    return q.reshape(G, RG, nb, 8, 4).transpose(0, 2, 3, 1, 4)


def _group_scales(s, rows_p, nb):
    G = rows_p // RG
    return np.ascontiguousarray(s.astype(np.float16).reshape(G, RG, nb).transpose(0, 2, 1)).view(np.uint8)


def _pad_rows(a, rows_p):
    if a.shape[0] == rows_p:
        return a
    pad = np.zeros((rows_p - a.shape[0],) + a.shape[1:], a.dtype)
    return np.concatenate([a, pad])


def pack(fmt, q, d, m=None):
    """q: [rows, K] quants as stored by ggml (uint8 0..15 for Q4_*, int8 for Q8_0);
    d, m: [rows, K//32] float16 scale / min (m only for Q4_1)."""
    rows, K = q.shape
    nb = K // QK
    rows_p = -(-rows // RG) * RG
    G = rows_p // RG
    q = _pad_rows(q, rows_p)
    d = _pad_rows(np.asarray(d, np.float16), rows_p)
    buf = _aligned_empty((G, nb, _BSTRIDE[fmt]))
    if fmt in (FMT_Q4_0, FMT_Q4_1):
        st = _group_steps(q.astype(np.uint8), rows_p, nb)           # [G, nb, 8, 16, 4]
        buf[:, :, :256] = (st[:, :, 0::2] | (st[:, :, 1::2] << 4)).reshape(G, nb, 256)
        buf[:, :, 256:288] = _group_scales(d, rows_p, nb)
        if fmt == FMT_Q4_1:
            buf[:, :, 288:320] = _group_scales(_pad_rows(np.asarray(m, np.float16), rows_p), rows_p, nb)
    elif fmt == FMT_Q8_0:
        u = (q.astype(np.int16) + 128).astype(np.uint8)
        buf[:, :, :512] = _group_steps(u, rows_p, nb).reshape(G, nb, 512)
        buf[:, :, 512:544] = _group_scales(d, rows_p, nb)
    else:
        raise ValueError(fmt)
    return QMatrix(fmt, rows, K, buf)


def decode_gguf(fmt, raw, rows, K):
    """llama.cpp block bytes (row-major, blocks of 32) -> (q, d, m)."""
    nb = K // QK
    raw = np.frombuffer(raw, np.uint8) if not isinstance(raw, np.ndarray) else raw.view(np.uint8)
    if fmt == FMT_Q8_0:
        b = raw.reshape(rows, nb, 34)
        d = np.ascontiguousarray(b[:, :, 0:2]).view(np.float16)[..., 0]
        q = np.ascontiguousarray(b[:, :, 2:]).view(np.int8).reshape(rows, K)
        return q, d, None
    hdr = 4 if fmt == FMT_Q4_1 else 2
    b = raw.reshape(rows, nb, hdr + 16)
    d = np.ascontiguousarray(b[:, :, 0:2]).view(np.float16)[..., 0]
    m = np.ascontiguousarray(b[:, :, 2:4]).view(np.float16)[..., 0] if fmt == FMT_Q4_1 else None
    qs = b[:, :, hdr:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(rows, K)   # elem j | elem j+16
    return q, d, m


def from_gguf(fmt, raw, rows, K):
    q, d, m = decode_gguf(fmt, raw, rows, K)
    return pack(fmt, q, d, m)


# --------------------------------------------------------------------------------------
# Public entry point

# Dispatch in Python: a parallel njit dispatcher would cost ~2 s of compilation and
# compile all formats where a model uses two.
_QMM8 = {FMT_Q4_1: qmm_q4_1, FMT_Q4_0: qmm_q4_0, FMT_Q8_0: qmm_q8_0}
_QMM16 = {FMT_Q4_1: qmm16_q4_1, FMT_Q4_0: qmm16_q4_0, FMT_Q8_0: qmm16_q8_0}

@njit(parallel=True, cache=True)
def _linear16(fmt, x, w, y):
    """y = W x in one call: q16-quantize x, then the product.  The same two steps as
    quantize() + matmul(), so the same bits, minus two Python round trips per layer."""
    M, K = x.shape
    nb = K // QK
    qh, ql = np.empty((M, K), np.int8), np.empty((M, K), np.int8)
    dx, dxs, sx = np.empty((M, nb), np.float32), np.empty((M, nb), np.float32), np.empty((M, nb), np.int32)
    quantize_act16_auto(x, qh, ql, dx, dxs, sx)
    if fmt == FMT_Q4_1:
        qmm16_q4_1(w, qh, ql, dx, dxs, y)
    elif fmt == FMT_Q4_0:
        qmm16_q4_0(w, qh, ql, dx, sx, y)
    else:
        qmm16_q8_0(w, qh, ql, dx, sx, y)


def linear16(W, x):
    """y [M, W.rows] = W . x for float32 x [M, K], with 15-bit activations, in one Numba call."""
    y = np.empty((x.shape[0], W.buf.shape[0] * RG), np.float32)
    _linear16(W.fmt, x, W.buf, y)
    return y[:, :W.rows]


def matmul(W, a, out=None):
    """y [M, W.rows] float32 = W . x for quantized activations a (QAct from quantize())."""
    M = a.qx.shape[0]
    rows_p = W.buf.shape[0] * RG
    y = out if out is not None else np.empty((M, rows_p), np.float32)
    aux = a.dxs if W.fmt == FMT_Q4_1 else a.sx
    if a.bits == 16:
        _QMM16[W.fmt](W.buf, a.qx, a.ql, a.dx, aux, y)
    else:
        _QMM8[W.fmt](W.buf, a.qx, a.dx, aux, y)
    return y[:, :W.rows]


# --------------------------------------------------------------------------------------
# Scalar fallback: same packed buffer, same integers, same float32 op order; the
# bit-exact reference the SIMD kernels are tested against.

_F16_LUT = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


@njit(inline="always")
def _xq(qx, ql, wide, t, i):
    v = np.int32(qx[t, i])
    if wide:
        v = v * np.int32(128) + np.int32(ql[t, i])
    return v


@njit(parallel=True, cache=True)
def qmm_scalar(fmt, bits, w, qx, ql, dx, dxs, sx, y, lut):
    """ql is ignored when bits == 8 (pass qx)."""
    M = qx.shape[0]
    G, nb = w.shape[0], w.shape[1]
    q4 = fmt != FMT_Q8_0
    wide = bits == 16
    qbytes = 256 if q4 else 512
    zp = np.int32(8) if fmt == FMT_Q4_0 else np.int32(128)
    for r in prange(G * RG):
        g, lane = r // RG, r % RG
        for t in range(M):
            acc = np.float32(0.0)
            for k in range(nb):
                rec = w[g, k]
                isum = np.int32(0)
                if q4:
                    for j in range(4):
                        for b in range(4):
                            v = np.int32(rec[64 * j + 4 * lane + b])
                            isum += (v & 15) * _xq(qx, ql, wide, t, k * QK + 8 * j + b)
                            isum += (v >> 4) * _xq(qx, ql, wide, t, k * QK + 8 * j + 4 + b)
                else:
                    for s in range(8):
                        for b in range(4):
                            u = np.int32(rec[64 * s + 4 * lane + b])
                            isum += u * _xq(qx, ql, wide, t, k * QK + 4 * s + b)
                dw = lut[np.int32(rec[qbytes + 2 * lane]) | (np.int32(rec[qbytes + 2 * lane + 1]) << 8)]
                if fmt == FMT_Q4_1:
                    mw = lut[np.int32(rec[288 + 2 * lane]) | (np.int32(rec[289 + 2 * lane]) << 8)]
                    acc = acc + (np.float32(isum) * (dw * dx[t, k]) + mw * dxs[t, k])
                else:
                    isum -= zp * sx[t, k]
                    acc = acc + np.float32(isum) * (dw * dx[t, k])
            y[t, r] = acc


def matmul_scalar(W, a, out=None):
    M = a.qx.shape[0]
    rows_p = W.buf.shape[0] * RG
    y = out if out is not None else np.empty((M, rows_p), np.float32)
    ql = a.ql if a.bits == 16 else a.qx
    qmm_scalar(W.fmt, a.bits, W.buf, a.qx, ql, a.dx, a.dxs, a.sx, y, _F16_LUT)
    return y[:, :W.rows]
