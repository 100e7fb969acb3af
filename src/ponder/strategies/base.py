"""What every strategy shares: options, the judge of answers, per-sample records and the outcome."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

from ponder.checkers import Checker
from ponder.checkers.extract import marked_segment
from ponder.engine.sampling_params import SamplingParams
from ponder.strategies.backend import Backend, Usage
from ponder.strategies.voting import pass_at_k_table
from ponder.tasks.problem import Problem
from ponder.tasks.verify import checker_for, has_verifier
from ponder.tools import answer_view


def derive_seed(*parts) -> int:
    """A 63-bit seed from any parts: sample i of problem p of run seed s is reproducible alone."""
    h = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


@dataclass
class Options:
    """Knobs of all strategies; each reads the ones it needs."""

    samples: int = 8  # N, or k for short-m@k, or the cap for adaptive-majority
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    max_tokens: int = 128
    batch: int = 4  # adaptive-majority: samples per round
    confidence: float = 0.95  # adaptive-majority: stop when the leader wins with this posterior probability
    m: int = 3  # short-m@k: vote among the first m to finish
    chunk: int = 8  # short-m@k: tokens per lockstep round
    select: str = "logprob"  # best-of-n: oracle | logprob | weighted | verifier
    beam_width: int = 2
    expand: int = 3  # beam: candidates per beam per step
    probe_tokens: int = 6  # beam: tokens generated before early rejection
    keep: float = 0.5  # beam: fraction of probed candidates that survive early rejection
    max_steps: int = 8
    step_tokens: int = 48  # beam and smc: tokens per step; self-verify: tokens of a check
    unconfirmed_weight: float = 0.25  # self-verify: the vote of an answer its check did not confirm
    check_exemplars: int = 3  # self-verify: worked checks shown before each check
    potential: str = "likelihood"  # smc: likelihood | tool | verifier
    beta: float = 1.0  # smc: weight = exp(beta * potential)
    scorer: Callable[[str, str], float] | None = None  # beam: (question, partial answer) -> score

    def sampling(self, **kw) -> SamplingParams:
        base = dict(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, min_p=self.min_p,
                    max_tokens=self.max_tokens)
        base.update(kw)
        return SamplingParams(**base)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "scorer"}
        if self.scorer is not None:
            d["scorer"] = getattr(self.scorer, "__qualname__", repr(self.scorer))
        return d


class Judge:
    """Reads and grades answers to one problem: with its solution verifier if it has one (no answer key
    needed, so a strategy may use the verdict to choose), else by its checker against the reference."""

    def __init__(self, problem: Problem, checker: Checker | None = None):
        self.problem = problem
        self.checker = checker_for(problem, checker)

    @property
    def verifiable(self) -> bool:
        """True when check() needs no answer key: a strategy may act on its verdict."""
        return has_verifier(self.problem)

    def check(self, text: str, tool_calls: list[dict] | None = None) -> tuple[str | None, bool]:
        """(answer, correct?).  For a sample that had tools (tool_calls not None), programs and tool
        errors are not read as answers, and an unmarked numeric answer is the last tool result: a
        small model often runs on after a spliced value ("= 0.1" becoming "= 0.16"), and the tool's
        value is the one computed exactly."""
        if tool_calls is None:
            return self.checker.check(text, self.problem.answer)
        view = answer_view(text)
        values = [c["value"] for c in tool_calls if c.get("ok") and c.get("value") not in (None, "True", "False")]
        if values and self.checker.kind in ("number", "list") and marked_segment(view) is None:
            return self.checker.check(values[-1], self.problem.answer)
        return self.checker.check(view, self.problem.answer)

    def key(self, answer: str | None):
        return self.checker.key(answer)


@dataclass
class Attempt:
    """One complete sample (or final beam) and its verdict."""

    index: int
    token_ids: list[int]
    text: str
    answer: str | None
    correct: bool
    generated_tokens: int
    mean_logprob: float
    finish_reason: str
    selected: bool = False
    info: dict = field(default_factory=dict)


@dataclass
class Outcome:
    answer: str | None
    score: float  # this problem's contribution to accuracy: 1/0, or the mean over samples for `sample`
    attempts: list[Attempt]
    usage: Usage = field(default_factory=Usage)
    info: dict = field(default_factory=dict)

    @property
    def coverage(self) -> bool:
        return any(a.correct for a in self.attempts)

    @property
    def pass_at_k(self) -> dict[int, float]:
        return pass_at_k_table(len(self.attempts), sum(a.correct for a in self.attempts))


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("-inf")


def attempt(judge: Judge, index: int, token_ids: list[int], text: str, logprobs: list[float],
            finish_reason: str, generated: int, **info) -> Attempt:
    """An Attempt from a sample's parts; info["tool_calls"] (a sample that had tools) changes how it is read."""
    answer, ok = judge.check(text, info.get("tool_calls"))
    return Attempt(index, list(token_ids), text, answer, ok, generated, mean(logprobs), finish_reason, info=info)


class Strategy:
    """Solves one problem; subclasses set `name` and `describe` and implement `solve`."""

    name = ""
    describe = ""

    def __init__(self, options: Options | None = None):
        self.opt = options or Options()

    def solve(self, backend: Backend, prompt_ids: list[int], judge: Judge, seed: int) -> Outcome:
        raise NotImplementedError

    def _samples(self, backend: Backend, prompt_ids, judge, n: int, seed: int, start: int = 0) -> list[Attempt]:
        """n samples forked from one prefill."""
        [gen] = backend.generate([prompt_ids], self.opt.sampling(n=n, seed=seed, first_sample=start))
        return [attempt(judge, start + i, s.token_ids, s.text, s.logprobs, s.finish_reason, s.generated, **s.tool_info)
                for i, s in enumerate(gen.samples)]
