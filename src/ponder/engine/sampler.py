"""Token selection: greedy, temperature, top-k, top-p, min-p, with a counter-based RNG.

The random number for a draw is Philox-4x32 keyed by the request seed, at the
counter (position, sample index).  So a sample's token at a position depends on
nothing but its seed, its index and the logits: not on the batch, the order of
requests, or how many draws came before.  All arithmetic here is float64 over the
float32 logits and in a fixed order, so it is reproducible across machines too.
"""

from __future__ import annotations

import numpy as np

from ponder.engine.sampling_params import SamplingParams


def uniform(seed: int, sample_index: int, position: int) -> float:
    """The one uniform draw in [0, 1) for (seed, sample index, position)."""
    bits = np.random.Philox(key=seed, counter=[position, sample_index, 0, 0])
    return float(np.random.Generator(bits).random())


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))


def _top_candidates(scores: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """Ids in descending score order (ties: lower id first), enough of them for top-k / top-p.

    Sorting a 50k vocabulary every step costs milliseconds, so look at the best
    64, then 256, ... candidates until the nucleus is provably inside them.
    """
    n = len(scores)
    limit = top_k if top_k > 0 else n
    k = limit if top_p >= 1.0 else min(limit, 64)
    while True:
        if k >= n:
            cand = np.arange(n)
        else:
            cand = np.argpartition(-scores, k - 1)[:k]
        cand = cand[np.lexsort((cand, -scores[cand]))]
        if k >= limit:
            return cand
        mass = np.exp(scores[cand] - scores[cand[0]]).sum() / np.exp(scores - scores[cand[0]]).sum()
        if mass >= top_p:
            return cand
        k = min(limit, k * 4)


def sample_token(logits: np.ndarray, params: SamplingParams, sample_index: int, position: int) -> int:
    """Choose the next token from one row of float32 logits."""
    if params.greedy:
        return int(np.argmax(logits))  # first maximum: ties go to the lower id
    scores = logits.astype(np.float64) / params.temperature
    if params.top_k == 0 and params.top_p >= 1.0:
        ids = np.arange(len(scores))  # no ranking needed: min-p is a threshold
    else:
        ids = _top_candidates(scores, params.top_k, params.top_p)
    top = scores.max()
    probs = np.exp(scores[ids] - top) / np.exp(scores - top).sum()  # normalized over the whole vocabulary
    keep = np.ones(len(ids), dtype=bool)
    if params.top_p < 1.0:
        # the smallest prefix whose mass reaches top_p (the token that crosses it stays)
        keep &= (np.cumsum(probs) - probs) < params.top_p
    if params.min_p > 0.0:
        keep &= probs >= params.min_p * probs.max()
    ids, cdf = ids[keep], np.cumsum(probs[keep])
    u = uniform(params.seed, sample_index, position) * cdf[-1]
    return int(ids[min(np.searchsorted(cdf, u, side="right"), len(ids) - 1)])


def top_logprobs(logprobs: np.ndarray, k: int) -> list[tuple[int, float]]:
    if k <= 0:
        return []
    ids = np.argpartition(-logprobs, k - 1)[:k]
    ids = ids[np.lexsort((ids, -logprobs[ids]))]
    return [(int(i), float(logprobs[i])) for i in ids]
