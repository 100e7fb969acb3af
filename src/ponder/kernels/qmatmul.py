"""Quantized matrix products y = W x for CPU inference (Numba + hand-emitted LLVM IR).

Weights: llama.cpp Q4_1, Q4_0 and Q8_0.  Activations: quantized per token and per
32-element block to int8, like llama.cpp's q8_1.

Exactness contract
------------------
For a given weight matrix and token, the float32 output is bit-identical whatever
the batch size M, the token tiling, the number of threads, and whichever kernel
runs (the SIMD intrinsic, with or without VNNI, or the scalar fallback).  It holds
because:

* the 16 lanes of a vector are 16 *output rows*, so there is no horizontal
  reduction; every row is one sequential chain over the K blocks;
* the integer dot product of a block is exact (any summation order gives the
  same int32), and converting it to float32 is exact (|isum| < 2**24);
* the float part is a fixed sequence of plain fmul/fadd (no fastmath, no
  contraction to FMA), the same in the vector IR and in the scalar code;
* a token's chain never depends on the other tokens of its tile.

Per K block k of a row (d_w, m_w: weight scale and min; d_x, s_x: activation scale
and integer sum of the block; dxs = d_x * float32(s_x), computed once per token):

    Q4_1:  acc = acc + (float32(sum(q*qx)) * (d_w*d_x) + m_w*dxs)
    Q4_0:  acc = acc +  float32(sum(q*qx) - 8*s_x) * (d_w*d_x)
    Q8_0:  acc = acc +  float32(sum(u*qx) - 128*s_x) * (d_w*d_x),  u = q + 128

Packed layout (see pack_*): rows in groups of 16; per (group g, block k) one
contiguous record, records ordered g-major so that one row group streams
sequentially through memory:

    Q4_1: 256 B quants | 16 x fp16 d | 16 x fp16 m      = 320 B (16 rows x 20 B, as GGUF)
    Q4_0: 256 B quants | 16 x fp16 d                    = 288 B
    Q8_0: 512 B quants | 16 x fp16 d                    = 544 B

A "step" s (0..7) covers K elements 4s..4s+3 of the block for all 16 rows: 64 bytes,
byte 4r+b = element 4s+b of row r.  That is exactly one vpdpbusd operand (lane r =
row r).  Q8_0 stores the 8 steps as they are (u = q+128, so the operand is
unsigned).  Q4 packs two steps per 64-byte vector: vector j holds step 2j in the low
nibbles and step 2j+1 in the high nibbles, unpacked with AND 0x0F / SHR 4.
The fp16 scales are widened in the kernel (vcvtph2ps, exact), which keeps the byte
count equal to GGUF's.

Caching: the drivers use cache=True.  The on-disk cache is keyed by CPU and source
file, NOT by the PONDER_QMM_* environment variables below: use a separate
NUMBA_CACHE_DIR when changing them.  njit code that calls the qmm_* kernels and is
itself cached should be parallel=True too (see quantize_act_auto).
"""

import os

import numpy as np
import numba
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic
from llvmlite import ir
import llvmlite.binding as llvm

QK = 32          # K elements per quantization block
RG = 16          # output rows per group = lanes of a 512-bit vector of int32/float32
TMAX = int(os.environ.get("PONDER_QMM_TMAX", 8))   # tokens sharing one weight load (measured)
PF_DIST = int(os.environ.get("PONDER_QMM_PF", 2560))  # sw prefetch distance (bytes), 0 = off; +5% cold

FMT_Q4_0, FMT_Q4_1, FMT_Q8_0 = 2, 3, 8    # ggml type ids
_QBYTES = {FMT_Q4_0: 256, FMT_Q4_1: 256, FMT_Q8_0: 512}
_BSTRIDE = {FMT_Q4_0: 288, FMT_Q4_1: 320, FMT_Q8_0: 544}
# zero point (8 for Q4_0, 128 for Q8_0's u = q + 128) removed as zp * s_x: a shift
_ZP_SHIFT = {FMT_Q4_0: 3, FMT_Q8_0: 7}
BS_Q4_0, BS_Q4_1, BS_Q8_0 = 288, 320, 544


# --------------------------------------------------------------------------------------
# CPU capability

def _host_has_vnni():
    # PONDER_QMM_NO_VNNI=1 forces the portable IR (used to test that it gives the same bits).
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
# LLVM IR for one row group x one tile of T tokens, looping over all K blocks

_i8, _i32, _i64, _f32 = ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType()
_v16i32 = ir.VectorType(_i32, 16)
_v64i8 = ir.VectorType(_i8, 64)
_v64i32 = ir.VectorType(_i32, 64)
_v16f = ir.VectorType(_f32, 16)
_v16h = ir.VectorType(ir.HalfType(), 16)


def _splat_i32(v):
    return ir.Constant(_v16i32, [v] * 16)


def _ptr(builder, addr, ty):
    return builder.inttoptr(addr, ty.as_pointer())


def _bcast_i32(builder, addr):
    # Scalar load + splat; LLVM folds it into the {1to16} memory operand of vpdpbusd.
    s = builder.load(_ptr(builder, addr, _i32), align=1)
    v = builder.insert_element(ir.Constant(_v16i32, ir.Undefined), s, ir.Constant(_i32, 0))
    return builder.shuffle_vector(v, ir.Constant(_v16i32, ir.Undefined),
                                  ir.Constant(_v16i32, [0] * 16))


def _bcast_f32(builder, addr):
    s = builder.load(_ptr(builder, addr, _f32), align=4)
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
    # Portable form: widen, multiply, add the 4 products of each lane.  Integer, so exact.
    wb = builder.zext(builder.bitcast(w, _v64i8), _v64i32)
    xb = builder.sext(builder.bitcast(x, _v64i8), _v64i32)
    p = builder.mul(wb, xb)
    parts = [builder.shuffle_vector(p, p, ir.Constant(_v16i32, [4 * i + b for i in range(16)]))
             for b in range(4)]
    s = builder.add(builder.add(parts[0], parts[1]), builder.add(parts[2], parts[3]))
    return builder.add(acc, s)


def _emit_group_tile(builder, fmt, T, vnni, w, x, dx, aux, y, nb, xs, ss, ys):
    """Emit: for k in range(nb): per token t, acc_t = acc_t + <block term>; then store.

    All arguments are i64 (addresses in bytes, strides in bytes):
      w   first record of the row group (g, k=0)
      x   qx of token 0 of the tile (int8, K per token, token stride xs)
      dx  d_x of token 0 (float32, nb per token, stride ss)
      aux dxs (float32) for Q4_1, s_x (int32) for Q4_0/Q8_0; same stride ss
      y   output of token 0, rows g*16..g*16+15 (float32, token stride ys)
    nb >= 1 is assumed (K >= 32).
    """
    bstride = _BSTRIDE[fmt]
    qbytes = _QBYTES[fmt]
    q4 = fmt in (FMT_Q4_0, FMT_Q4_1)
    fn = builder.function
    pre = builder.block
    loop = fn.append_basic_block("qmm.kloop")
    done = fn.append_basic_block("qmm.done")
    builder.branch(loop)

    builder.position_at_end(loop)
    k = builder.phi(_i64)
    k.add_incoming(ir.Constant(_i64, 0), pre)
    accs = []
    for _ in range(T):
        a = builder.phi(_v16f)
        a.add_incoming(ir.Constant(_v16f, None), pre)
        accs.append(a)

    wb = builder.add(w, builder.mul(k, ir.Constant(_i64, bstride)))
    xk = builder.add(x, builder.mul(k, ir.Constant(_i64, QK)))
    sk = builder.mul(k, ir.Constant(_i64, 4))
    xt = [builder.add(xk, builder.mul(ir.Constant(_i64, t), xs)) for t in range(T)]

    if PF_DIST:
        pf = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [_i8.as_pointer(), _i32, _i32, _i32]),
            "llvm.prefetch.p0")
        for line in range(0, bstride, 64):
            a = builder.add(wb, ir.Constant(_i64, PF_DIST + line))
            builder.call(pf, [_ptr(builder, a, _i8), ir.Constant(_i32, 0), ir.Constant(_i32, 3),
                              ir.Constant(_i32, 1)])

    # A single token has one dependent vpdpbusd chain per block; split it in two
    # (integer sums, so the split changes no bit) to halve its latency.
    nchains = 2 if T == 1 else 1
    zero = ir.Constant(_v16i32, None)
    isums = [[zero] * nchains for _ in range(T)]
    nib = _splat_i32(0x0F0F0F0F)
    step = 0
    for j in range(qbytes // 64):
        wv = builder.load(_ptr(builder, builder.add(wb, ir.Constant(_i64, 64 * j)), _v16i32), align=1)
        if q4:
            halves = [builder.and_(wv, nib), builder.and_(builder.lshr(wv, _splat_i32(4)), nib)]
        else:
            halves = [wv]
        for h in halves:
            for t in range(T):
                xb = _bcast_i32(builder, builder.add(xt[t], ir.Constant(_i64, 4 * step)))
                c = step % nchains
                isums[t][c] = _dot_u8s8(builder, vnni, isums[t][c], h, xb)
            step += 1
    assert step == 8

    dw = builder.fpext(builder.load(_ptr(builder, builder.add(wb, ir.Constant(_i64, qbytes)), _v16h),
                                    align=2), _v16f)
    if fmt == FMT_Q4_1:
        mw = builder.fpext(builder.load(_ptr(builder, builder.add(wb, ir.Constant(_i64, qbytes + 32)),
                                             _v16h), align=2), _v16f)
    new_accs = []
    for t in range(T):
        isum = isums[t][0]
        for c in range(1, nchains):
            isum = builder.add(isum, isums[t][c])
        srow = builder.add(sk, builder.mul(ir.Constant(_i64, t), ss))
        if fmt != FMT_Q4_1:
            sx = _bcast_i32(builder, builder.add(aux, srow))
            isum = builder.sub(isum, builder.shl(sx, _splat_i32(_ZP_SHIFT[fmt])))
        fi = builder.sitofp(isum, _v16f)
        dd = builder.fmul(dw, _bcast_f32(builder, builder.add(dx, srow)))
        term = builder.fmul(fi, dd)
        if fmt == FMT_Q4_1:
            term = builder.fadd(term, builder.fmul(mw, _bcast_f32(builder, builder.add(aux, srow))))
        new_accs.append(builder.fadd(accs[t], term))

    k1 = builder.add(k, ir.Constant(_i64, 1))
    body_end = builder.block
    k.add_incoming(k1, body_end)
    for a, na in zip(accs, new_accs):
        a.add_incoming(na, body_end)
    builder.cbranch(builder.icmp_signed("<", k1, nb), loop, done)

    builder.position_at_end(done)
    for t in range(T):
        yt = builder.add(y, builder.mul(ir.Constant(_i64, t), ys))
        builder.store(new_accs[t], _ptr(builder, yt, _v16f), align=4)


def _make_kernel(fmt, T, vnni=HAS_VNNI):
    @intrinsic
    def _kern(typingctx, w, x, dx, aux, y, nb, xs, ss, ys):
        argtys = (w, x, dx, aux, y, nb, xs, ss, ys)
        if not all(isinstance(a, types.Integer) for a in argtys):
            return None
        sig = types.void(*argtys)

        def codegen(context, builder, signature, args):
            vals = [context.cast(builder, v, t, types.int64) for v, t in zip(args, argtys)]
            _emit_group_tile(builder, fmt, T, vnni, *vals)
            return context.get_dummy_value()

        return sig, codegen

    return _kern


# Module-level so that the drivers below can be cached (cache=True).
_k41_1, _k41_2, _k41_4, _k41_T = (_make_kernel(FMT_Q4_1, t) for t in (1, 2, 4, TMAX))
_k40_1, _k40_2, _k40_4, _k40_T = (_make_kernel(FMT_Q4_0, t) for t in (1, 2, 4, TMAX))
_k80_1, _k80_2, _k80_4, _k80_T = (_make_kernel(FMT_Q8_0, t) for t in (1, 2, 4, TMAX))


# --------------------------------------------------------------------------------------
# Drivers: parallel over row groups, token tiles inside (weights of one group, <= a few
# KB per K block row, stay in L1 while the tiles reuse them).
# Tiles are TMAX, then 4, 2, 1 for the tail: the per-token result does not depend on it.

@njit(parallel=True, cache=True)
def qmm_q4_1(w, qx, dx, dxs, y):
    """y[t, :] = W qx[t]  for Q4_1 packed w (uint8 [G, nb, 320]); y float32 [M, G*16]."""
    M = qx.shape[0]
    G, nb = w.shape[0], w.shape[1]
    wa = np.int64(w.ctypes.data)
    xa = np.int64(qx.ctypes.data)
    da = np.int64(dx.ctypes.data)
    aa = np.int64(dxs.ctypes.data)
    ya = np.int64(y.ctypes.data)
    xs, ss, ys = np.int64(qx.strides[0]), np.int64(dx.strides[0]), np.int64(y.strides[0])
    for g in prange(G):
        wg = wa + np.int64(g) * nb * BS_Q4_1
        yg = ya + np.int64(g) * (RG * 4)
        t = np.int64(0)
        while M - t >= TMAX:
            _k41_T(wg, xa + t * xs, da + t * ss, aa + t * ss, yg + t * ys, nb, xs, ss, ys)
            t += TMAX
        if M - t >= 4:
            _k41_4(wg, xa + t * xs, da + t * ss, aa + t * ss, yg + t * ys, nb, xs, ss, ys)
            t += 4
        if M - t >= 2:
            _k41_2(wg, xa + t * xs, da + t * ss, aa + t * ss, yg + t * ys, nb, xs, ss, ys)
            t += 2
        if M - t >= 1:
            _k41_1(wg, xa + t * xs, da + t * ss, aa + t * ss, yg + t * ys, nb, xs, ss, ys)


@njit(parallel=True, cache=True)
def qmm_q4_0(w, qx, dx, sx, y):
    """Q4_0 packed w (uint8 [G, nb, 288]); sx = int32 activation block sums."""
    M = qx.shape[0]
    G, nb = w.shape[0], w.shape[1]
    wa = np.int64(w.ctypes.data)
    xa = np.int64(qx.ctypes.data)
    da = np.int64(dx.ctypes.data)
    aa = np.int64(sx.ctypes.data)
    ya = np.int64(y.ctypes.data)
    xs, ss, ys = np.int64(qx.strides[0]), np.int64(dx.strides[0]), np.int64(y.strides[0])
    for g in prange(G):
        wg = wa + np.int64(g) * nb * BS_Q4_0
        yg = ya + np.int64(g) * (RG * 4)
        t = np.int64(0)
        while M - t >= TMAX:
            _k40_T(wg, xa + t * xs, da + t * ss, aa + t * ss, yg + t * ys, nb, xs, ss, ys)
            t += TMAX
        if M - t >= 4:
            _k40_4(wg, xa + t * xs, da + t * ss, aa + t * ss, yg + t * ys, nb, xs, ss, ys)
            t += 4
        if M - t >= 2:
            _k40_2(wg, xa + t * xs, da + t * ss, aa + t * ss, yg + t * ys, nb, xs, ss, ys)
            t += 2
        if M - t >= 1:
            _k40_1(wg, xa + t * xs, da + t * ss, aa + t * ss, yg + t * ys, nb, xs, ss, ys)


@njit(parallel=True, cache=True)
def qmm_q8_0(w, qx, dx, sx, y):
    """Q8_0 packed w (uint8 [G, nb, 544]); sx = int32 activation block sums."""
    M = qx.shape[0]
    G, nb = w.shape[0], w.shape[1]
    wa = np.int64(w.ctypes.data)
    xa = np.int64(qx.ctypes.data)
    da = np.int64(dx.ctypes.data)
    aa = np.int64(sx.ctypes.data)
    ya = np.int64(y.ctypes.data)
    xs, ss, ys = np.int64(qx.strides[0]), np.int64(dx.strides[0]), np.int64(y.strides[0])
    for g in prange(G):
        wg = wa + np.int64(g) * nb * BS_Q8_0
        yg = ya + np.int64(g) * (RG * 4)
        t = np.int64(0)
        while M - t >= TMAX:
            _k80_T(wg, xa + t * xs, da + t * ss, aa + t * ss, yg + t * ys, nb, xs, ss, ys)
            t += TMAX
        if M - t >= 4:
            _k80_4(wg, xa + t * xs, da + t * ss, aa + t * ss, yg + t * ys, nb, xs, ss, ys)
            t += 4
        if M - t >= 2:
            _k80_2(wg, xa + t * xs, da + t * ss, aa + t * ss, yg + t * ys, nb, xs, ss, ys)
            t += 2
        if M - t >= 1:
            _k80_1(wg, xa + t * xs, da + t * ss, aa + t * ss, yg + t * ys, nb, xs, ss, ys)


# --------------------------------------------------------------------------------------
# Activation quantization (llama.cpp q8_1 semantics, but s_x kept as an exact int32)

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
                v = x[t, k * QK + i] / d          # float32 division
                # round half away from zero; done in float64 so that |v| + 0.5 is exact
                r = np.floor(abs(np.float64(v)) + 0.5)
                q = np.int32(r) if v >= 0 else -np.int32(r)
                qx[t, k * QK + i] = q
                s += q
        dx[t, k] = d
        sx[t, k] = s
        dxs[t, k] = d * np.float32(s)


@njit(cache=True)
def quantize_act(x, qx, dx, dxs, sx):
    """x float32 [M, K] -> qx int8 [M, K], dx/dxs float32 [M, K//32], sx int32 [M, K//32].
    Serial: for decode (M = 1) a parallel launch would cost more than the work."""
    for t in range(x.shape[0]):
        _quantize_token(x, qx, dx, dxs, sx, t)


@njit(parallel=True, cache=True)
def quantize_act_par(x, qx, dx, dxs, sx):
    """Same result as quantize_act, parallel over tokens (for M >= 4 or so)."""
    for t in prange(x.shape[0]):
        _quantize_token(x, qx, dx, dxs, sx, t)


# parallel=True although it has no prange: a *cached non-parallel* caller of a parallel
# function segfaults when NUMBA_NUM_THREADS changes between runs (numba #8578, #4807).
@njit(parallel=True, cache=True)
def quantize_act_auto(x, qx, dx, dxs, sx):
    """Serial for small M, parallel otherwise (callable from other njit code)."""
    if x.shape[0] < 4:
        quantize_act(x, qx, dx, dxs, sx)
    else:
        quantize_act_par(x, qx, dx, dxs, sx)


class QAct:
    """Quantized activations of M tokens."""
    __slots__ = ("qx", "dx", "dxs", "sx")

    def __init__(self, M, K):
        nb = K // QK
        self.qx = np.empty((M, K), np.int8)
        self.dx = np.empty((M, nb), np.float32)
        self.dxs = np.empty((M, nb), np.float32)
        self.sx = np.empty((M, nb), np.int32)


def quantize(x, out=None):
    x = np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32)
    M, K = x.shape
    if K % QK:
        raise ValueError("K must be a multiple of 32")
    a = out if out is not None else QAct(M, K)
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


def encode_gguf(fmt, q, d, m=None):
    """Inverse of decode_gguf (tests and synthetic models)."""
    rows, K = q.shape
    nb = K // QK
    d16 = np.asarray(d, np.float16).reshape(rows, nb, 1).view(np.uint8)
    if fmt == FMT_Q8_0:
        return np.concatenate([d16, q.astype(np.int8).view(np.uint8).reshape(rows, nb, 32)], 2).ravel()
    qb = q.astype(np.uint8).reshape(rows, nb, 32)
    qs = qb[:, :, :16] | (qb[:, :, 16:] << 4)
    parts = [d16]
    if fmt == FMT_Q4_1:
        parts.append(np.asarray(m, np.float16).reshape(rows, nb, 1).view(np.uint8))
    parts.append(qs)
    return np.concatenate(parts, 2).ravel()


def from_gguf(fmt, raw, rows, K):
    q, d, m = decode_gguf(fmt, raw, rows, K)
    return pack(fmt, q, d, m)


# --------------------------------------------------------------------------------------
# Public entry points

def matmul(W, a, out=None):
    """y [M, W.rows] float32 = W . x for quantized activations a (QAct from quantize())."""
    M = a.qx.shape[0]
    rows_p = W.buf.shape[0] * RG
    y = out if out is not None else np.empty((M, rows_p), np.float32)
    if W.fmt == FMT_Q4_1:
        qmm_q4_1(W.buf, a.qx, a.dx, a.dxs, y)
    elif W.fmt == FMT_Q8_0:
        qmm_q8_0(W.buf, a.qx, a.dx, a.sx, y)
    else:
        qmm_q4_0(W.buf, a.qx, a.dx, a.sx, y)
    return y[:, :W.rows]


# --------------------------------------------------------------------------------------
# Scalar fallback: same packed buffer, same float32 op order; the bit-exact reference.

_F16_LUT = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


@njit(parallel=True, cache=True)
def qmm_scalar(fmt, w, qx, dx, dxs, sx, y, lut):
    M = qx.shape[0]
    G, nb = w.shape[0], w.shape[1]
    q4 = fmt != FMT_Q8_0
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
                            isum += (v & 15) * np.int32(qx[t, k * QK + 8 * j + b])
                            isum += (v >> 4) * np.int32(qx[t, k * QK + 8 * j + 4 + b])
                else:
                    for s in range(8):
                        for b in range(4):
                            isum += np.int32(rec[64 * s + 4 * lane + b]) * np.int32(qx[t, k * QK + 4 * s + b])
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
    qmm_scalar(W.fmt, W.buf, a.qx, a.dx, a.dxs, a.sx, y, _F16_LUT)
    return y[:, :W.rows]


# --------------------------------------------------------------------------------------
# Float64 reference and synthetic quantizers (tests)

def dequantize(fmt, q, d, m=None):
    nb = q.shape[1] // QK
    d64 = np.repeat(np.asarray(d, np.float16).astype(np.float64), QK, axis=1)
    if fmt == FMT_Q4_1:
        return d64 * q.astype(np.float64) + np.repeat(np.asarray(m, np.float16).astype(np.float64), QK, axis=1)
    if fmt == FMT_Q4_0:
        return d64 * (q.astype(np.float64) - 8.0)
    return d64 * q.astype(np.float64)


def reference(fmt, q, d, m, x):
    """float64 y = dequant(W) @ x for x [M, K] (exact activations)."""
    return np.asarray(x, np.float64) @ dequantize(fmt, q, d, m).T


def quantize_weights(fmt, w):
    """float [rows, K] -> (q, d, m) with llama.cpp's reference quantizers."""
    rows, K = w.shape
    b = w.astype(np.float32).reshape(rows, K // QK, QK)
    if fmt == FMT_Q4_1:
        mn, mx = b.min(2), b.max(2)
        d = (mx - mn) / 15
        idv = np.where(d > 0, 1 / np.where(d > 0, d, 1), 0)
        q = np.clip(np.floor((b - mn[..., None]) * idv[..., None] + 0.5), 0, 15).astype(np.uint8)
        return q.reshape(rows, K), d.astype(np.float16), mn.astype(np.float16)
    if fmt == FMT_Q4_0:
        i = np.argmax(np.abs(b), 2)
        mxv = np.take_along_axis(b, i[..., None], 2)[..., 0]
        d = mxv / -8
        idv = np.where(d != 0, 1 / np.where(d != 0, d, 1), 0)
        q = np.clip(np.floor(b * idv[..., None] + 8.5), 0, 15).astype(np.uint8)
        return q.reshape(rows, K), d.astype(np.float16), None
    amax = np.abs(b).max(2)
    d = amax / 127
    idv = np.where(d > 0, 1 / np.where(d > 0, d, 1), 0)
    q = np.round(b * idv[..., None]).astype(np.int8)
    return q.reshape(rows, K), d.astype(np.float16), None
