"""The activation quantizers (q8, q16) as Numba kernels: the reference of the native IR items
(act_quant_emit.py) and the path when the native runtime is off.  act_quant.py says what they compute.

All are ISA-independent Numba (cache=True).  A *cached non-parallel* njit caller of a
parallel function segfaults when NUMBA_NUM_THREADS differs from the process that wrote the
cache (numba #8578, #4807): make such callers parallel=True too (the *_auto quantizers
are, without a prange, for that reason).
"""

import warnings

import numpy as np
from numba import njit, prange
from numba.core.errors import NumbaPerformanceWarning

from ponder.kernels import numba_setup
from ponder.kernels.act_quant import Q8_MAX, Q16_MAX
from ponder.kernels.qmm_layout import QK

numba_setup.prepare()

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
