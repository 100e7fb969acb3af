"""Hydragen's grouping of a step's tokens for attention, and the rule that splits its jobs: NumPy only.

Tokens whose sequences start with the same physical KV blocks (the n samples of one
prompt, the tokens of one prefill chunk) form a group that reads its shared blocks once
(kernels/attention.py says how).  Both attention drivers, the Numba one and the native
one (kernels/attention_native.py), take these groups, computed once per step.
"""

from __future__ import annotations

import numpy as np

SPLIT_BELOW = 8  # fewer (group, KV head) jobs than this: a job per query head (see attention.py)


def singleton_groups(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every token its own group: the plain paged attention."""
    return np.arange(n + 1, dtype=np.int64), np.arange(n, dtype=np.int64), np.zeros(n, np.int64)


def prefix_groups(block_tables: np.ndarray, token_row: np.ndarray, context_len: np.ndarray, block_size: int,
                  min_shared: int = 1, max_group: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group tokens whose sequences start with the same physical KV blocks.

    Tokens are grouped by their table's first block; a group's shared count is
    the length of the common run of identical block ids that every member reads
    in full.  Groups sharing fewer than `min_shared` blocks are split into
    singletons, and large groups into pieces of `max_group` tokens so that the
    threads get balanced work (a shared block is then read once per piece, from
    cache).
    """
    n = len(token_row)
    if n == 1:  # a decode step of one sequence: nothing to share (and no NumPy set operations to pay for)
        return singleton_groups(1)
    full = context_len // block_size  # blocks each token reads in full
    first = block_tables[token_row, 0]
    starts, members, shared = [0], [], []
    for key in np.unique(first):
        idx = np.nonzero(first == key)[0]
        tables = block_tables[token_row[idx]]
        limit = int(full[idx].min())
        same = (tables[:, :limit] == tables[0, :limit]).all(axis=0)
        common = int(np.argmin(same)) if not same.all() else limit
        if len(idx) > 1 and common >= min_shared:
            for piece in range(0, len(idx), max_group):
                members.extend(idx[piece:piece + max_group].tolist())
                starts.append(len(members))
                shared.append(common)
        else:
            for t in idx.tolist():
                members.append(t)
                starts.append(len(members))
                shared.append(0)
    assert len(members) == n
    return np.array(starts, np.int64), np.array(members, np.int64), np.array(shared, np.int64)
