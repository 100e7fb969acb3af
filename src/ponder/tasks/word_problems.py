"""The `words` suite: short arithmetic word problems (one or two steps), with exact answers.

Templates over everyday situations (buying, sharing, rates, percentages, change, time, area);
difficulty is the number of digits of the quantities, and from difficulty 2 on half of the
problems take two steps.  Problem i depends only on (seed, difficulty, i).  The questions are
ponder's own; none comes from a published dataset.  Each template also writes its solution as one
calc expression ("7 * 12 = 84"), which `--shots` shows when a run has calc.
"""

from __future__ import annotations

import random
from fractions import Fraction

from ponder.tasks.problem import Problem, fmt_int, fmt_value

MAX_DIFFICULTY = 4
CATEGORIES = ("buy", "share", "rate", "percent", "change", "time", "area", "compare")
_NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Farah", "Gus", "Hana", "Ivo", "Jin", "Kofi", "Lena")
_ITEMS = (("pencil", "pencils"), ("apple", "apples"), ("notebook", "notebooks"), ("ticket", "tickets"),
          ("cookie", "cookies"), ("marble", "marbles"))


def _n(rng, d, lo=2):
    return rng.randint(max(lo, 10 ** (d - 1)), max(lo + 1, 10 ** d - 1))


def _buy(rng, d, f, two):
    name, (one, many) = rng.choice(_NAMES), rng.choice(_ITEMS)
    k, price = _n(rng, 1), _n(rng, d)
    if two:
        k2, price2 = _n(rng, 1), _n(rng, d)
        return (f"{name} buys {k} {many} at ${f(price)} each and {k2} books at ${f(price2)} each. "
                f"How many dollars does {name} spend?", k * price + k2 * price2,
                f"{k} * {f(price)} + {k2} * {f(price2)}")
    return (f"{name} buys {k} {many} at ${f(price)} each. How many dollars does {name} spend?", k * price,
            f"{k} * {f(price)}")


def _share(rng, d, f, two):
    name, (one, many) = rng.choice(_NAMES), rng.choice(_ITEMS)
    people, each = _n(rng, 1), _n(rng, d)
    if two:
        kept = _n(rng, d)
        return (f"{name} has {f(people * each + kept)} {many}, keeps {f(kept)} and shares the rest equally among "
                f"{people} friends. How many {many} does each friend get?", each,
                f"({f(people * each + kept)} - {f(kept)}) / {people}")
    return (f"{name} shares {f(people * each)} {many} equally among {people} friends. "
            f"How many {many} does each friend get?", each, f"{f(people * each)} / {people}")


def _rate(rng, d, f, two):
    speed, hours = _n(rng, d), _n(rng, 1, lo=2)
    if two:
        hours2 = _n(rng, 1)
        return (f"A train travels at {f(speed)} km per hour for {hours} hours, then {hours2} more hours at the same "
                f"speed. How many km does it travel in all?", speed * (hours + hours2),
                f"{f(speed)} * ({hours} + {hours2})")
    return (f"A car travels at {f(speed)} km per hour. How many km does it travel in {hours} hours?", speed * hours,
            f"{f(speed)} * {hours}")


def _percent(rng, d, f, two):
    price = _n(rng, d) * 10
    pct = rng.choice([10, 20, 25, 50, 5, 15, 30])
    if two:
        return (f"A coat costs ${f(price)}. It is on sale for {pct}% off. What is the sale price in dollars?",
                Fraction(price) * (100 - pct) / 100, f"{f(price)} - {pct}% of {f(price)}")
    return f"What is {pct}% of {f(price)}?", Fraction(price) * pct / 100, f"{pct}% of {f(price)}"


def _change(rng, d, f, two):
    name = rng.choice(_NAMES)
    a, b = _n(rng, d), _n(rng, d)
    paid = (a + b) // 10 * 10 + 10 ** d
    if two:
        return (f"{name} buys a lamp for ${f(a)} and a rug for ${f(b)} and pays with ${f(paid)}. "
                f"How many dollars of change does {name} get?", paid - a - b, f"{f(paid)} - {f(a)} - {f(b)}")
    return (f"{name} pays ${f(paid)} for a ${f(a)} lamp. How many dollars of change does {name} get?", paid - a,
            f"{f(paid)} - {f(a)}")


def _time(rng, d, f, two):
    per, days = _n(rng, d), _n(rng, 1)
    if two:
        weeks = _n(rng, 1)
        return (f"A machine makes {f(per)} parts each day, {days} days a week. How many parts does it make in "
                f"{weeks} weeks?", per * days * weeks, f"{f(per)} * {days} * {weeks}")
    return (f"A bakery bakes {f(per)} loaves each day. How many loaves does it bake in {days} days?", per * days,
            f"{f(per)} * {days}")


def _area(rng, d, f, two):
    w, h = _n(rng, d), _n(rng, 1, lo=2)
    if two:
        return (f"A garden is {f(w)} m long and {h} m wide. A path of 1 m is taken from its width. "
                f"What area in square metres is left?", w * (h - 1), f"{f(w)} * ({h} - 1)")
    return f"A room is {f(w)} m long and {h} m wide. What is its area in square metres?", w * h, f"{f(w)} * {h}"


def _compare(rng, d, f, two):
    a, b = rng.sample(_NAMES, 2)
    x, y = _n(rng, d), _n(rng, d)
    while x == y:
        y = _n(rng, d)
    if two:
        z = _n(rng, d)
        return (f"{a} has {f(x)} stamps and {b} has {f(y)}. {b} gets {f(z)} more. How many stamps do they have "
                f"together now?", x + y + z, f"{f(x)} + {f(y)} + {f(z)}")
    return (f"{a} has {f(x)} stamps and {b} has {f(y)}. How many more stamps does the one with more have?",
            abs(x - y), f"{f(max(x, y))} - {f(min(x, y))}")


_MAKERS = {"buy": _buy, "share": _share, "rate": _rate, "percent": _percent, "change": _change, "time": _time,
           "area": _area, "compare": _compare}


def make_problem(seed, difficulty: int, index: int, number_format: str = "plain",
                 categories: tuple[str, ...] = CATEGORIES) -> Problem:
    rng = random.Random(f"words:{seed}:{difficulty}:{index}")
    cat = categories[index % len(categories)]
    two = difficulty >= 2 and (index // len(categories)) % 2 == 1

    def f(v):
        return fmt_int(v, number_format)

    question, value, expr = _MAKERS[cat](rng, difficulty, f, two)
    return Problem(id=f"words/d{difficulty}/s{seed}/{index}", question=question, answer=fmt_value(Fraction(value)),
                   kind="number", category=f"{cat}/{'two' if two else 'one'}-step", difficulty=difficulty,
                   answer_form="number", solution=f"{expr} = {fmt_value(Fraction(value))}")
