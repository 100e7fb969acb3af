"""Weight x activation products for float weights (F32, and F16/BF16 widened at load).

Each output element is one sequential float32 chain over K, so the result for a
token does not depend on the batch or the thread count.  Parallel over rows.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ponder.kernels import numba_setup

numba_setup.prepare()


@njit(parallel=True, cache=True)
def matmul_f32(w, x, out):
    """out[t, r] = sum_k w[r, k] * x[t, k], summed in increasing k.  w: (R, K), x: (T, K)."""
    rows, k_dim = w.shape
    n = x.shape[0]
    for r in prange(rows):
        row = w[r]
        for t in range(n):
            xt = x[t]
            acc = np.float32(0.0)
            for k in range(k_dim):
                acc += row[k] * xt[k]
            out[t, r] = acc
