"""Activation quantization for the integer-path products, per token and per 32-element block.

* q8  (bits=8): int8 q = round(x/d), d = amax/127, exactly llama.cpp's q8_1.
* q16 (bits=16, the default): a 15-bit integer q in [-16383, 16383], d = amax/16383,
  stored as two int8 halves q = 128*qh + ql with qh = sign(q) * (|q| >> 7) and
  ql = sign(q) * (|q| & 127), both in [-127, 127].  About 130x less activation
  error than q8.

Every value a kernel sees is in [-127, 127], never -128: the AVX2 back end moves a
Q8_0 weight's sign onto the activation (sign(-128) would wrap) and bounds its int16
sums with it.  s_x, the integer sum of a block's q, is kept exactly in int32
(llama.cpp's q8_1 stores it as a float) so that zero-point corrections stay in the
integer sum; dxs = d * float32(s_x).

All functions are ISA-independent Numba (cache=True).  A *cached non-parallel* njit
caller of a parallel function segfaults when NUMBA_NUM_THREADS differs from the
process that wrote the cache (numba #8578, #4807): make such callers parallel=True
too (the *_auto quantizers are, without a prange, for that reason).
"""

import warnings

import numpy as np
from numba import njit, prange
from numba.core.errors import NumbaPerformanceWarning

from ponder.kernels.qmm_layout import QK

DEFAULT_BITS = 16
Q8_MAX = 127
Q16_MAX = 16383  # 2**14 - 1: |q| >> 7 <= 127

# parallel=True without a prange is deliberate here (see the docstring on cached callers).
warnings.filterwarnings("ignore", message="(?s).*no transformation for parallel execution was possible",
                        category=NumbaPerformanceWarning)


@njit(inline="always")
def _round_half_away(v):
    # in float64 so that |v| + 0.5 is exact
    r = np.int32(np.floor(abs(np.float64(v)) + 0.5))
    return r if v >= 0 else -r


@njit(cache=True)
def _quantize_token(x, qh, ql, dx, dxs, sx, t, wide):
    """Token t of x into (qh, ql) halves (wide) or int8 qh; a function, not inlined into its
    four callers, so that it is compiled once."""
    K = x.shape[1]
    qmax = np.int32(Q16_MAX) if wide else np.int32(Q8_MAX)
    for k in range(K // QK):
        amax = np.float32(0.0)
        for i in range(QK):
            a = abs(x[t, k * QK + i])
            if a > amax:
                amax = a
        d = amax / np.float32(qmax)
        s = np.int32(0)
        if d == np.float32(0.0):
            for i in range(QK):
                qh[t, k * QK + i] = 0
                if wide:
                    ql[t, k * QK + i] = 0
        else:
            for i in range(QK):
                q = _round_half_away(x[t, k * QK + i] / d)      # float32 division
                # a subnormal d is inexact enough to push |x/d| past the range
                q = min(max(q, -qmax), qmax)
                if wide:
                    a = abs(q)
                    h, lo = a >> 7, a & 127
                    qh[t, k * QK + i] = h if q >= 0 else -h
                    ql[t, k * QK + i] = lo if q >= 0 else -lo
                else:
                    qh[t, k * QK + i] = q
                s += q
        dx[t, k] = d
        sx[t, k] = s
        dxs[t, k] = d * np.float32(s)


@njit(cache=True)
def quantize_act(x, qx, dx, dxs, sx):
    """q8: x float32 [M, K] -> qx int8 [M, K], dx/dxs float32 [M, K//32], sx int32 [M, K//32].
    Serial: for decode (M = 1) a parallel launch would cost more than the work."""
    for t in range(x.shape[0]):
        _quantize_token(x, qx, qx, dx, dxs, sx, t, False)


@njit(parallel=True, cache=True)
def quantize_act_par(x, qx, dx, dxs, sx):
    for t in prange(x.shape[0]):
        _quantize_token(x, qx, qx, dx, dxs, sx, t, False)


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
        _quantize_token(x, qh, ql, dx, dxs, sx, t, True)


@njit(parallel=True, cache=True)
def quantize_act16_par(x, qh, ql, dx, dxs, sx):
    for t in prange(x.shape[0]):
        _quantize_token(x, qh, ql, dx, dxs, sx, t, True)


@njit(parallel=True, cache=True)
def quantize_act16_auto(x, qh, ql, dx, dxs, sx):
    if x.shape[0] < 4:
        quantize_act16(x, qh, ql, dx, dxs, sx)
    else:
        quantize_act16_par(x, qh, ql, dx, dxs, sx)


class QAct:
    """Quantized activations of M tokens.  bits=8: qx holds the int8 quants, ql is
    None.  bits=16: qx holds the high halves qh, ql the low halves."""
    __slots__ = ("bits", "qx", "ql", "dx", "dxs", "sx", "_addrs")

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
        self._addrs = None

    def addresses(self, address):
        """(qh, ql, dx, dxs, sx) data addresses (ql = qh in q8 mode), from address(array), once."""
        if self._addrs is None:
            ql = self.ql if self.bits == 16 else self.qx
            self._addrs = tuple(map(address, (self.qx, ql, self.dx, self.dxs, self.sx)))
        return self._addrs

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
