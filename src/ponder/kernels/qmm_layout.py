"""The packed weight layout of the integer-path products, for a back end's lane count L.

Rows in groups of L (L = the back end's int32 lanes per vector: 16 on AVX-512, 8
on the 256-bit sets); per (group g, K block k) one contiguous record, records
ordered g-major so that a row group streams sequentially through memory:

    Q4_1: 16L B quants | L x fp16 d | L x fp16 m     (L=16: 320 B = 16 rows x 20 B, as GGUF)
    Q4_0: 16L B quants | L x fp16 d
    Q8_0: 32L B quants | L x fp16 d

A "step" s (0..7) covers K elements 4s..4s+3 of the block for all L rows: 4L bytes,
byte 4r+b = element 4s+b of row r: one vpdpbusd operand (lane r = row r).  Q8_0
stores the 8 steps as they are, as u = q + 128 (unsigned).  Q4 packs two steps per
vector: vector j holds step 2j in the low nibbles and step 2j+1 in the high
nibbles.  The fp16 scales are widened in the kernel (exact), which keeps the byte
count equal to GGUF's.  isa.layout_id() names a layout for caches of packed weights.
"""

from __future__ import annotations

import numpy as np

from ponder.kernels import isa as isa_mod

QK = 32          # K elements per quantization block
FMT_Q4_0, FMT_Q4_1, FMT_Q8_0 = 2, 3, 8    # ggml type ids
FMT_NAMES = {FMT_Q4_0: "q4_0", FMT_Q4_1: "q4_1", FMT_Q8_0: "q8_0"}


def quant_bytes(fmt: int, lanes: int) -> int:
    return (32 if fmt == FMT_Q8_0 else 16) * lanes


def record_bytes(fmt: int, lanes: int) -> int:
    return quant_bytes(fmt, lanes) + (4 if fmt == FMT_Q4_1 else 2) * lanes


def _aligned_empty(shape, align=64):
    n = int(np.prod(shape))
    raw = np.empty(n + align, np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off:off + n].reshape(shape)


class QMatrix:
    """A weight matrix packed for one back end.  buf: uint8 [G, nb, record bytes]."""
    __slots__ = ("fmt", "rows", "cols", "buf", "isa", "lanes")

    def __init__(self, fmt, rows, cols, buf, isa):
        self.fmt, self.rows, self.cols, self.buf, self.isa = fmt, rows, cols, buf, isa
        self.lanes = isa_mod.lanes(isa)

    @property
    def nbytes(self):
        return self.buf.nbytes


def _group_steps(q, rows_p, nb, L):
    # [R, K] -> [G, nb, step(8), row(L), byte(4)]
    return q.reshape(rows_p // L, L, nb, 8, 4).transpose(0, 2, 3, 1, 4)


def _group_scales(s, rows_p, nb, L):
    return np.ascontiguousarray(s.astype(np.float16).reshape(rows_p // L, L, nb).transpose(0, 2, 1)).view(np.uint8)


def _pad_rows(a, rows_p):
    if a.shape[0] == rows_p:
        return a
    pad = np.zeros((rows_p - a.shape[0],) + a.shape[1:], a.dtype)
    return np.concatenate([a, pad])


def pack(fmt, q, d, m=None, isa=None):
    """q: [rows, K] quants as stored by ggml (uint8 0..15 for Q4_*, int8 for Q8_0);
    d, m: [rows, K//32] float16 scale / min (m only for Q4_1).  isa: the back end the
    matrix is packed for (default: this process's)."""
    isa = isa or isa_mod.current()
    L = isa_mod.lanes(isa)
    rows, K = q.shape
    nb = K // QK
    rows_p = -(-rows // L) * L
    G = rows_p // L
    q = _pad_rows(q, rows_p)
    d = _pad_rows(np.asarray(d, np.float16), rows_p)
    qb = quant_bytes(fmt, L)
    buf = _aligned_empty((G, nb, record_bytes(fmt, L)))
    if fmt in (FMT_Q4_0, FMT_Q4_1):
        st = _group_steps(q.astype(np.uint8), rows_p, nb, L)           # [G, nb, 8, L, 4]
        buf[:, :, :qb] = (st[:, :, 0::2] | (st[:, :, 1::2] << 4)).reshape(G, nb, qb)
        buf[:, :, qb:qb + 2 * L] = _group_scales(d, rows_p, nb, L)
        if fmt == FMT_Q4_1:
            buf[:, :, qb + 2 * L:] = _group_scales(_pad_rows(np.asarray(m, np.float16), rows_p), rows_p, nb, L)
    elif fmt == FMT_Q8_0:
        u = (q.astype(np.int16) + 128).astype(np.uint8)
        buf[:, :, :qb] = _group_steps(u, rows_p, nb, L).reshape(G, nb, qb)
        buf[:, :, qb:] = _group_scales(d, rows_p, nb, L)
    else:
        raise ValueError(fmt)
    return QMatrix(fmt, rows, K, buf, isa)


def decode_gguf(fmt, raw, rows, K):
    """llama.cpp block bytes (row-major, blocks of 32) -> (q, d, m)."""
    nb = K // QK
    raw = np.frombuffer(raw, np.uint8) if not isinstance(raw, np.ndarray) else raw.view(np.uint8)
    if fmt == FMT_Q8_0:
        b = raw.reshape(rows, nb, 34)
        d = np.ascontiguousarray(b[:, :, 0:2]).view(np.float16)[..., 0]
        q = np.ascontiguousarray(b[:, :, 2:]).view(np.int8).reshape(rows, K)
        return q, d, None
    hdr = 4 if fmt == FMT_Q4_1 else 2
    b = raw.reshape(rows, nb, hdr + 16)
    d = np.ascontiguousarray(b[:, :, 0:2]).view(np.float16)[..., 0]
    m = np.ascontiguousarray(b[:, :, 2:4]).view(np.float16)[..., 0] if fmt == FMT_Q4_1 else None
    qs = b[:, :, hdr:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(rows, K)   # elem j | elem j+16
    return q, d, m


def from_gguf(fmt, raw, rows, K, isa=None):
    q, d, m = decode_gguf(fmt, raw, rows, K)
    return pack(fmt, q, d, m, isa)
