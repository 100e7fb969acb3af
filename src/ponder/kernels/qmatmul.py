"""Quantized matrix products y = W x for CPU inference: the public API and the dispatch.

Weights: llama.cpp Q4_1, Q4_0 and Q8_0, packed at load for one back end
(qmm_layout.pack; the back end's lane count fixes the layout).  Activations are
quantized per token and 32-block (act_quant: q8, or the default 15-bit q16).  The
kernels are generated (qmm_emit) per (instruction set, format, activation bits):
natively every variant of the set at once (about 2 s, cached), for Numba lazily on
first use; every back end gives
the same bits (the contract is in qmm_emit's docstring; qmm_oracle is the scalar
reference).

API
---
``from_gguf(fmt, raw, rows, K, isa=None) -> QMatrix`` (packed for isa, default the
process's: kernels.isa.current()); ``quantize(x, out=None, bits=16) -> QAct``;
``matmul(W, a, out=None) -> y [M, rows]``; ``linear16(W, x)`` (quantize and multiply in
one call, the same bits); ``matmul_scalar(W, a)`` (the oracle);
``kernel(isa, fmt, bits)`` (the compiled driver, for warm-up).

Where they run: on the native runtime (kernels/native, through qmm_native: objects compiled by
llvmlite and cached under $PONDER_HOME/kernels/, ponder's own thread pool) when `native.active`
(the default; PONDER_NATIVE=0 turns it off) or the caller says so (`on_native`: a model decides
for all its products, model/kernel_set.py), else on Numba drivers (qmm_numba.py).
The Numba drivers are made from two templates with a
distinct name per (back end, format, bits) and a hash of the kernel sources, so that Numba's
on-disk cache (cache=True, keyed by name, CPU and the template's file) never loads a kernel
generated for another instruction set or by older emitter code.  Both give the same bits.

Speed, SmolLM2-135M weight products (30 layers x 7 Q4_1 + Q8_0 head 49152x576, with
the activation quantization; 2 threads, avx512_vnni, median of 7 on a shared
machine, so +-10%): q16 step time 4.2 ms at M=1, 9.9 ms at M=16, 134 ms at M=256
(q8: 4.0, 7.6, 86 ms).  Decode is bound by the weight bandwidth, so q16 costs ~nothing
there; batched it is bound by the dot products, of which it runs twice as many.
Accuracy (relative L2 error of an output row against float64, SmolLM2 shapes): q8
median 5.3e-3, q16 median 4.1e-5.
"""

from __future__ import annotations

import numpy as np

from ponder.kernels import native, qmm_native
from ponder.kernels.act_quant import DEFAULT_BITS, Q16_MAX, QAct, quantize  # noqa: F401
from ponder.kernels.qmm_layout import (FMT_NAMES, FMT_Q4_0, FMT_Q4_1, FMT_Q8_0, QK, QMatrix,  # noqa: F401
                                       decode_gguf, from_gguf, pack)



def kernel(isa: str, fmt: int, bits: int):
    """The compiled Numba product driver for (instruction set, format, activation bits) (qmm_numba)."""
    from ponder.kernels import qmm_numba

    return qmm_numba.kernel(isa, fmt, bits)


def matmul_scalar(W, a, out=None):
    """The scalar oracle (qmm_oracle): y = W . a, the bits every back end gives."""
    from ponder.kernels.qmm_oracle import matmul_scalar as oracle

    return oracle(W, a, out)


def linear16(W, x, on_native: bool | None = None):
    """y [M, W.rows] = W . x for float32 x [M, K], with 15-bit activations, in one call.
    on_native: run on the native runtime (None: if native.active), else on a Numba driver."""
    if W.isa == "scalar":
        return matmul_scalar(W, quantize(x, bits=16))
    if native.active if on_native is None else on_native:
        if x.dtype != np.float32 or x.ndim != 2 or x.strides[1] != 4:
            x = np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32)
        return qmm_native.linear16(W, x)[:, :W.rows]
    from ponder.kernels import qmm_numba

    y = np.empty((x.shape[0], W.buf.shape[0] * W.lanes), np.float32)
    qmm_numba.linear16_driver(W.isa, W.fmt)(x, W.buf, y)
    return y[:, :W.rows]


def matmul(W, a, out=None, on_native: bool | None = None):
    """y [M, W.rows] float32 = W . x for quantized activations a (QAct from quantize()); on_native
    as linear16's."""
    if W.isa == "scalar":
        return matmul_scalar(W, a, out)
    M = a.qx.shape[0]
    y = out if out is not None else np.empty((M, W.buf.shape[0] * W.lanes), np.float32)
    if native.active if on_native is None else on_native:
        return qmm_native.matmul(W, a, y)[:, :W.rows]
    ql = a.ql if a.bits == 16 else a.qx
    kernel(W.isa, W.fmt, a.bits)(W.buf, a.qx, ql, a.dx, a.dxs, a.sx, y)
    return y[:, :W.rows]
