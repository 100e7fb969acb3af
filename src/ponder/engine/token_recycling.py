"""Token Recycling (Luo et al., "Turning Trash into Treasure"): drafts from logits decoding already made.

An adjacency table succ[vocab, K] holds, for each token, the top-K tokens that most
recently followed it in this request's logits.  Every step's rows (the root's and
each drafted node's) overwrite their token's entry.  A draft is a small static tree
shape, a list of (parent, rank) pairs, filled from the table starting at the last
token: node i's token is succ[token of parent, rank].

The table belongs to one request (its samples share it), so speed depends only on
the request's own history and the model's fixed prior it starts from
(recycling_prior.py); tokens never depend on the table at all (speculative.py).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ponder.engine.draft_tree import DraftTree
from ponder.kernels import numba_setup

numba_setup.prepare()

K = 8  # successors kept per token
# (parent, rank): the root's top 3; the best's top 2 and the second's best; then the likeliest
# paths go deeper.  Parents come first, so any prefix is a tree.
SHAPE = ((-1, 0), (-1, 1), (0, 0), (-1, 2), (0, 1), (2, 0), (1, 0), (2, 1), (5, 0), (3, 0), (8, 0),
         (4, 0), (10, 0), (6, 0), (12, 0), (14, 0))


@njit(cache=True)
def top_k_rows(rows, k, out):
    """out[r] = indices of the k largest entries of rows[r], largest first (ties: lower index first).

    One pass per row with a sorted k-list: a value enters only if it beats the k-th, so the
    inner insert runs rarely (np.argpartition over a 49k row costs several times more).  A chunk
    of 64 values whose maximum (a vectorized reduction) does not beat the k-th is skipped whole:
    none of its values would have entered, so the result is the same."""
    n, v = rows.shape
    vals = np.empty(k, np.float32)
    lanes = np.empty(16, np.float32)
    for r in range(n):
        for i in range(k):
            vals[i] = -np.inf
            out[r, i] = -1
        for c in range(0, v, 64):
            end = min(c + 64, v)
            if end - c == 64:  # the chunk's maximum in 16 lanes (selects: they vectorize; a NaN never wins, as below)
                lanes[:] = -np.inf
                for q in range(c, end, 16):
                    for i in range(16):
                        x = rows[r, q + i]
                        lanes[i] = x if x > lanes[i] else lanes[i]
                m = np.float32(-np.inf)
                for i in range(16):
                    m = lanes[i] if lanes[i] > m else m
                if not m > vals[k - 1]:
                    continue
            for j in range(c, end):
                x = rows[r, j]
                if x > vals[k - 1]:
                    p = k - 1
                    while p > 0 and vals[p - 1] < x:
                        vals[p] = vals[p - 1]
                        out[r, p] = out[r, p - 1]
                        p -= 1
                    vals[p] = x
                    out[r, p] = j


class RecyclingProposer:
    def __init__(self, shape: tuple[tuple[int, int], ...] | None = None, k: int = K,
                 prior: np.ndarray | None = None):
        """prior: None (a cold table) or a read-only succ table to start from (recycling_prior.py);
        it is copied at the first observation, so requests never write each other's tables."""
        self.shape = shape or SHAPE
        self.k = k
        self.succ: np.ndarray | None = prior  # else made at the first observation (vocab size from the rows)
        self._own = False  # succ is this proposer's to write

    def observe(self, tokens: list[int], rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows[:len(tokens)], np.float32)
        if not self._own:
            self.succ = (np.full((rows.shape[1], self.k), -1, np.int32) if self.succ is None
                         else np.array(self.succ[:, :self.k]))
            self._own = True
        top = np.empty((len(rows), self.k), np.int32)
        top_k_rows(rows, self.k, top)
        self.succ[np.asarray(tokens, np.int64)] = top

    def propose(self, tokens: list[int], max_nodes: int, max_depth: int) -> DraftTree | None:
        if self.succ is None or not tokens:
            return None
        node_of = {}  # shape index -> node index (a shape entry is dropped if its token is unknown)
        toks, parents, depth = [], [], []
        for i, (parent, rank) in enumerate(self.shape):
            if len(toks) >= max_nodes:
                break
            if parent >= 0 and parent not in node_of:
                continue
            p = node_of[parent] if parent >= 0 else -1
            d = 1 if p < 0 else depth[p] + 1
            src = tokens[-1] if p < 0 else toks[p]
            tok = int(self.succ[src, rank]) if rank < self.k else -1
            if tok < 0 or d > max_depth:
                continue
            node_of[i] = len(toks)
            toks.append(tok)
            parents.append(p)
            depth.append(d)
        return DraftTree(toks, parents) if toks else None
