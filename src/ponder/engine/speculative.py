"""Draft-free speculative decoding: propose the next tokens by looking them up in the context.

Prompt lookup (as in CopySpec and llama.cpp's lookup decoding): find the most
recent earlier occurrence of the sequence's last n tokens, longest n first, and
propose the tokens that followed it.  The engine verifies a draft by feeding it
in one chunk and drawing each position with the ordinary sampler; since a chunk
gives the same logits as one-by-one decoding and a draw depends only on
(logits, seed, sample, position), the output is bit-identical with or without
speculation.  Only the cost changes.
"""

from __future__ import annotations

import numpy as np


def propose(tokens: list[int], max_draft: int, max_ngram: int = 3, min_ngram: int = 2,
            window: int = 4096) -> list[int]:
    """Up to max_draft tokens that followed the latest earlier match of the context's tail."""
    if max_draft <= 0 or len(tokens) < 2:
        return []
    ctx = np.asarray(tokens[-window:], dtype=np.int64)
    n_ctx = len(ctx)
    for n in range(min(max_ngram, n_ctx - 1), min_ngram - 1, -1):
        tail = ctx[n_ctx - n:]
        # candidate starts: every earlier position whose n tokens equal the tail
        hits = np.ones(n_ctx - n, dtype=bool)
        for j in range(n):
            hits &= ctx[j:n_ctx - n + j] == tail[j]
        starts = np.nonzero(hits)[0]
        if len(starts):
            follow = int(starts[-1]) + n
            return ctx[follow:follow + max_draft].tolist()
    return []
