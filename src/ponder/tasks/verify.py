"""Solution verifiers: check a proposed solution against the problem's instance, not an answer key.

A verifier suite's Problem carries its instance in `meta["instance"]` and names its verifier in
`meta["verifier"]`; `answer` is one valid solution (used as a shot exemplar and shown in the store),
but any solution the verifier accepts is right.  `SolutionChecker` wraps a verifier as a Checker so
that strategies, votes and the store treat these suites like any other; `checker_for(problem)` is
how the rest of ponder gets the right checker for a problem.

A verifier function takes (instance, text) and returns a Verdict; it never raises on model text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ponder.checkers import Checker, get_checker
from ponder.tasks.problem import Problem


@dataclass(frozen=True)
class Verdict:
    ok: bool
    solution: str | None  # the solution as parsed, canonical (the vote key), None if nothing parsed
    reason: str = ""  # why it failed: "no moves found", "move 3: disk 2 is not on top of peg A", ...
    illegal: bool = False  # a move that breaks the rules: no continuation of this text can be right


VERIFIERS: dict[str, Callable[[dict, str], Verdict]] = {}


def verifier(name: str):
    def register(fn):
        VERIFIERS[name] = fn
        return fn
    return register


class SolutionChecker(Checker):
    """A Checker that verifies solutions of one problem instance (the reference is not consulted)."""

    def __init__(self, name: str, instance: dict):
        super().__init__("verify")
        self.name, self.instance = name, instance
        self.verify_solution = VERIFIERS[name]

    def verdict(self, text: str) -> Verdict:
        return self.verify_solution(self.instance, text)

    def extract(self, text):
        return self.verdict(text).solution

    def key(self, answer):
        return answer  # already canonical

    def check(self, text, reference):
        v = self.verdict(text)
        return v.solution, v.ok


def has_verifier(problem: Problem) -> bool:
    return problem.meta.get("verifier") in VERIFIERS


def checker_for(problem: Problem, override: Checker | None = None) -> Checker:
    """The problem's solution verifier if it has one, else the override, else its kind's checker."""
    if has_verifier(problem):
        return SolutionChecker(problem.meta["verifier"], problem.meta["instance"])
    return override or get_checker(problem.kind)
