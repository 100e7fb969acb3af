"""The `arithmetic` suite: number understanding in the spirit of Number Cookbook.

Operations (add, sub, mul, div, compare, round, digit, place) over integers, decimals,
fractions and scientific notation.  Difficulty is the number of digits of the operands.
Each problem carries a worked solution in calc's "expression = value" style for its type
(`a ÷ b`, `max(a, b)`, `round(x, 1)`, a digit as `6789 // 100 % 10`), which `--shots` shows
when a run has calc.
Problem i depends only on (seed, difficulty, i), so a suite is reproducible and its first
N problems are the same whatever N is.  Every answer is exact: divisions are built from
their quotient.
"""

from __future__ import annotations

import random
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from ponder.tasks.problem import Problem, fmt_decimal, fmt_int, fmt_value

CATEGORIES = ("add", "sub", "mul", "div", "compare", "round", "digit", "place")
REPRESENTATIONS = ("integer", "decimal", "fraction", "scientific")
_REPS = {"round": ("integer", "decimal"), "digit": ("integer",), "place": ("integer", "decimal")}
_SYMBOL = {"add": "+", "sub": "-", "mul": "×", "div": "÷"}
_PLACES = ["ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands", "millions",
           "ten-millions", "hundred-millions"]
_DEC_PLACES = ["tenths", "hundredths", "thousandths"]


class _Num:
    """An exact value and how it is written in one representation."""

    def __init__(self, value: Fraction, text: str):
        self.value, self.text = value, text


def _int_digits(rng: random.Random, d: int) -> int:
    return rng.randint(1 if d == 1 else 10 ** (d - 1), 10 ** d - 1)


def _decimal_places(d: int) -> int:
    return 1 if d <= 3 else 2


def _sci_text(v: Fraction) -> str:
    dec = (Decimal(v.numerator) / Decimal(v.denominator)).normalize()
    mant, _, exp = format(dec, "e").partition("e")
    return f"{mant}e{int(exp)}"


def _render(v: Fraction, rep: str, fmt: str, den: int | None = None) -> str:
    if rep == "integer":
        return fmt_int(int(v), fmt)
    if rep == "decimal":
        return fmt_decimal(Decimal(v.numerator) / Decimal(v.denominator), fmt)
    if rep == "fraction":
        den = den or v.denominator
        return f"{fmt_int(int(v * den), fmt)}/{fmt_int(den, fmt)}"
    return _sci_text(v)


def _operand(rng: random.Random, rep: str, d: int, fmt: str) -> _Num:
    if rep == "integer":
        v = Fraction(_int_digits(rng, d))
        return _Num(v, _render(v, rep, fmt))
    if rep == "decimal":
        k = _decimal_places(d)
        n = _int_digits(rng, max(d, k + 1) if d > 1 else 1)
        v = Fraction(n, 10 ** k)
        return _Num(v, fmt_decimal(Decimal(n).scaleb(-k), fmt))
    if rep == "fraction":
        den = max(2, _int_digits(rng, d))
        num = _int_digits(rng, d)
        while Fraction(num, den).denominator == 1:
            num = _int_digits(rng, d)
        return _Num(Fraction(num, den), f"{fmt_int(num, fmt)}/{fmt_int(den, fmt)}")
    # scientific: d significant digits, exponent small enough to stay readable
    mant = _int_digits(rng, d)
    exp = rng.randint(-2, 4)
    v = Fraction(mant, 10 ** (d - 1)) * Fraction(10) ** exp
    return _Num(v, _sci_text(v))


def _binary(rng, op, rep, d, fmt):
    a, b = _operand(rng, rep, d, fmt), _operand(rng, rep, d, fmt)
    if op == "div":
        # a = q * b so the quotient is exact in the same representation
        q = _operand(rng, rep, d, fmt) if rep != "decimal" else _operand(rng, "decimal", max(1, d - 1), fmt)
        if rep == "integer" and b.value == 1:
            b = _Num(Fraction(2), _render(Fraction(2), rep, fmt))
        v = q.value * b.value
        a = _Num(v, _render(v, rep, fmt) if rep != "fraction" else f"{fmt_int(v.numerator, fmt)}/{fmt_int(v.denominator, fmt)}")
        answer = q.value
    else:
        answer = {"add": a.value + b.value, "sub": a.value - b.value, "mul": a.value * b.value}[op]
    expr = f"{a.text} {_SYMBOL[op]} {b.text}"
    return f"What is {expr}?", answer, expr


def _compare(rng, rep, d, fmt):
    a, b = _operand(rng, rep, d, fmt), _operand(rng, rep, d, fmt)
    while a.value == b.value:
        b = _operand(rng, rep, d, fmt)
    big = a if a.value > b.value else b
    return f"Which is larger: {a.text} or {b.text}?", big.value, big.text, f"max({a.text}, {b.text})"


def _round(rng, rep, d, fmt):
    if rep == "integer" and d >= 2:
        n = _int_digits(rng, d)
        p = rng.randint(1, d - 1)
        r = int((Decimal(n) / 10 ** p).quantize(Decimal(1), ROUND_HALF_UP)) * 10 ** p
        return (f"Round {fmt_int(n, fmt)} to the nearest {_PLACES[p][:-1] if p < len(_PLACES) else '10^' + str(p)}.",
                Fraction(r), f"round({fmt_int(n, fmt)}, -{p})")
    places = rng.randint(0, 1)
    n = _int_digits(rng, max(d, 1) + 2)
    x = Decimal(n).scaleb(-3 if places else -2)
    q = Decimal(1).scaleb(-places)
    r = x.quantize(q, ROUND_HALF_UP)
    target = "the nearest whole number" if places == 0 else "one decimal place"
    return (f"Round {fmt_decimal(x, fmt)} to {target}.", Fraction(r),
            f"round({fmt_decimal(x, fmt)}, {places})")  # 0 written out: the places match the words


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def _digit_expr(number: str, p: int) -> str:
    """The digit worth 10^p of a whole number written `number`, as calc computes it: "6789 // 100 % 10"."""
    return f"{number} % 10" if p == 0 else f"{number} // {10 ** p} % 10"


def _digit(rng, d, fmt):
    n = _int_digits(rng, max(d, 2))
    s = str(n)
    k = rng.randint(1, len(s))
    side = rng.choice(["left", "right"])
    digit = s[k - 1] if side == "left" else s[-k]
    p = len(s) - k if side == "left" else k - 1
    return (f"What is the {_ordinal(k)} digit from the {side} of {fmt_int(n, fmt)}?", Fraction(int(digit)),
            _digit_expr(fmt_int(n, fmt), p))


def _place(rng, rep, d, fmt):
    if rep == "decimal":
        k = rng.randint(1, 3)
        whole = _int_digits(rng, d)
        frac = rng.randint(10 ** (k - 1), 10 ** 3 - 1)
        x = Decimal(whole) + Decimal(frac).scaleb(-3)
        digit = format(x, "f").split(".")[1].ljust(3, "0")[k - 1]
        return (f"What digit is in the {_DEC_PLACES[k - 1]} place of {fmt_decimal(x, fmt)}?", Fraction(int(digit)),
                _digit_expr(f"{fmt_decimal(x, fmt)} * {10 ** k} // 1", 0))
    n = _int_digits(rng, max(d, 2))
    s = str(n)
    p = rng.randint(0, min(len(s), len(_PLACES)) - 1)
    return (f"What digit is in the {_PLACES[p]} place of {fmt_int(n, fmt)}?", Fraction(int(s[-1 - p])),
            _digit_expr(fmt_int(n, fmt), p))


def make_problem(seed: int, difficulty: int, index: int, number_format: str = "plain",
                 categories: tuple[str, ...] = CATEGORIES) -> Problem:
    rng = random.Random(f"arithmetic:{seed}:{difficulty}:{index}")
    op = categories[index % len(categories)]
    reps = _REPS.get(op, REPRESENTATIONS)
    rep = reps[(index // len(categories)) % len(reps)]
    d, fmt = difficulty, number_format
    answer_text = None
    if op in _SYMBOL:
        question, value, expr = _binary(rng, op, rep, d, fmt)
    elif op == "compare":
        question, value, answer_text, expr = _compare(rng, rep, d, fmt)
    elif op == "round":
        question, value, expr = _round(rng, rep, d, fmt)
    elif op == "digit":
        question, value, expr = _digit(rng, d, fmt)
    else:
        question, value, expr = _place(rng, rep, d, fmt)
    form = "fraction" if rep == "fraction" and op in _SYMBOL and Fraction(value).denominator != 1 else "number"
    if answer_text is None or rep == "scientific":
        answer_text = fmt_value(Fraction(value))
    return Problem(id=f"arithmetic/d{difficulty}/s{seed}/{index}", question=question, answer=answer_text,
                   kind="number", category=f"{op}/{rep}", difficulty=difficulty, answer_form=form,
                   solution=f"{expr} = {fmt_value(Fraction(value))}")
