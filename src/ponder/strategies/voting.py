"""Voting and coverage arithmetic: majority, likelihood-weighted votes, pass@k, and the
posterior test that stops adaptive sampling."""

from __future__ import annotations

import math
from collections import Counter


def majority(keys: list) -> tuple[object, Counter]:
    """The most frequent non-None key (ties go to the one seen first) and the counts."""
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None, counts
    first = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    best = max(counts, key=lambda k: (counts[k], -first[k]))
    return best, counts


def weighted_vote(keys: list, weights: list[float]) -> tuple[object, dict]:
    """The key with the largest total weight (ties go to the one seen first)."""
    totals: dict = {}
    for k, w in zip(keys, weights):
        if k is not None:
            totals[k] = totals.get(k, 0.0) + w
    if not totals:
        return None, totals
    order = {k: i for i, k in reversed(list(enumerate(keys)))}
    return max(totals, key=lambda k: (totals[k], -order[k])), totals


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError("k must be at most n")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_at_k_table(n: int, c: int) -> dict[int, float]:
    """pass@k for k = 1, 2, 4, ... and n."""
    ks = sorted({k for k in (2 ** i for i in range(n.bit_length())) if k <= n} | ({n} if n else set()))
    return {k: pass_at_k(n, c, k) for k in ks}


def leader_confidence(counts: Counter) -> float:
    """Posterior probability that the leading answer beats the runner-up.

    The adaptive-consistency stopping rule (Aggarwal et al., 2023): with a uniform prior, the
    leader's share p between the top two answers is Beta(a + 1, b + 1) after a and b votes;
    P(p > 1/2) = P(Binomial(a + b + 1, 1/2) <= a), exact for integer counts.
    """
    top = counts.most_common(2)
    if not top:
        return 0.0
    a = top[0][1]
    b = top[1][1] if len(top) > 1 else 0
    n = a + b + 1
    return sum(math.comb(n, i) for i in range(a + 1)) / 2 ** n
