"""The `algorithmic` suite: small puzzles with one deterministic answer.

Sorting, counting, the next term of a sequence, Tower of Hanoi moves, the largest of a list
and the sum of a list.  Difficulty grows the size of the instance (list length, number of
disks, size of the terms).  Problem i depends only on (seed, difficulty, i).
"""

from __future__ import annotations

import random

from ponder.tasks.problem import Problem, fmt_int

CATEGORIES = ("sort", "count", "next", "hanoi", "max", "sum")


def _numbers(rng, k, d, fmt):
    vals = [rng.randint(0 if d == 1 else 10 ** (d - 1), 10 ** d - 1) for _ in range(k)]
    return vals, ", ".join(fmt_int(v, fmt) for v in vals)


def _sort(rng, d, fmt):
    vals, shown = _numbers(rng, 2 + d, min(d, 3), fmt)
    order = rng.choice(["ascending", "descending"])
    out = sorted(vals, reverse=order == "descending")
    return f"Sort these numbers in {order} order: {shown}.", ", ".join(map(str, out)), "list"


def _count(rng, d, fmt):
    k = 4 + 3 * d
    target = rng.randint(0, 9)
    vals = [target if rng.random() < 0.3 else rng.randint(0, 9) for _ in range(k)]
    return (f"How many times does {target} appear in this list: {', '.join(map(str, vals))}?",
            str(vals.count(target)), "number")


def _next(rng, d, fmt):
    kind = ["arithmetic", "geometric", "squares"][rng.randint(0, min(2, d - 1))]
    if kind == "arithmetic":
        a, step = rng.randint(1, 10 ** d), rng.randint(1, 10 ** d) * rng.choice([1, -1])
        terms = [a + i * step for i in range(5)]
    elif kind == "geometric":
        a, r = rng.randint(1, 9), rng.randint(2, 2 + d)
        terms = [a * r ** i for i in range(5)]
    else:
        a = rng.randint(1, 10 * d)
        terms = [(a + i) ** 2 for i in range(5)]
    shown = ", ".join(fmt_int(t, fmt) for t in terms[:4])
    return f"What is the next term of the sequence {shown}, ...?", str(terms[4]), "number"


def _hanoi(rng, d, fmt):
    n = rng.randint(d + 1, d + 3)
    return (f"What is the minimum number of moves needed to solve the Tower of Hanoi with {n} disks?",
            str(2 ** n - 1), "number")


def _max(rng, d, fmt):
    vals, shown = _numbers(rng, 3 + 2 * d, d, fmt)
    return f"What is the largest number in this list: {shown}?", str(max(vals)), "number"


def _sum(rng, d, fmt):
    vals, shown = _numbers(rng, 2 + d, min(d, 3), fmt)
    return f"What is the sum of these numbers: {shown}?", str(sum(vals)), "number"


_MAKERS = {"sort": _sort, "count": _count, "next": _next, "hanoi": _hanoi, "max": _max, "sum": _sum}


def make_problem(seed: int, difficulty: int, index: int, number_format: str = "plain",
                 categories: tuple[str, ...] = CATEGORIES) -> Problem:
    rng = random.Random(f"algorithmic:{seed}:{difficulty}:{index}")
    cat = categories[index % len(categories)]
    question, answer, kind = _MAKERS[cat](rng, difficulty, number_format)
    return Problem(id=f"algorithmic/d{difficulty}/s{seed}/{index}", question=question, answer=answer, kind=kind,
                   category=cat, difficulty=difficulty, answer_form="list" if kind == "list" else "number")
