"""Problem: one checkable question with its reference answer, and how to render numbers in it."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

NUMBER_FORMATS = ("plain", "commas")


@dataclass(frozen=True)
class Problem:
    id: str  # stable across runs: the suite, difficulty, seed and index it came from
    question: str  # as shown to the model, numbers already formatted
    answer: str  # the reference, in plain notation
    kind: str = "number"  # which checker judges it (see ponder.checkers)
    category: str = ""  # e.g. "add/decimal", "hanoi"
    difficulty: int | None = None
    answer_form: str = "number"  # what the prompt asks for: number, fraction, list, text
    # a worked answer in calc's "expression = value" style, written by the generator for the problem's
    # type (shown for shots when the run has calc); empty when the suite writes none
    solution: str = ""
    meta: dict = field(default_factory=dict, compare=False)


def fmt_int(n: int, number_format: str) -> str:
    """An integer as text: "12345" or, with commas (the paper "Tokenization counts"), "12,345"."""
    return f"{n:,}" if number_format == "commas" else str(n)


def fmt_decimal(d: Decimal, number_format: str) -> str:
    """A decimal in positional notation (never exponent), integer part grouped if asked."""
    s = format(d, "f")
    sign = "-" if s.startswith("-") else ""
    s = s.lstrip("-")
    whole, dot, frac = s.partition(".")
    return sign + fmt_int(int(whole), number_format) + dot + frac


def fmt_value(v: Fraction | int | Decimal, number_format: str = "plain") -> str:
    """An exact value as the shortest faithful text: integer, terminating decimal, else a/b."""
    if isinstance(v, Decimal):
        return fmt_decimal(v.normalize() if v != v.to_integral() else v.to_integral(), number_format)
    v = Fraction(v)
    if v.denominator == 1:
        return fmt_int(v.numerator, number_format)
    d = v.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d == 1:  # terminates
        return fmt_decimal(Decimal(v.numerator) / Decimal(v.denominator), number_format)
    return f"{fmt_int(v.numerator, number_format)}/{fmt_int(v.denominator, number_format)}"
