"""The sampler's kernels on the native runtime: the twins of kernels/sampling_numba.py's max_,
weights, walk and kept_total (same signatures, same bits: the IR and its contract are in ops_emit.py).

engine/sampler.py runs these when the native runtime is on (native.active), the Numba ones
(the reference) otherwise.  Each is one serial entry of the "ops" unit (ops_native.unit()); a
scalar result comes back through a small array.
"""

from __future__ import annotations

import numpy as np

from ponder.kernels import ops_native

_F32 = np.dtype(np.float32)


def _vector(x, name):
    """Check that x is what the IR reads: a contiguous 1-D float32 array (a call's work is a whole
    vocabulary, so the check is cheap next to it)."""
    if x.dtype != _F32 or x.ndim != 1 or not x.flags.c_contiguous:
        raise ValueError(f"{name}: a contiguous 1-D float32 array wanted, got {x.dtype} {x.shape}")


def max_(x):
    """sampling_numba.max_: the largest of x (float32; -inf for an empty x; NaNs never win)."""
    _vector(x, "x")
    u = ops_native.unit()
    res = np.empty(1, np.float32)
    u.call(u.entry["max"], u.state, 1, x, len(x), res)
    return float(res[0])   # as Numba returns a float32


def weights(logits, inv_temp, out):
    """sampling_numba.weights: out[k] = exp((logits[k] - max) * inv_temp) in float32; returns their
    float64 sum.  inv_temp must be a numpy.float32 (as the sampler passes it: Numba would compute
    in float64 for a Python float, which this kernel does not)."""
    if type(inv_temp) is not np.float32:
        raise TypeError(f"inv_temp: a numpy.float32 wanted, got {type(inv_temp).__name__}")
    _vector(logits, "logits"), _vector(out, "out")
    if len(out) < len(logits):
        raise ValueError("weights: out is shorter than logits")
    u = ops_native.unit()
    res = np.empty(1, np.float64)
    u.call(u.entry["weights"], u.state, 1, logits, len(logits), inv_temp, out, res)
    return float(res[0])


def walk(weights, total, target, min_w):
    """sampling_numba.walk: the first id whose running weight (those below min_w skipped) passes target,
    else the last kept id (-1: none kept).  total is unused, as in the Numba kernel."""
    _vector(weights, "weights")
    u = ops_native.unit()
    res = np.empty(1, np.int64)
    u.call(u.entry["walk"], u.state, 1, weights, len(weights), float(target), float(min_w), res)
    return int(res[0])


def kept_total(weights, min_w):
    """sampling_numba.kept_total: the float64 sum of the weights >= min_w, in id order."""
    _vector(weights, "weights")
    u = ops_native.unit()
    res = np.empty(1, np.float64)
    u.call(u.entry["kept_total"], u.state, 1, weights, len(weights), float(min_w), res)
    return float(res[0])
