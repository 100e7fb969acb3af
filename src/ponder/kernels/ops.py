"""Per-token operations of the forward pass: RMSNorm (alone and after a residual add), RoPE, SiLU*mul.

These are cheap next to the matrix products, so they run on one thread: a
parallel region costs microseconds to start, more than the work itself at
decode.  For the same reason each kernel does all of one stage of a layer in one
call (bias, RoPE and the split into heads of Q, K and V; the residual add and the
next norm), and reads a stacked product's output in place, as (array, first
column): a decode step makes about 30 calls per layer fewer than one kernel per
operation would, and each call costs a few microseconds of dispatch.  Not as a
strided view: Numba cannot tell that a view's rows are unit-stride, and the loops
then do not vectorize (SiLU*mul over 256 tokens: 3.2 ms on views, 0.45 ms on the
whole array).  error_model="numpy" drops Python's zero-division check, whose branch
would stop the loops from vectorizing.  Every reduction runs in one fixed order and there is no fastmath, so a
token's result is the same bits whatever batch it is in.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ponder.kernels import numba_setup
from ponder.kernels.attention import exp_neg

numba_setup.prepare()


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
def add_rms_norm(x, y, weight, eps, out):
    """x += y (the residual add, in place), then out = rms_norm(x): the same bits as the two apart."""
    n, dim = x.shape
    for t in range(n):
        for i in range(dim):
            x[t, i] = x[t, i] + y[t, i]
    rms_norm(x, weight, eps, out)


@njit(cache=True, error_model="numpy", inline="always")
def _heads(src, col, bias, positions, cos, sin, out, rotate):
    """out[t, h, :] = src[t, col + h*d : col + (h+1)*d] + bias (if any), rotated by RoPE if
    `rotate` (the halves of each head: the rotate_half convention)."""
    n, heads, d = out.shape
    half = d // 2
    biased = len(bias) > 0
    for t in range(n):
        p = positions[t]
        for h in range(heads):
            o = h * d
            if rotate:
                for i in range(half):
                    a, b = src[t, col + o + i], src[t, col + o + i + half]
                    if biased:
                        a, b = a + bias[o + i], b + bias[o + i + half]
                    c, s = cos[p, i], sin[p, i]
                    out[t, h, i] = a * c - b * s
                    out[t, h, i + half] = b * c + a * s
            else:
                for i in range(d):
                    out[t, h, i] = src[t, col + o + i] + bias[o + i] if biased else src[t, col + o + i]


@njit(cache=True, error_model="numpy")
def qkv_heads(q_src, q_col, k_src, k_col, v_src, v_col, bq, bk, bv, positions, cos, sin, q, k, v):
    """Q, K, V split into heads, (T, heads, d), from the projections' outputs: Q is columns q_col ..
    q_col + heads*d of q_src (T, columns), and so on (one stacked product's output serves all three):
    each plus its bias (an empty array: none), then RoPE on Q and K at each token's position."""
    _heads(q_src, q_col, bq, positions, cos, sin, q, True)
    _heads(k_src, k_col, bk, positions, cos, sin, k, True)
    _heads(v_src, v_col, bv, positions, cos, sin, v, False)


@njit(cache=True, error_model="numpy")
def silu_mul(gate_src, gate_col, up_src, up_col, out):
    """out = SiLU(gate) * up, gate and up being out's width of columns of their sources from the given ones."""
    n, dim = out.shape
    one = np.float32(1.0)
    for t in range(n):
        for i in range(dim):
            g = gate_src[t, gate_col + i]
            e = exp_neg(-abs(g))  # exp(-|g|): our exp, which vectorizes and is the same on every machine
            num = one if g >= 0 else e  # a select, not a branch, so the loop vectorizes
            out[t, i] = g * (num / (one + e)) * up_src[t, up_col + i]
