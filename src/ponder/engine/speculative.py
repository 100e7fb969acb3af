"""Draft-free speculative decoding: who proposes drafts, and prompt lookup.

A proposer turns a sequence's tokens into a DraftTree (engine/draft_tree.py) the
engine verifies in one step, and may learn from the logits rows a step produced.
The engine walks the tree with the ordinary sampler: from the root's logits it
draws a token; if that token is one of the node's children it moves there and draws
again from the child's logits.  A drafted node's logits are bit-identical to plain
decoding's and a draw depends only on (logits, seed, sample, position), so the output
(tokens and logprobs) is the same with or without speculation, whatever the drafts:
only the cost changes.

Proposers: "lookup" (here) and "recycling" (token_recycling.py).  Each request has its
own proposer, shared by its samples.

Prompt lookup (as in CopySpec and llama.cpp's lookup decoding): find the most recent
earlier occurrence of the sequence's last n tokens, longest n first, and propose the
tokens that followed it, as a linear draft (the one-path tree).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ponder.engine.draft_tree import DraftTree

MODES = ("off", "lookup", "recycling")
# (drafted tokens per step, most sequences decoding while drafting) of each mode, from measurements
# on the development host (BENCHMARKS.md, "Speculative decoding"): each extra row of a step costs
# 15-20% of a one-row step, so Token Recycling pays only with one drafted token and one stream
# (about 1.25 tokens per step); a lookup draft copies text, so it is accepted long or not at all.
DEFAULTS = {"off": (0, 0), "lookup": (8, 4), "recycling": (1, 1)}


class Proposer(Protocol):
    def propose(self, tokens: list[int], max_nodes: int, max_depth: int) -> DraftTree | None:
        """A draft to follow `tokens` (at most max_nodes nodes, none deeper than max_depth)."""

    def observe(self, tokens: list[int], rows: np.ndarray) -> None:
        """rows[i] are the logits that followed tokens[i] in the last step."""


class LookupProposer:
    def propose(self, tokens: list[int], max_nodes: int, max_depth: int) -> DraftTree | None:
        found = propose(tokens, min(max_nodes, max_depth))
        return DraftTree.linear(found) if found else None

    def observe(self, tokens: list[int], rows: np.ndarray) -> None:
        pass


def make_proposer(mode: str, prior: np.ndarray | None = None) -> Proposer:
    """prior: Token Recycling's starting table (recycling_prior.py), or None for a cold one."""
    if mode == "lookup":
        return LookupProposer()
    if mode == "recycling":
        from ponder.engine.token_recycling import RecyclingProposer

        return RecyclingProposer(prior=prior)
    raise ValueError(f"no proposer {mode!r}")


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
