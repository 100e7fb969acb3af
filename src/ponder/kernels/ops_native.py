"""The forward pass's serial kernels on the native runtime: ops.py's and attention.write_kv's twins.

Same signatures and the same bits as the Numba kernels (the IR and its contract: ops_emit.py;
tests/test_ops_native.py compares them).  Each call is one entry of the "ops" unit, run on the
calling thread through the runtime's call builtin (native/pycall.py): the entries' addresses are
looked up once per process (loading the unit: from the cache, else compiled), and Python's part
is a few attribute reads, about a microsecond (a decode step makes ~150 of these calls).  Also
the home of the serial-call plumbing the sampler's twins use (sampling_native.py).

What the IR reads: float32 arrays with unit-stride rows (any row stride: a product's padded
output, read in place from a column), the 1-D and 3-D arrays C-contiguous, positions and slot
tokens int64, slot blocks and offsets int32 (those are converted when they are not).  Only the
cheap part is checked per call (a row's element stride, which rejects strided views and float64
arrays with a ValueError); the rest is the caller's contract, as the model's arrays meet it.
"""

from __future__ import annotations

import numpy as np

from ponder.kernels import native, ops_emit

_I64, _I32 = np.dtype(np.int64), np.dtype(np.int32)


class _Unit:
    """The ops unit's entries and the call that runs one: made once per process."""

    def __init__(self):
        rt = native.runtime()
        self.entry = {k: rt.address(ops_emit.entry_name(k), "ops") for k in ops_emit.ARGS}
        self.state = rt.state_address
        if rt.pycall is not None:
            self.call = rt.pycall     # call(entry, state, threads, *words)
        else:
            def call(entry, state, threads, *words):
                rt.call(entry, words, threads)
            self.call = call


_unit: _Unit | None = None


def unit() -> _Unit:
    global _unit
    if _unit is None:
        _unit = _Unit()
    return _unit


def _check_rows(*arrays) -> None:
    """The slow check, when the quick one (element stride 4) failed: raise unless every array is
    float32 with unit-stride rows, or has no row of two elements (empty arrays, one column)."""
    bad = [a for a in arrays if a.dtype != np.float32 or (a.strides[1] != 4 and a.shape[0] and a.shape[1] > 1)]
    if bad:
        raise ValueError("native ops read float32 rows of unit stride; got arrays of dtype/shape/strides "
                         + ", ".join(f"{a.dtype}/{a.shape}/{a.strides}" for a in bad))


def _as(a, dtype):
    return a if a.dtype is dtype and a.flags.c_contiguous else np.ascontiguousarray(a, dtype)


def rms_norm(x, weight, eps, out):
    """ops.rms_norm: out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight."""
    if x.strides[1] != 4 or out.strides[1] != 4:
        _check_rows(x, out)
    u = _unit or unit()
    u.call(u.entry["rms_norm"], u.state, 1, x, x.strides[0], weight, out, out.strides[0], x.shape[0], x.shape[1],
           eps)


def add_rms_norm(x, y, weight, eps, out):
    """ops.add_rms_norm: x += y in place, then out = rms_norm(x)."""
    if x.strides[1] != 4 or y.strides[1] != 4 or out.strides[1] != 4:
        _check_rows(x, y, out)
    u = _unit or unit()
    u.call(u.entry["add_rms_norm"], u.state, 1, x, x.strides[0], y, y.strides[0], weight, out, out.strides[0],
           x.shape[0], x.shape[1], eps)


def qkv_heads(q_src, q_col, k_src, k_col, v_src, v_col, bq, bk, bv, positions, cos, sin, q, k, v):
    """ops.qkv_heads: Q, K, V split into heads from the projections' outputs, plus bias, RoPE on Q and K."""
    if q_src.strides[1] != 4 or k_src.strides[1] != 4 or v_src.strides[1] != 4:
        _check_rows(q_src, k_src, v_src)
    n, hq, d = q.shape
    u = _unit or unit()
    u.call(u.entry["qkv_heads"], u.state, 1, q_src, q_src.strides[0], q_col, k_src, k_src.strides[0], k_col,
           v_src, v_src.strides[0], v_col, bq, len(bq), bk, len(bk), bv, len(bv), _as(positions, _I64),
           cos, sin, cos.strides[0], q, k, v, n, hq, k.shape[1], d)


def silu_mul(gate_src, gate_col, up_src, up_col, out):
    """ops.silu_mul: out = SiLU(gate) * up, read in place from columns of their sources."""
    if gate_src.strides[1] != 4 or up_src.strides[1] != 4 or out.strides[1] != 4:
        _check_rows(gate_src, up_src, out)
    u = _unit or unit()
    u.call(u.entry["silu_mul"], u.state, 1, gate_src, gate_src.strides[0], gate_col, up_src, up_src.strides[0],
           up_col, out, out.strides[0], out.shape[0], out.shape[1])


def write_kv(k_pool, v_pool, k, v, slot_token, slot_block, slot_offset):
    """attention.write_kv: slot s receives token slot_token[s]'s K/V at (slot_block[s], slot_offset[s])."""
    _, heads, d = k.shape
    u = _unit or unit()
    u.call(u.entry["write_kv"], u.state, 1, k_pool, v_pool, k, v, _as(slot_token, _I64), _as(slot_block, _I32),
           _as(slot_offset, _I32), len(slot_token), heads, d, v_pool.shape[2])
