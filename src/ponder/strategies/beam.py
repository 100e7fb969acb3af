"""beam: step-level beam search, steps split on newlines.

Each step, every live beam forks `expand` candidate next steps (one request, n = expand, so
the beam's prefix is prefilled once).  Candidates are first generated for only
`probe_tokens` tokens and scored; the lowest-scoring (1 - keep) of them are rejected early,
and only the survivors are continued to the end of their step (a newline, the end of the
answer, or `step_tokens`).  The `beam_width` best complete steps become the next beams.

Scores: by default the mean token log-probability of the whole partial solution (the
model's likelihood, length-normalized so short and long steps compare); or a user-supplied
scorer(question, partial_text) -> float, higher is better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ponder.strategies.base import Outcome, Strategy, attempt, derive_seed, mean

STEP_END = "\n"


@dataclass
class _Path:
    ids: list[int] = field(default_factory=list)
    lps: list[float] = field(default_factory=list)
    generated: int = 0
    ended: bool = False  # the model finished its answer
    reason: str = ""
    score: float = 0.0


class Beam(Strategy):
    name = "beam"
    describe = "step-level beam search (steps = lines), early rejection of weak partial steps"

    def _score(self, backend, judge, p: _Path) -> float:
        if self.opt.scorer is not None:
            return float(self.opt.scorer(judge.problem.question, backend.decode(p.ids)))
        return mean(p.lps) if p.lps else 0.0

    def solve(self, backend, prompt_ids, judge, seed):
        o = self.opt
        beams = [_Path()]
        finished: list[_Path] = []
        rejected = 0
        for step in range(o.max_steps):
            live = [b for b in beams if not b.ended]
            if not live:
                break
            # probe: a few tokens of each candidate next step, forked from the beam's prefix
            probe = min(o.probe_tokens, o.step_tokens)
            gens = backend.generate([prompt_ids + b.ids for b in live],
                                    [o.sampling(n=o.expand, seed=derive_seed(seed, step, j), max_tokens=probe,
                                                stop=(STEP_END,)) for j in range(len(live))])
            cands = []
            for b, g in zip(live, gens):
                for s in g.samples:
                    cands.append(_Path(b.ids + s.token_ids, b.lps + s.logprobs, b.generated + s.generated,
                                       s.finish_reason == "eos", s.finish_reason))
            cands = _dedupe(cands)
            for c in cands:
                c.score = self._score(backend, judge, c)
            # early rejection: only the best part of the probed candidates is worth finishing
            keep = max(o.beam_width, math.ceil(len(cands) * o.keep))
            cands.sort(key=lambda c: -c.score)
            rejected += max(0, len(cands) - keep)
            cands = cands[:keep]
            todo = [c for c in cands if c.reason == "length" and not c.ended]
            if todo and o.step_tokens > probe:
                gens = backend.generate([prompt_ids + c.ids for c in todo],
                                        [o.sampling(n=1, seed=derive_seed(seed, step, "rest", i),
                                                    max_tokens=o.step_tokens - probe, stop=(STEP_END,))
                                         for i in range(len(todo))])
                for c, g in zip(todo, gens):
                    s = g.samples[0]
                    c.ids, c.lps, c.generated = c.ids + s.token_ids, c.lps + s.logprobs, c.generated + s.generated
                    c.ended, c.reason = s.finish_reason == "eos", s.finish_reason
                    c.score = self._score(backend, judge, c)
            for c in cands:
                if len(c.ids) >= o.max_tokens:
                    c.ended = True
            cands.sort(key=lambda c: -c.score)
            beams = cands[:o.beam_width]
            finished += [b for b in beams if b.ended]
        pool = finished + [b for b in beams if not b.ended] or beams
        pool = _dedupe(pool)
        pool.sort(key=lambda p: -p.score)
        atts = [attempt(judge, i, p.ids, backend.decode(p.ids), p.lps, "eos" if p.ended else p.reason or "length",
                        p.generated, score=p.score) for i, p in enumerate(pool)]
        best = atts[0]
        best.selected = True
        return Outcome(best.answer, float(best.correct), atts, info={"rejected_early": rejected, "steps": step + 1})


def _dedupe(paths: list[_Path]) -> list[_Path]:
    seen, out = set(), []
    for p in paths:
        key = tuple(p.ids)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out
