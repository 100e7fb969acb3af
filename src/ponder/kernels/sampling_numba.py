"""The sampler's kernels as Numba kernels: the reference of their native twins (sampling_native.py,
ops_emit.py) and the path when the native runtime is off.  engine/sampler.py says what they are for.

max_ reduces in 16 lanes, weights sums in 8 interleaved float64 partial sums: fixed orders, so the
bits are the same on every machine, and as fast as a vectorized reduction.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ponder.kernels import numba_setup
from ponder.kernels.attention import exp_neg

numba_setup.prepare()


@njit(cache=True)
def max_(x):
    """Max in 16 lanes: max is exact in any order, and lanes let it vectorize."""
    lanes = np.full(16, -np.inf, np.float32)
    body = len(x) - len(x) % 16
    for k in range(0, body, 16):
        for j in range(16):
            lanes[j] = max(lanes[j], x[k + j])
    m = lanes.max()
    for k in range(body, len(x)):
        m = max(m, x[k])
    return m


@njit(cache=True)
def weights(logits, inv_temp, out):
    """out[k] = exp((logits[k] - max) / T) in float32; returns their float64 sum.

    The sum runs in 8 interleaved partial sums combined in a fixed order: one
    fixed reduction order, as fast as a vectorized one.
    """
    m = max_(logits)
    n = len(logits)
    for k in range(n):
        out[k] = exp_neg((logits[k] - m) * inv_temp)
    lanes = np.zeros(8, np.float64)
    body = n - n % 8
    for k in range(0, body, 8):
        for j in range(8):
            lanes[j] += out[k + j]
    total = 0.0
    for j in range(8):
        total += lanes[j]
    for k in range(body, n):
        total += out[k]
    return total


@njit(cache=True)
def walk(weights, total, target, min_w):
    """The first id whose running weight (ids in order, those below min_w skipped) passes target."""
    acc = 0.0
    last = -1
    for k in range(len(weights)):
        w = weights[k]
        if w >= min_w:
            acc += w
            last = k
            if acc > target:
                return k
    return last


@njit(cache=True)
def kept_total(weights, min_w):
    total = 0.0
    for k in range(len(weights)):
        if weights[k] >= min_w:
            total += weights[k]
    return total
