"""RoPE's tables: cos and sin of each position times each inverse frequency (NumPy only)."""

from __future__ import annotations

import numpy as np


def rope_tables(theta: float, head_dim: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin of position x inverse frequency, computed in float64 and rounded once."""
    inv_freq = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.arange(length, dtype=np.float64)[:, None] * inv_freq[None, :]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
