"""The weight products as Numba drivers: the path when the native runtime is off (PONDER_NATIVE=0).

The drivers are made from two templates with a distinct name per (back end, format, bits)
and a hash of the kernel sources, so that Numba's on-disk cache (cache=True, keyed by name,
CPU and the template's file) never loads a kernel generated for another instruction set or
by older emitter code.  A driver runs qmm_emit's IR of one row group (as a Numba intrinsic)
over the row groups in a prange; linear16's also runs the q16 quantizer first.  The same bits
as the native entries (kernels/qmm_native.py) and the oracle (qmm_oracle.py).
"""

from __future__ import annotations

import hashlib
import pathlib
import types as pytypes

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from ponder.kernels import isa as isa_mod
from ponder.kernels import numba_setup, qmm_emit
from ponder.kernels.act_quant_numba import quantize_act16_auto
from ponder.kernels.qmm_layout import FMT_NAMES, FMT_Q4_1, QK

numba_setup.prepare()

_HERE = pathlib.Path(__file__).parent
_SOURCES = ["qmm_numba.py", "qmm_emit.py", "qmm_layout.py", "act_quant_numba.py", "llvm_ir.py"]


def _source_hash(isa: str) -> str:
    h = hashlib.sha256()
    for name in _SOURCES + sorted(p.name for p in (_HERE / "isa").glob("*.py")):
        path = _HERE / name if (_HERE / name).exists() else _HERE / "isa" / name
        h.update(path.read_bytes())
    h.update(isa.encode())
    return h.hexdigest()[:10]


@njit(inline="always")
def _a(arr):
    # ctypes.data is unsigned and numba makes uint64 + int64 a float64: hence int64
    return np.int64(arr.ctypes.data)


# Templates.  _KERN, _LANES, _Q4_1 and _QMM are globals of each generated copy (see
# _instantiate): Numba takes globals as compile-time constants.

def _qmm_template(w, qh, ql, dx, dxs, sx, y):
    """y[t, :] = W x[t] over row groups in parallel; q16 reads ql at qh + const, so their
    row strides must match (q8 passes qh twice)."""
    assert qh.strides[0] == ql.strides[0]
    G, nb, M = w.shape[0], w.shape[1], np.int64(qh.shape[0])
    rec = np.int64(w.shape[2])
    wa, xa, la, da, ya = _a(w), _a(qh), _a(ql), _a(dx), _a(y)  # noqa: F821
    aa = _a(dxs) if _Q4_1 else _a(sx)  # noqa: F821
    xs, ss, ys = np.int64(qh.strides[0]), np.int64(dx.strides[0]), np.int64(y.strides[0])
    for g in prange(G):
        _KERN(wa + np.int64(g) * nb * rec, xa, la, da, aa, ya + np.int64(g) * (_LANES * 4),  # noqa: F821
              nb, M, xs, ss, ys)


def _linear16_template(x, w, y):
    """q16-quantize x, then the product: the same two steps as quantize() + matmul(),
    so the same bits, minus two Python round trips per layer."""
    M, K = x.shape
    nb = K // QK
    qh, ql = np.empty((M, K), np.int8), np.empty((M, K), np.int8)
    dx, dxs, sx = np.empty((M, nb), np.float32), np.empty((M, nb), np.float32), np.empty((M, nb), np.int32)
    quantize_act16_auto(x, qh, ql, dx, dxs, sx)
    _QMM(w, qh, ql, dx, dxs, sx, y)  # noqa: F821


def _instantiate(template, name, **consts):
    g = dict(globals())
    g.update(consts)
    f = pytypes.FunctionType(template.__code__, g, name)
    f.__qualname__ = name
    f.__doc__ = template.__doc__
    return njit(parallel=True, cache=True)(f)


_DRIVERS: dict = {}


def kernel(isa: str, fmt: int, bits: int):
    """The compiled product driver for (instruction set, format, activation bits), made on first use."""
    key = ("qmm", isa, fmt, bits)
    if key not in _DRIVERS:
        be = isa_mod.backend(isa)
        if be is None:
            raise ValueError("the scalar instruction set has no generated kernel")
        _DRIVERS[key] = _instantiate(_qmm_template, f"qmm{bits}_{FMT_NAMES[fmt]}_{isa}_{_source_hash(isa)}",
                                     _KERN=_make_kernel(be, fmt, bits), _LANES=be.LANES, _Q4_1=fmt == FMT_Q4_1)
    return _DRIVERS[key]


def linear16_driver(isa: str, fmt: int):
    key = ("linear16", isa, fmt)
    if key not in _DRIVERS:
        _DRIVERS[key] = _instantiate(_linear16_template, f"linear16_{FMT_NAMES[fmt]}_{isa}_{_source_hash(isa)}",
                                     _QMM=kernel(isa, fmt, 16))
    return _DRIVERS[key]


def _make_kernel(be, fmt, bits):
    """An intrinsic kern(w, xh, xl, dx, aux, y, nb, M, xs, ss, ys): one row group of
    back end be, all tokens.  Addresses and strides in bytes; xl is ignored in q8 mode."""
    @intrinsic
    def _kern(typingctx, w, xh, xl, dx, aux, y, nb, M, xs, ss, ys):
        argtys = (w, xh, xl, dx, aux, y, nb, M, xs, ss, ys)
        if not all(isinstance(a, types.Integer) for a in argtys):
            return None
        sig = types.void(*argtys)

        def codegen(context, builder, signature, args):
            vals = [context.cast(builder, v, t, types.int64) for v, t in zip(args, argtys)]
            qmm_emit._emit_group(builder, be, fmt, bits, *vals)
            return context.get_dummy_value()

        return sig, codegen

    return _kern
