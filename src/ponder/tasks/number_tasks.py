"""The `numbers` suite: number tasks (after Number Cookbook) whose answers are checked without a key.

- equation: find an x that satisfies a linear (difficulty 1) or quadratic equation; checked by
  substituting the answer (a quadratic has two right answers);
- factor: write N as a product of primes; checked by multiplying the factors back and testing each
  for primality;
- sort: sort a list; checked as an ordered permutation of the given numbers.

Difficulty is the number of digits of the roots, primes and list items.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction

from ponder.checkers.extract import extract_answer
from ponder.checkers.numeric import find_numbers, parse_number
from ponder.tasks.problem import Problem, fmt_int, fmt_value
from ponder.tasks.verify import Verdict, verifier

CATEGORIES = ("equation", "factor", "sort")
MAX_DIFFICULTY = 6


def _int(rng, d, lo=1):
    return rng.randint(max(lo, 10 ** (d - 1)), 10 ** d - 1)


# -- equations -------------------------------------------------------------------------------------
def _poly_text(coeffs) -> str:
    """'x^2 - 7x + 12' from [1, -7, 12] (highest power first)."""
    deg = len(coeffs) - 1
    parts = []
    for i, c in enumerate(coeffs):
        p = deg - i
        if c == 0:
            continue
        mag = abs(c)
        term = ("" if mag == 1 and p else str(mag)) + ("x" if p >= 1 else "") + (f"^{p}" if p >= 2 else "")
        parts.append(("- " if c < 0 else "+ ") + term if parts else ("-" if c < 0 else "") + term)
    return " ".join(parts)


@verifier("equation")
def verify_equation(inst: dict, text: str) -> Verdict:
    ans = extract_answer(text, "number")
    x = parse_number(ans) if ans is not None else None
    if x is None:
        return Verdict(False, None, "no number found")
    coeffs = [Fraction(c) for c in inst["lhs"]]
    value = sum(c * x ** (len(coeffs) - 1 - i) for i, c in enumerate(coeffs))
    ok = value == Fraction(inst["rhs"])
    return Verdict(ok, fmt_value(x), "" if ok else f"x = {fmt_value(x)} gives {fmt_value(value)}, not {inst['rhs']}")


def _equation(rng, d, fmt):
    if d == 1:
        a, x = rng.randint(2, 9), rng.randint(-9, 9)
        b = rng.randint(-20, 20)
        lhs, rhs = [a, b], a * x + b
        q = f"Solve for x: {_poly_text(lhs)} = {rhs}."
        return q, str(x), {"lhs": lhs, "rhs": rhs}
    r1, r2 = _int(rng, d - 1) * rng.choice([1, -1]), _int(rng, d - 1) * rng.choice([1, -1])
    lhs = [1, -(r1 + r2), r1 * r2]
    q = f"Find a value of x with {_poly_text(lhs)} = 0."
    return q, str(max(r1, r2)), {"lhs": lhs, "rhs": 0}


# -- factorization ---------------------------------------------------------------------------------
def is_prime(n: int) -> bool:
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):  # deterministic below 3.3e24
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


_FACTOR = re.compile(r"(\d[\d,]*)\s*(?:\^\s*(\d+))?")
MAX_FACTORS = 64


def parse_factors(text: str) -> list[int] | None:
    """The factors of the last line that has any ("2^3 * 3 * 5" -> [2, 2, 2, 3, 5]), after its last "="."""
    lines = [ln for ln in text.strip().splitlines() if re.search(r"\d", ln)]
    if not lines:
        return None
    seg = lines[-1].rsplit("=", 1)[-1]
    seg = re.split(r"(?i)answer\s*(?:is)?\s*:?", seg)[-1]
    out = []
    for base, exp in _FACTOR.findall(seg):
        e = int(exp) if exp else 1
        if e > MAX_FACTORS or len(out) + e > MAX_FACTORS:
            return None
        out += [int(base.replace(",", ""))] * e
    return out or None


@verifier("factor")
def verify_factor(inst: dict, text: str) -> Verdict:
    fs = parse_factors(text)
    if not fs:
        return Verdict(False, None, "no factors found")
    sol = " * ".join(map(str, sorted(fs)))
    n = inst["n"]
    prod = 1
    for f in fs:
        prod *= f
        if prod > n:
            break
    if prod != n:
        return Verdict(False, sol, f"the factors multiply to {prod if prod <= n else 'more than ' + str(n)}, not {n}")
    bad = [f for f in fs if not is_prime(f)]
    if bad:
        return Verdict(False, sol, f"{bad[0]} is not prime")
    return Verdict(True, sol)


def _factor(rng, d, fmt):
    primes = []
    for _ in range(rng.randint(2, 4)):
        p = _int(rng, d, lo=2)
        while not is_prime(p):
            p = _int(rng, d, lo=2)
        primes.append(p)
    n = 1
    for p in primes:
        n *= p
    q = f"Write {fmt_int(n, fmt)} as a product of prime numbers."
    return q, " * ".join(map(str, sorted(primes))), {"n": n}


# -- sorting ---------------------------------------------------------------------------------------
@verifier("sort")
def verify_sort(inst: dict, text: str) -> Verdict:
    seg = extract_answer(text, "list")
    items = [parse_number(x) for x in find_numbers(seg)] if seg else []
    if not items or any(v is None for v in items):
        return Verdict(False, None, "no list found")
    sol = ", ".join(fmt_value(v) for v in items)
    given = sorted(Fraction(v) for v in inst["items"])
    if sorted(items) != given:
        return Verdict(False, sol, "not the given numbers")
    want = sorted(items, reverse=inst["descending"])
    return Verdict(items == want, sol, "" if items == want else "not in order")


def _sort(rng, d, fmt):
    items = [_int(rng, d) for _ in range(3 + d)]
    desc = rng.random() < 0.5
    q = f"Sort in {'descending' if desc else 'ascending'} order: {', '.join(fmt_int(v, fmt) for v in items)}."
    return q, ", ".join(map(str, sorted(items, reverse=desc))), {"items": items, "descending": desc}


_MAKERS = {"equation": _equation, "factor": _factor, "sort": _sort}
_FORMS = {"equation": "number", "factor": "factors", "sort": "list"}


def make_problem(seed, difficulty: int, index: int, number_format: str = "plain",
                 categories: tuple[str, ...] = CATEGORIES) -> Problem:
    rng = random.Random(f"numbers:{seed}:{difficulty}:{index}")
    cat = categories[index % len(categories)]
    question, reference, instance = _MAKERS[cat](rng, difficulty, number_format)
    return Problem(id=f"numbers/d{difficulty}/s{seed}/{index}", question=question, answer=reference, kind="verify",
                   category=cat, difficulty=difficulty, answer_form=_FORMS[cat],
                   meta={"verifier": cat, "instance": instance})
