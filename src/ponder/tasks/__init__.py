"""Tasks: checkable problem suites (procedural and from JSONL files) and how they are prompted.

`load_problems` is the one entry point: a suite name or a .jsonl path in, problems out.
"""

from __future__ import annotations

import os

from ponder.errors import InvalidParameterError
from ponder.tasks import algorithmic, arithmetic
from ponder.tasks.jsonl import DatasetError, load_jsonl
from ponder.tasks.problem import NUMBER_FORMATS, Problem
from ponder.tasks.prompt import PROMPT_STYLES, messages

SUITES = {
    "arithmetic": (arithmetic, "add, sub, mul, div, compare, round, digit, place over integers, decimals, "
                               "fractions, scientific notation; difficulty = digits"),
    "algorithmic": (algorithmic, "sort, count, next term, Tower of Hanoi moves, max, sum; difficulty = size"),
}
MAX_DIFFICULTY = 30

__all__ = ["DatasetError", "NUMBER_FORMATS", "PROMPT_STYLES", "Problem", "SUITES", "is_dataset_path",
           "load_problems", "messages"]


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
    if not 1 <= difficulty <= MAX_DIFFICULTY:
        raise InvalidParameterError(f"difficulty must be in 1..{MAX_DIFFICULTY} (got {difficulty})", "difficulty")
    module = SUITES[suite][0]
    cats = tuple(categories) if categories else module.CATEGORIES
    bad = [c for c in cats if c not in module.CATEGORIES]
    if bad:
        raise InvalidParameterError(
            f"unknown {suite} category {bad[0]!r}; valid: {', '.join(module.CATEGORIES)}", "categories")
    n = count or 50
    return [module.make_problem(seed, difficulty, i, number_format, cats) for i in range(n)], []
