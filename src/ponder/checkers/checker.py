"""Checkers: does an extracted answer match the reference?  One per answer kind.

Each checker also gives a canonical *key* for an answer, so that votes count "0.75" and
"3/4" as the same answer.  A checker never raises on model output: unparseable is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from ponder.checkers.extract import extract_answer
from ponder.checkers.numeric import find_numbers, numbers_equal, parse_number
from ponder.errors import InvalidParameterError


@dataclass
class Checker:
    """Extract, normalize and compare answers of one kind."""

    kind: str = "number"

    def extract(self, text: str) -> str | None:
        return extract_answer(text, self.kind)

    def key(self, answer: str | None):
        """A hashable canonical form; None when the answer cannot be understood."""
        if answer is None:
            return None
        if self.kind == "number":
            v = parse_number(answer)
            return v if v is None else (v if v != 0 else Fraction(0))
        if self.kind == "list":
            items = _split_list(answer)
            vals = [parse_number(x) for x in items]
            return tuple(vals) if items and all(v is not None for v in vals) else None
        return _norm_text(answer)

    def correct(self, answer: str | None, reference: str) -> bool:
        got, want = self.key(answer), self.key(reference)
        if got is None or want is None:
            return False
        if self.kind == "number":
            return numbers_equal(got, want)
        if self.kind == "list":
            return len(got) == len(want) and all(numbers_equal(a, b) for a, b in zip(got, want))
        return got == want

    def check(self, text: str, reference: str) -> tuple[str | None, bool]:
        """(extracted answer, correct?) for a model's full output."""
        ans = self.extract(text)
        return ans, self.correct(ans, reference)


def _split_list(s: str) -> list[str]:
    # the numbers in order: "1, 2, 3", "1 2 3" and "[1,2,3]" are three; "1,000" is one
    return find_numbers(s)


def _norm_text(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip().strip(".!*\"'`").lower())


class LatexChecker(Checker):
    """Mathematical equivalence of LaTeX answers via math-verify (optional: pip install 'ponder[math]')."""

    def __init__(self):
        super().__init__("latex")
        from ponder.checkers import latex

        self._latex = latex.require()

    def extract(self, text: str) -> str | None:
        from ponder.checkers.extract import marked_segment

        seg = marked_segment(text)
        if seg is not None:
            return seg
        nums = find_numbers(text)
        return nums[-1] if nums else None

    def key(self, answer):
        if answer is None:
            return None
        v = parse_number(answer)
        return v if v is not None else _norm_text(answer)

    def correct(self, answer, reference):
        if answer is None:
            return False
        return self._latex.equivalent(answer, reference)


CHECKERS = {"number": "numbers: integers, decimals, fractions, scientific notation, thousands separators",
            "list": "a list of numbers, in order",
            "text": "exact text, ignoring case, spacing and final punctuation",
            "latex": "LaTeX expressions via math-verify (optional extra 'ponder[math]')"}


def get_checker(kind: str) -> Checker:
    if kind == "latex":
        return LatexChecker()
    if kind not in CHECKERS:
        raise InvalidParameterError(f"unknown checker {kind!r}; valid: {', '.join(CHECKERS)}", "checker")
    return Checker(kind)
