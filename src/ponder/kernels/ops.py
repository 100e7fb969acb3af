"""Per-token operations of the forward pass: RMSNorm, RoPE, SiLU*mul.

These are cheap next to the matrix products, so they run on one thread: a
parallel region costs microseconds to start, more than the work itself at
decode.  error_model="numpy" drops Python's zero-division check, whose branch
would stop the loops from vectorizing.  Every reduction runs in one fixed order and there is no fastmath, so a
token's result is the same bits whatever batch it is in.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ponder.kernels.attention import exp_neg


@njit(cache=True, error_model="numpy")
def rms_norm(x, weight, eps, out):
    """out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight; sums of squares in float64, in order."""
    n, dim = x.shape
    for t in range(n):
        ss = 0.0
        for i in range(dim):
            v = np.float64(x[t, i])
            ss += v * v
        inv = np.float32(1.0 / np.sqrt(ss / dim + eps))
        for i in range(dim):
            out[t, i] = (x[t, i] * inv) * weight[i]


@njit(cache=True, error_model="numpy")
def rope(x, positions, cos, sin):
    """In place, x: (T, heads, d).  Rotates the halves of each head (rotate_half convention)."""
    n, heads, d = x.shape
    half = d // 2
    for t in range(n):
        p = positions[t]
        for h in range(heads):
            for i in range(half):
                a, b = x[t, h, i], x[t, h, i + half]
                c, s = cos[p, i], sin[p, i]
                x[t, h, i] = a * c - b * s
                x[t, h, i + half] = b * c + a * s


@njit(cache=True, error_model="numpy")
def silu_mul(gate, up, out):
    n, dim = gate.shape
    one = np.float32(1.0)
    for t in range(n):
        for i in range(dim):
            g = gate[t, i]
            e = exp_neg(-abs(g))  # exp(-|g|): our exp, which vectorizes and is the same on every machine
            num = one if g >= 0 else e  # a select, not a branch, so the loop vectorizes
            out[t, i] = g * (num / (one + e)) * up[t, i]


def rope_tables(theta: float, head_dim: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin of position x inverse frequency, computed in float64 and rounded once."""
    inv_freq = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.arange(length, dtype=np.float64)[:, None] * inv_freq[None, :]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
