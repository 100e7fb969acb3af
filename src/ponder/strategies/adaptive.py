"""adaptive-majority: sample in small rounds and stop once the vote is decided.

After each round the leading answer's share against the runner-up has a Beta posterior;
sampling stops when P(leader beats runner-up) reaches the stated confidence (see
voting.leader_confidence), when the runner-up could not catch up even if every remaining
sample went its way, or at N samples.  Round r asks for samples r*batch .. of the same seed
as majority@N (SamplingParams.first_sample), so the samples are a prefix of majority@N's:
when the second rule stops it, the answer is majority@N's exactly, for fewer tokens.
"""

from __future__ import annotations

from ponder.strategies.base import Strategy
from ponder.strategies.sampling import vote
from ponder.strategies.voting import leader_confidence, majority


class AdaptiveMajority(Strategy):
    name = "adaptive-majority"
    describe = "majority that stops early when the Beta posterior says the vote is decided"

    def solve(self, backend, prompt_ids, judge, seed):
        o = self.opt
        atts, conf, rounds = [], 0.0, 0
        while len(atts) < o.samples:
            n = min(o.batch, o.samples - len(atts))
            atts += self._samples(backend, prompt_ids, judge, n, seed, start=len(atts))
            rounds += 1
            _, counts = majority([judge.key(a.answer) for a in atts])
            conf = leader_confidence(counts)
            if conf >= o.confidence or _decided(counts, o.samples - len(atts)):
                break
        return vote(atts, judge, rounds=rounds, confidence=conf, stopped_early=len(atts) < o.samples)


def _decided(counts, remaining: int) -> bool:
    """The leader stays ahead of every other answer whatever the remaining samples say."""
    top = counts.most_common(2)
    if not top:
        return False
    runner_up = top[1][1] if len(top) > 1 else 0
    return top[0][1] - runner_up > remaining
