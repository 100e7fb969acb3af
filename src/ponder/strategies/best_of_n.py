"""best-of-n: N samples, one chosen by a selector.

- oracle: the checker picks a correct sample if there is one (this is coverage, an upper bound);
- logprob: the highest mean token log-probability (the model's own confidence);
- weighted: a likelihood-weighted vote in the spirit of RPC (Zhou et al., 2025): identical
  reasoning paths are counted once, each path weighs exp(mean logprob), and the answer with
  the largest total weight wins.
"""

from __future__ import annotations

import math

from ponder.errors import InvalidParameterError
from ponder.strategies.base import Outcome, Strategy
from ponder.strategies.voting import weighted_vote

SELECTORS = ("oracle", "logprob", "weighted")


class BestOfN(Strategy):
    name = "best-of-n"
    describe = "N samples, pick by --select oracle | logprob | weighted (RPC-style vote)"

    def __init__(self, options=None):
        super().__init__(options)
        if self.opt.select not in SELECTORS:
            raise InvalidParameterError(f"unknown selector {self.opt.select!r}; valid: {', '.join(SELECTORS)}", "select")

    def solve(self, backend, prompt_ids, judge, seed):
        atts = self._samples(backend, prompt_ids, judge, self.opt.samples, seed)
        sel = self.opt.select
        if sel == "oracle":
            chosen = next((a for a in atts if a.correct), atts[0])
        elif sel == "logprob":
            chosen = max(atts, key=lambda a: (a.mean_logprob, -a.index))
        else:
            seen, keys, weights = set(), [], []
            for a in atts:
                path = tuple(a.token_ids)
                keys.append(judge.key(a.answer) if path not in seen else None)
                weights.append(math.exp(a.mean_logprob) if a.token_ids else 0.0)
                seen.add(path)
            best, totals = weighted_vote(keys, weights)
            chosen = next((a for a, k in zip(atts, keys) if best is not None and k == best), atts[0])
        chosen.selected = True
        return Outcome(chosen.answer, float(chosen.correct), atts, info={"select": sel})
