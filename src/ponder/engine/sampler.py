"""Token selection: greedy, temperature, top-k, top-p, min-p, with a counter-based RNG.

The random number for a draw is Philox-4x32 keyed by the request seed, at the
counter (position, sample index).  So a sample's token at a position depends on
nothing but its seed, its index and the logits: not on the batch, the order of
requests, or how many draws came before.  The weights exp((l - max) / T) use
ponder's own float32 exp (the same bits on every machine and C library) and are
summed in float64 in id order, so draws reproduce across machines too.  Those kernels
(the max, the weights and their sum, the walk to the drawn id) are Numba's
(kernels/sampling_numba.py) or their native twins (kernels/sampling_native.py), the same bits.
"""

from __future__ import annotations

import numpy as np

from ponder.engine.sampling_params import SamplingParams
from ponder.errors import SamplingError
from ponder.kernels import native, sampling_native


def uniform(seed: int, sample_index: int, position: int) -> float:
    """The one uniform draw in [0, 1) for (seed, sample index, position)."""
    bits = np.random.Philox(key=seed, counter=[position, sample_index, 0, 0])
    return float(np.random.Generator(bits).random())


def _kernels():
    """The weight kernels: the native runtime's when the products run there (native.active),
    else Numba's (the reference).  The same bits either way (tests/test_ops_native.py)."""
    if native.active:
        return sampling_native
    from ponder.kernels import sampling_numba

    return sampling_numba


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities under the model's own distribution (temperature 1, no filters)."""
    w = np.empty(len(logits), np.float32)
    total = _kernels().weights(logits, np.float32(1.0), w)
    return (logits.astype(np.float64) - float(logits.max())) - np.log(total)


def token_logprob(logits: np.ndarray, token: int) -> float:
    """log_softmax(logits)[token], the same bits, without making the vocabulary-long float64 array."""
    w = np.empty(len(logits), np.float32)
    total = _kernels().weights(logits, np.float32(1.0), w)
    return float((np.float64(logits[token]) - float(logits.max())) - np.log(total))


def _top_candidates(weights: np.ndarray, total: float, top_k: int, top_p: float) -> np.ndarray:
    """Ids in descending weight order (ties: lower id first), enough of them for top-k / top-p.

    Sorting a 50k vocabulary every step costs milliseconds, so look at the best
    64, then 256, ... candidates until the nucleus is provably inside them.
    """
    n = len(weights)
    limit = top_k if top_k > 0 else n
    k = limit if top_p >= 1.0 else min(limit, 64)
    while True:
        cand = np.arange(n) if k >= n else np.argpartition(-weights, k - 1)[:k]
        cand = cand[np.lexsort((cand, -weights[cand]))]
        if k >= limit or weights[cand].sum(dtype=np.float64) / total >= top_p:
            return cand
        k = min(limit, k * 4)


def sample_token(logits: np.ndarray, params: SamplingParams, sample_index: int, position: int) -> int:
    """Choose the next token from one row of float32 logits.

    Raises SamplingError when the logits are not all finite (a broken model), rather than
    return a token that is not one.
    """
    if not np.isfinite(logits).all():
        raise SamplingError("the model produced non-finite logits; no token can be drawn")
    if params.greedy:  # temperature 0, or so small that 1/T overflows: the limit is the argmax
        return int(np.argmax(logits))  # first maximum: ties go to the lower id
    k = _kernels()
    weights = np.empty(len(logits), np.float32)
    total = k.weights(logits, np.float32(1.0 / params.temperature), weights)
    u = uniform(params.seed, sample_index, position)
    min_w = np.float32(params.min_p)  # the top weight is exactly 1, so min-p is a weight threshold
    if params.top_k == 0 and params.top_p >= 1.0:
        kept = total if params.min_p == 0.0 else k.kept_total(weights, min_w)
        return int(k.walk(weights, total, u * kept, min_w))
    ids = _top_candidates(weights, total, params.top_k, params.top_p)
    probs = weights[ids].astype(np.float64) / total
    keep = np.ones(len(ids), dtype=bool)
    if params.top_p < 1.0:
        # the smallest prefix whose mass reaches top_p (the token that crosses it stays)
        keep &= (np.cumsum(probs) - probs) < params.top_p
    keep &= weights[ids] >= min_w
    ids, cdf = ids[keep], np.cumsum(probs[keep])
    return int(ids[min(np.searchsorted(cdf, u * cdf[-1], side="right"), len(ids) - 1)])


def top_logprobs(logprobs: np.ndarray, k: int) -> list[tuple[int, float]]:
    if k <= 0:
        return []
    ids = np.argpartition(-logprobs, k - 1)[:k]
    ids = ids[np.lexsort((ids, -logprobs[ids]))]
    return [(int(i), float(logprobs[i])) for i in ids]
