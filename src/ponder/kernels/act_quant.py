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

The quantizers themselves are Numba kernels in act_quant_numba.py (the reference, imported
on first use) and IR items of the native runtime (act_quant_emit.py), the same bits.
"""

import numpy as np

from ponder.kernels.qmm_layout import QK

DEFAULT_BITS = 16
Q8_MAX = 127
Q16_MAX = 16383  # 2**14 - 1: |q| >> 7 <= 127


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
    from ponder.kernels import act_quant_numba

    if bits == 16:
        act_quant_numba.quantize_act16_auto(x, a.qx, a.ql, a.dx, a.dxs, a.sx)
    else:
        act_quant_numba.quantize_act_auto(x, a.qx, a.dx, a.dxs, a.sx)
    return a
