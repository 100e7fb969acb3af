"""sample and majority: N samples forked from one prefill.

`sample` reports coverage (pass@k, unbiased estimator) and scores the problem by the mean
correctness of its samples (pass@1).  `majority` is self-consistency: the most frequent
answer, where "0.75" and "3/4" are the same answer.
"""

from __future__ import annotations

from ponder.strategies.base import Outcome, Strategy
from ponder.strategies.voting import majority


class Sample(Strategy):
    name = "sample"
    describe = "N samples; accuracy is pass@1, coverage is pass@N (unbiased pass@k reported)"

    def solve(self, backend, prompt_ids, judge, seed):
        atts = self._samples(backend, prompt_ids, judge, self.opt.samples, seed)
        ok = sum(a.correct for a in atts)
        first = atts[0]
        first.selected = True
        return Outcome(first.answer, ok / len(atts), atts)


class Majority(Strategy):
    name = "majority"
    describe = "self-consistency: the most frequent of N sampled answers"

    def solve(self, backend, prompt_ids, judge, seed):
        atts = self._samples(backend, prompt_ids, judge, self.opt.samples, seed)
        return vote(atts, judge)


def vote(atts, judge, **info) -> Outcome:
    """Majority over attempts; the first attempt with the winning answer is marked selected."""
    keys = [judge.key(a.answer) for a in atts]
    best, counts = majority(keys)
    chosen = next((a for a, k in zip(atts, keys) if best is not None and k == best), None)
    if chosen is None:
        return Outcome(None, 0.0, atts, info={"votes": {}, **info})
    chosen.selected = True
    votes = {chosen_answer(atts, keys, k): c for k, c in counts.most_common()}
    return Outcome(chosen.answer, float(chosen.correct), atts, info={"votes": votes, **info})


def chosen_answer(atts, keys, key) -> str:
    return next(a.answer for a, k in zip(atts, keys) if k == key)
