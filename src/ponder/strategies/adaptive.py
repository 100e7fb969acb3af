"""adaptive-majority: sample in small rounds and stop once the vote is decided.

After each round the leading answer's share against the runner-up has a Beta posterior;
sampling stops when P(leader beats runner-up) reaches the stated confidence, or at N
samples (see voting.leader_confidence).  Each round is one request with n = batch forked
samples and its own derived seed, so a run is reproducible round by round.
"""

from __future__ import annotations

from ponder.strategies.base import Strategy, derive_seed
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
            atts += self._samples(backend, prompt_ids, judge, n, derive_seed(seed, "round", rounds), start=len(atts))
            rounds += 1
            _, counts = majority([judge.key(a.answer) for a in atts])
            conf = leader_confidence(counts)
            if conf >= o.confidence:
                break
        return vote(atts, judge, rounds=rounds, confidence=conf, stopped_early=len(atts) < o.samples)
