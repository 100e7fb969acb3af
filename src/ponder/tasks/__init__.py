"""Tasks: checkable problem suites (procedural and from JSONL files) and how they are prompted.

`load_problems` is the one entry point: a suite name or a .jsonl path in, problems out.
"""

from __future__ import annotations

import os

from ponder.errors import InvalidParameterError
from ponder.tasks import algorithmic, arithmetic, number_tasks, puzzles, word_problems
from ponder.tasks.jsonl import DatasetError, load_jsonl
from ponder.tasks.problem import NUMBER_FORMATS, Problem
from ponder.tasks.prompt import PROMPT_STYLES, messages
from ponder.tasks.verify import VERIFIERS, Verdict, checker_for, has_verifier

SUITES = {
    "arithmetic": (arithmetic, "add, sub, mul, div, compare, round, digit, place over integers, decimals, "
                               "fractions, scientific notation; difficulty = digits"),
    "algorithmic": (algorithmic, "sort, count, next term, Tower of Hanoi moves, max, sum; difficulty = size"),
    "words": (word_problems, "one- and two-step word problems (buying, sharing, rates, percentages, change, "
                             "time, area); difficulty = digits (1-4)"),
    "puzzles": (puzzles, "Tower of Hanoi, river crossing, blocks world, checker jumping, each solution checked "
                         "by simulating its moves; difficulty = size (1-5)"),
    "numbers": (number_tasks, "equation (checked by substitution), factorization, sorting: solutions checked "
                              "without an answer key; difficulty = digits (1-6)"),
}
MAX_DIFFICULTY = 30

__all__ = ["DatasetError", "NUMBER_FORMATS", "PROMPT_STYLES", "Problem", "SUITES", "VERIFIERS", "Verdict",
           "SHOT_MATCHES", "checker_for", "has_verifier", "is_dataset_path", "load_problems", "load_shots", "messages",
           "shots_for"]


def is_dataset_path(suite: str) -> bool:
    return suite.endswith((".jsonl", ".json")) or os.sep in suite or os.path.isfile(suite)


def load_problems(suite: str, *, difficulty: int = 1, count: int | None = None, seed: int = 0,
                  number_format: str = "plain", categories: list[str] | None = None,
                  on_error: str = "stop") -> tuple[list[Problem], list[str]]:
    """(problems, warnings) for a suite name or a path to a JSONL file."""
    if number_format not in NUMBER_FORMATS:
        raise InvalidParameterError(f"unknown number format {number_format!r}; valid: {', '.join(NUMBER_FORMATS)}",
                                    "number_format")
    if count is not None and count < 1:
        raise InvalidParameterError(f"--problems must be at least 1 (got {count})", "problems")
    if is_dataset_path(suite):
        problems, warnings = load_jsonl(suite, on_error)
        return (problems[:count] if count else problems), warnings
    if suite not in SUITES:
        raise InvalidParameterError(
            f"unknown suite {suite!r}; valid: {', '.join(SUITES)}, or a path to a .jsonl file", "suite")
    module, cats = _suite(suite, difficulty, categories)
    n = count or 50
    return [module.make_problem(seed, difficulty, i, number_format, cats) for i in range(n)], []


def _suite(suite: str, difficulty: int, categories):
    module = SUITES[suite][0]
    top = getattr(module, "MAX_DIFFICULTY", MAX_DIFFICULTY)
    if not 1 <= difficulty <= top:
        raise InvalidParameterError(f"{suite} difficulty must be in 1..{top} (got {difficulty})", "difficulty")
    cats = tuple(categories) if categories else module.CATEGORIES
    bad = [c for c in cats if c not in module.CATEGORIES]
    if bad:
        raise InvalidParameterError(
            f"unknown {suite} category {bad[0]!r}; valid: {', '.join(module.CATEGORIES)}", "categories")
    return module, cats


SHOT_MATCHES = {"any": "the first K of the suite's shot stream, the same for every problem",
                "category": "K of each problem's own category (operation and number form), e.g. add/fraction"}


def load_shots(suite: str, k: int, *, difficulty: int = 1, seed: int = 0, number_format: str = "plain",
               categories: list[str] | None = None, exclude: list[Problem] = (),
               match: str = "any") -> list[Problem]:
    """k worked examples from the suite's own generator, disjoint from the evaluated problems.

    They come from a seed stream of their own ("shots:SEED", never an evaluation seed, which is an
    integer), and any shot whose question equals an evaluated problem's is skipped as well.  With
    match="category", k shots for each category among `exclude` (the evaluated problems), in order
    of first appearance: `shots_for` picks a problem's own from them."""
    if match not in SHOT_MATCHES:
        raise InvalidParameterError(f"unknown shot match {match!r}; valid: {', '.join(SHOT_MATCHES)}", "shot_match")
    if k < 0:
        raise InvalidParameterError(f"--shots must be at least 0 (got {k})", "shots")
    if k == 0:
        return []
    if is_dataset_path(suite) or suite not in SUITES:
        raise InvalidParameterError("--shots needs a procedural suite (its generator draws the examples); "
                                    f"{suite!r} is not one", "shots")
    module, cats = _suite(suite, difficulty, categories)
    taken = {p.question for p in exclude}
    if match == "any":
        return _draw(module, cats, k, seed, difficulty, number_format, taken, None)
    shots = []
    for cat in dict.fromkeys(p.category for p in exclude):
        op = cat.split("/")[0]  # "add/fraction" is drawn from the generator of "add" alone
        shots += _draw(module, (op,) if op in cats else cats, k, seed, difficulty, number_format, taken, cat)
    return shots


def _draw(module, cats, k, seed, difficulty, number_format, taken: set, category: str | None) -> list[Problem]:
    shots, i = [], 0
    while len(shots) < k and i < 50 * k:
        p = module.make_problem(f"shots:{seed}", difficulty, i, number_format, cats)
        if p.question not in taken and (category is None or p.category == category):
            shots.append(p)
            taken.add(p.question)
        i += 1
    return shots


def shots_for(problem: Problem, shots: list[Problem], match: str = "any") -> list[Problem]:
    """The shots a problem is asked with: all of them, or (match="category") those of its category."""
    return list(shots) if match == "any" else [s for s in shots if s.category == problem.category]
