"""The weight formats ponder reads, and their plain NumPy dequantization.

The block layouts are llama.cpp's (ggml-common.h): a row of K weights is K/32
blocks, each a little-endian fp16 scale `d` (Q4_1 adds an fp16 min `m`) followed
by its quants.  Within a Q4 block, byte j holds element j in its low nibble and
element j+16 in its high nibble.

    Q4_0  18 B/block  w = d * (q - 8),  q in 0..15
    Q4_1  20 B/block  w = d * q + m,    q in 0..15
    Q8_0  34 B/block  w = d * q,        q in -128..127

This module is the reference the optimized kernels are tested against, so it is
written for clarity, not speed.
"""

from __future__ import annotations

import numpy as np

BLOCK = 32

QUANT_BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}
FLOAT_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}
SUPPORTED = tuple(QUANT_BLOCK_BYTES) + tuple(FLOAT_DTYPES)


def row_bytes(fmt: str, cols: int) -> int:
    if fmt in QUANT_BLOCK_BYTES:
        return cols // BLOCK * QUANT_BLOCK_BYTES[fmt]
    return cols * FLOAT_DTYPES[fmt].itemsize


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bf16 is the top half of an fp32, so widening is a shift, and exact."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _fp16(raw: np.ndarray) -> np.ndarray:
    """Two bytes per value (last axis) -> float32."""
    return np.ascontiguousarray(raw).view("<f2")[..., 0].astype(np.float32)


def split_q4(qs: np.ndarray) -> np.ndarray:
    """(..., 16) packed bytes -> (..., 32) quants 0..15 in element order."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def dequantize(fmt: str, data: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Raw tensor bytes (rows, row_bytes) -> float32 array of shape (rows, cols)."""
    raw = np.ascontiguousarray(data).view(np.uint8)
    if fmt == "F32":
        return raw.view("<f4").reshape(rows, cols).astype(np.float32)
    if fmt == "F16":
        return raw.view("<f2").reshape(rows, cols).astype(np.float32)
    if fmt == "BF16":
        return bf16_to_f32(raw.view("<u2").reshape(rows, cols))
    nb = cols // BLOCK
    blocks = raw.reshape(rows, nb, QUANT_BLOCK_BYTES[fmt])
    d = _fp16(blocks[..., 0:2])[..., None]
    if fmt == "Q4_0":
        q = split_q4(blocks[..., 2:18]).astype(np.float32)
        w = d * (q - 8.0)
    elif fmt == "Q4_1":
        m = _fp16(blocks[..., 2:4])[..., None]
        q = split_q4(blocks[..., 4:20]).astype(np.float32)
        w = d * q + m
    elif fmt == "Q8_0":
        q = blocks[..., 2:34].view(np.int8).astype(np.float32)
        w = d * q
    else:  # pragma: no cover - guarded by the loaders
        raise ValueError(fmt)
    return w.reshape(rows, cols)
