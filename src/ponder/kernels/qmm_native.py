"""The weight products on the native runtime: argument vectors and entries (qmatmul dispatches here).

A product is one call of an entry of the instruction set's object (qmm_emit.emit_entry),
which runs its jobs on the pool with one argument vector (qmm_emit.ARGS):
- linear16 (float input): the q16 quantizer, one token per item, then the product;
- matmul (activations already quantized): the product alone.
The product's items are contiguous chunks of row groups, one per thread.  Same bits as the
Numba drivers and the oracle (tests/test_native_runtime.py).

Python's part is kept to a few microseconds (ponder runs ~121 products per decode step): the
call goes through the runtime's builtin (native/pycall.py), which reads the arrays' addresses
itself; a weight matrix's fixed words are computed once per matrix, a QAct's addresses once
per QAct, and linear16's quantized input lives in a per-thread scratch buffer.
"""

from __future__ import annotations

import ctypes
import threading
import weakref

import numpy as np

from ponder.kernels import native, qmm_emit
from ponder.kernels.qmm_layout import FMT_Q4_1, QK

_from_buffer = ctypes.c_char.from_buffer
_addressof = ctypes.addressof


def address(a: np.ndarray) -> int:
    """The address of a C-contiguous array's data (fast path: its writable buffer)."""
    try:
        return _addressof(_from_buffer(a))
    except (TypeError, ValueError, BufferError):   # read-only or empty: the slower, general way
        return a.ctypes.data


class _Fixed:
    """A weight matrix's words of the argument vector, and its entries; made once per matrix."""
    __slots__ = ("ref", "w", "nb", "gbytes", "G", "GL", "rows", "q4_1", "linear16", "matmul", "__weakref__")

    def __init__(self, W):
        rt = native.runtime()
        self.ref = weakref.ref(W.buf)
        G, nb, rec = W.buf.shape
        self.w, self.nb, self.gbytes, self.G = address(W.buf), nb, nb * rec, G
        self.GL, self.rows, self.q4_1 = G * W.lanes, W.rows, W.fmt == FMT_Q4_1
        self.linear16 = rt.address(qmm_emit.entry_name(W.isa, W.fmt, 16, True), W.isa)
        self.matmul = {bits: rt.address(qmm_emit.entry_name(W.isa, W.fmt, bits, False), W.isa) for bits in (8, 16)}


_fixed: dict[int, _Fixed] = {}


def _of(W) -> _Fixed:
    f = _fixed.get(id(W.buf))
    if f is None or f.ref() is not W.buf:
        f = _fixed[id(W.buf)] = _Fixed(W)
        weakref.finalize(W.buf, _fixed.pop, id(W.buf), None)
    return f


_local = threading.local()


def _scratch(nbytes: int) -> int:
    """The address of this Python thread's scratch buffer of at least nbytes (the quantized input:
    used only inside one call, so one per thread is enough; grown as needed)."""
    buf = getattr(_local, "buf", None)
    if buf is None or buf[1] < nbytes:
        size = max(nbytes, 2 * buf[1] if buf else 1 << 16)
        arr = np.empty(size, np.uint8)
        buf = _local.buf = (arr, size, address(arr))
    return buf[2]


def linear16(W, x):
    """y [M, G*L] float32 (padded rows) = W . q16(x), x float32 [M, K] with contiguous rows."""
    f = _of(W)
    M, K = x.shape
    nb = f.nb
    y = np.empty((M, f.GL), np.float32)
    xh = _scratch(2 * M * K + 12 * M * nb)     # qh, ql [M, K] int8; dx, dxs, sx [M, nb]
    xl, dx = xh + M * K, xh + 2 * M * K
    dxs, sx = dx + 4 * M * nb, dx + 8 * M * nb
    native.runtime().call(f.linear16, (f.w, xh, xl, dx, dxs if f.q4_1 else sx, y, nb, M, K, 4 * nb,
                                       4 * f.GL, f.gbytes, f.G, 0, x, x.strides[0], dxs, sx),
                          native.threads())
    return y


def matmul(W, a, y):
    """y [M, G*L] = W . a for quantized activations a (act_quant.QAct, C-contiguous)."""
    f = _of(W)
    qh, ql, dx, dxs, sx = a.addresses(address)
    native.runtime().call(f.matmul[a.bits], (f.w, qh, ql, dx, dxs if f.q4_1 else sx, y, f.nb, a.qx.shape[0],
                                             a.qx.strides[0], a.dx.strides[0], y.strides[0], f.gbytes, f.G, 0),
                          native.threads())
    return y
