"""Paged attention in float64 NumPy: the reference both attention drivers' tests check against."""

import numpy as np


def reference(q, k_pool, v_pool, tables, rows, ctx):
    """softmax(q . K / sqrt(d)) V per token and query head, K/V gathered through the block tables."""
    bs, g = k_pool.shape[3], q.shape[1] // k_pool.shape[1]
    out = np.zeros(q.shape)
    for t in range(len(q)):
        blocks = tables[rows[t], : -(-ctx[t] // bs)]
        k = np.concatenate([k_pool[b].transpose(0, 2, 1) for b in blocks], axis=1)[:, : ctx[t]].astype(np.float64)
        v = np.concatenate([v_pool[b] for b in blocks], axis=1)[:, : ctx[t]].astype(np.float64)
        for h in range(q.shape[1]):
            s = k[h // g] @ q[t, h] * q.shape[2] ** -0.5
            p = np.exp(s - s.max())
            out[t, h] = p @ v[h // g] / p.sum()
    return out
