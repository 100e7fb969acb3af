"""The scalar oracle of the integer-path products: plain Numba over the packed buffer.

The same integers and the same float32 operation order as the generated kernels
(see qmm_emit's contract), one output element at a time, for any lane count L.  It is
what every back end is tested against bit for bit, and the product of PONDER_ISA=scalar.
"""

import numpy as np
from numba import njit, prange

from ponder.kernels import numba_setup
from ponder.kernels.qmm_layout import FMT_Q4_0, FMT_Q4_1, FMT_Q8_0, QK

numba_setup.prepare()

_F16_LUT = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


@njit(inline="always")
def _xq(qx, ql, wide, t, i):
    v = np.int32(qx[t, i])
    if wide:
        v = v * np.int32(128) + np.int32(ql[t, i])
    return v


@njit(inline="always")
def _f16(rec, at, lut):
    return lut[np.int32(rec[at]) | (np.int32(rec[at + 1]) << 8)]


@njit(parallel=True, cache=True)
def qmm_scalar(fmt, bits, L, w, qx, ql, dx, dxs, sx, y, lut):
    """y[t, r] for packed w (uint8 [G, nb, record]) of lane count L; ql is ignored when bits == 8."""
    M = qx.shape[0]
    G, nb = w.shape[0], w.shape[1]
    q4 = fmt != FMT_Q8_0
    wide = bits == 16
    qbytes = 16 * L if q4 else 32 * L
    zp = np.int32(8) if fmt == FMT_Q4_0 else np.int32(128)
    for r in prange(G * L):
        g, lane = r // L, r % L
        for t in range(M):
            acc = np.float32(0.0)
            for k in range(nb):
                rec = w[g, k]
                isum = np.int32(0)
                if q4:
                    for j in range(4):
                        for b in range(4):
                            v = np.int32(rec[4 * L * j + 4 * lane + b])
                            isum += (v & 15) * _xq(qx, ql, wide, t, k * QK + 8 * j + b)
                            isum += (v >> 4) * _xq(qx, ql, wide, t, k * QK + 8 * j + 4 + b)
                else:
                    for s in range(8):
                        for b in range(4):
                            u = np.int32(rec[4 * L * s + 4 * lane + b])
                            isum += u * _xq(qx, ql, wide, t, k * QK + 4 * s + b)
                dw = _f16(rec, qbytes + 2 * lane, lut)
                if fmt == FMT_Q4_1:
                    mw = _f16(rec, qbytes + 2 * L + 2 * lane, lut)
                    acc = acc + (np.float32(isum) * (dw * dx[t, k]) + mw * dxs[t, k])
                else:
                    isum -= zp * sx[t, k]
                    acc = acc + np.float32(isum) * (dw * dx[t, k])
            y[t, r] = acc


def matmul_scalar(W, a, out=None):
    """The oracle's y [M, W.rows] for a QMatrix W of any back end and a QAct a."""
    M = a.qx.shape[0]
    rows_p = W.buf.shape[0] * W.lanes
    y = out if out is not None else np.empty((M, rows_p), np.float32)
    ql = a.ql if a.bits == 16 else a.qx
    qmm_scalar(W.fmt, a.bits, W.lanes, W.buf, a.qx, ql, a.dx, a.dxs, a.sx, y, _F16_LUT)
    return y[:, :W.rows]
