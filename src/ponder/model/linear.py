"""Linear layers of the fast path: a weight matrix repacked for its kernel.

Quantized weights (Q4_0, Q4_1, Q8_0) take the integer path: the activations are
quantized per 32-block.  The default is 15-bit activations held as two int8
halves ("q16", 128x more accurate than llama.cpp's int8 "q8" and as fast for
decode): each product quantizes its input and multiplies in one kernel call
(`qmatmul.linear16`), which costs less than a separate quantize pass; matrices
that read the same input (Q, K and V; gate and up) are stacked into one product
(`make_fused_linear`), so an input is still quantized once.  With
`Engine(activation_bits=8)` (llama.cpp's arithmetic) an input is quantized on
first use and shared by the products that read it.  Float weights (F32, F16,
BF16) are widened to float32 at load, which is exact, and multiply float
activations.
"""

from __future__ import annotations

import numpy as np

from ponder.kernels import qmatmul
from ponder.loading.weights import WeightTensor

_INT_FORMATS = {"Q4_0": qmatmul.FMT_Q4_0, "Q4_1": qmatmul.FMT_Q4_1, "Q8_0": qmatmul.FMT_Q8_0}


class Activations:
    """The input of one or more linear layers: float32 rows, quantized on first use.  on_native:
    whether the products run on the native runtime (None: if kernels.native.active); a model
    decides for all its products at once (model/kernel_set.py), so that two thread pools never
    take turns on the same cores."""

    def __init__(self, x: np.ndarray, bits: int = 16, on_native: bool | None = None):
        self.x = x
        self.bits = bits
        self.on_native = on_native
        self._q = None

    @property
    def q(self):
        if self._q is None:
            self._q = qmatmul.quantize(self.x, bits=self.bits)
        return self._q

    def times(self, packed) -> np.ndarray:
        """The product with a packed quantized matrix: quantize-and-multiply in one call unless already quantized."""
        if self.bits == 16 and self._q is None:
            return qmatmul.linear16(packed, self.x, self.on_native)
        return qmatmul.matmul(packed, self.q, on_native=self.on_native)


class QuantLinear:
    def __init__(self, packed):
        self.packed = packed
        self.rows, self.cols = packed.rows, packed.cols
        self.nbytes = packed.nbytes

    def __call__(self, act: Activations) -> np.ndarray:
        return act.times(self.packed)


def _quant_linear(name: str, fmt: str, rows: int, cols: int, raw, cache) -> QuantLinear:
    """The matrix packed for the kernels: from the cache if it holds it, else packed from raw() and cached."""
    packed = cache.get(name) if cache is not None else None
    if packed is None or (packed.rows, packed.cols) != (rows, cols):
        packed = qmatmul.from_gguf(_INT_FORMATS[fmt], raw(), rows, cols)
        if cache is not None:
            cache.put(name, packed)
    return QuantLinear(packed)


class FloatLinear:
    def __init__(self, t: WeightTensor):
        self.rows, self.cols = t.rows, t.cols
        self.w = np.ascontiguousarray(t.dequantize(), dtype=np.float32)
        self.nbytes = self.w.nbytes

    def __call__(self, act: Activations) -> np.ndarray:
        from ponder.kernels.float_matmul import matmul_f32   # Numba: only float models import it

        out = np.empty((act.x.shape[0], self.rows), np.float32)
        matmul_f32(self.w, act.x, out)
        return out


def make_linear(t: WeightTensor, cache=None):
    """cache: a model.weight_cache.PackedWeightCache, or None to pack afresh."""
    if t.fmt in _INT_FORMATS:
        return _quant_linear(t.name, t.fmt, t.rows, t.cols, lambda: t.data, cache)
    return FloatLinear(t)


def make_fused_linear(tensors: list[WeightTensor], cache=None):
    """One linear over several matrices that read the same input (Q/K/V, gate/up), rows stacked.

    Rows are independent, so the stacked product gives each matrix the same bits
    as its own, with one kernel launch instead of several.  Returns (linear,
    column offsets), or None when the matrices differ in format or width.
    """
    first = tensors[0]
    if any(t.fmt != first.fmt or t.cols != first.cols for t in tensors):
        return None
    name = "+".join(t.name for t in tensors)
    rows = sum(t.rows for t in tensors)
    offsets = np.cumsum([0] + [t.rows for t in tensors]).tolist()

    def stacked():
        return np.concatenate([np.asarray(t.data) for t in tensors])

    if first.fmt in _INT_FORMATS:  # a cached pack needs no stacked copy of the file's bytes
        return _quant_linear(name, first.fmt, rows, first.cols, stacked, cache), offsets
    return FloatLinear(WeightTensor(name, first.fmt, rows, first.cols, stacked())), offsets
