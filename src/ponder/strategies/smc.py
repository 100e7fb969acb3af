"""smc: sequential Monte Carlo (particle filtering) over steps of an answer, after "Sampling for
Quality" / twisted SMC, sized for small models.

K particles start as K samples forked from one prefill and grow --step-tokens at a time.  After
each step every live particle gets a potential, its weight is exp(beta * potential), and the live
particles are resampled (systematic resampling, seeded by the problem seed and the step, so a run
replays exactly).  A resampled particle is its parent's token ids: the copies share the parent's
prefix, which the prefix cache holds (local engine) -- resampling moves references, nothing is
prefilled again.  Copies then diverge: particle j draws its next step with its own seed.

Potentials (--potential):
- likelihood: the mean log-probability of the particle's own tokens so far (tool tokens excluded);
- tool: agreement of tool results: 1 + the number of other particles whose last tool value equals
  this one's (0 without a tool result) -- needs --tools;
- verifier: for suites with a solution verifier: a particle whose moves so far already break the
  rules gets -5 (no continuation can be right), a verified one 1, the others 0.

Finished particles leave the filter and keep their place; the answer is the majority over them
(and over the particles still live at the last step).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from ponder.errors import InvalidParameterError
from ponder.strategies.base import Strategy, attempt, derive_seed
from ponder.strategies.sampling import vote

POTENTIALS = ("likelihood", "tool", "verifier")


@dataclass
class _Particle:
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    generated: int = 0
    finish: str = "length"
    tool_calls: list[dict] | None = None
    tool_mask: list[bool] | None = None
    ancestors: int = 0  # how many times it was resampled from a parent

    def copy(self) -> _Particle:
        return _Particle(list(self.ids), list(self.logprobs), self.generated, self.finish,
                         None if self.tool_calls is None else list(self.tool_calls),
                         None if self.tool_mask is None else list(self.tool_mask), self.ancestors + 1)

    def extend(self, s) -> None:
        offset = len(self.ids)
        self.ids += s.token_ids
        self.logprobs += s.logprobs
        self.generated += s.generated
        self.finish = s.finish_reason
        if s.tool_mask is not None:
            self.tool_mask = (self.tool_mask or [False] * offset) + list(s.tool_mask)
            self.tool_calls = (self.tool_calls or []) + [{**c, "at_token": c.get("at_token", 0) + offset}
                                                         for c in s.tool_calls]


def systematic_resample(weights: list[float], k: int, rng: random.Random) -> list[int]:
    """k indices drawn in proportion to the weights by systematic resampling (one uniform draw)."""
    total = sum(weights)
    if total <= 0 or not math.isfinite(total):
        weights, total = [1.0] * len(weights), float(len(weights))
    u = rng.random() / k
    out, acc, i = [], weights[0] / total, 0
    for j in range(k):
        target = u + j / k
        while target > acc and i < len(weights) - 1:
            i += 1
            acc += weights[i] / total
        out.append(i)
    return out


class SMC(Strategy):
    name = "smc"
    describe = "particle filtering over steps: K particles, seeded resampling by --potential likelihood | tool | verifier"

    def __init__(self, options=None):
        super().__init__(options)
        if self.opt.potential not in POTENTIALS:
            raise InvalidParameterError(f"unknown potential {self.opt.potential!r}; valid: {', '.join(POTENTIALS)}",
                                        "potential")

    def solve(self, backend, prompt_ids, judge, seed):
        o = self.opt
        if o.potential == "verifier" and not judge.verifiable:
            raise InvalidParameterError("--potential verifier needs a suite with a solution verifier (puzzles, numbers)",
                                        "potential")
        k = o.samples
        [gen] = backend.generate([prompt_ids], o.sampling(n=k, seed=seed, max_tokens=min(o.step_tokens, o.max_tokens)))
        live = []
        for s in gen.samples:
            p = _Particle()
            p.extend(s)
            live.append(p)
        done, steps, resamples = [], 1, 0
        while True:
            still = []
            for p in live:
                (done if p.finish != "length" or len(p.ids) - sum(p.tool_mask or []) >= o.max_tokens else still).append(p)
            live = still
            if not live or steps >= o.max_steps:
                break
            weights = [math.exp(o.beta * self._potential(backend, judge, p, live)) for p in live]
            rng = random.Random(derive_seed(seed, "smc-resample", steps))
            picks = systematic_resample(weights, len(live), rng)
            resamples += len(set(picks)) < len(live)
            live = [live[i].copy() if picks.count(i) > 1 and picks.index(i) != j else live[i]
                    for j, i in enumerate(picks)]
            gens = backend.generate([list(prompt_ids) + p.ids for p in live],
                                    [o.sampling(n=1, seed=derive_seed(seed, "smc", steps, j),
                                                max_tokens=min(o.step_tokens, o.max_tokens - self._own(p)))
                                     for j, p in enumerate(live)])
            for p, g in zip(live, gens):
                p.extend(g.samples[0])
            steps += 1
        final = done + live
        atts = []
        for i, p in enumerate(final):
            info = {"ancestors": p.ancestors}
            if p.tool_calls is not None:
                info.update(tool_calls=p.tool_calls, tool_tokens=sum(p.tool_mask or []))
            atts.append(attempt(judge, i, p.ids, backend.decode(p.ids), p.logprobs, p.finish, p.generated, **info))
        return vote(atts, judge, steps=steps, resampling_steps=resamples, potential=o.potential)

    @staticmethod
    def _own(p: _Particle) -> int:
        return len(p.ids) - sum(p.tool_mask or [])

    def _potential(self, backend, judge, p: _Particle, live: list[_Particle]) -> float:
        pot = self.opt.potential
        if pot == "likelihood":
            return sum(p.logprobs) / len(p.logprobs) if p.logprobs else 0.0
        if pot == "tool":
            mine = _last_value(p)
            if mine is None:
                return 0.0
            return 1.0 + sum(1 for q in live if q is not p and _last_value(q) == mine)
        v = judge.checker.verdict(backend.decode(p.ids))
        return 1.0 if v.ok else -5.0 if v.illegal else 0.0


def _last_value(p: _Particle):
    vals = [c.get("value") for c in (p.tool_calls or []) if c.get("ok") and c.get("value") is not None]
    return vals[-1] if vals else None
