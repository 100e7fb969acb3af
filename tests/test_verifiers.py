"""Solution verifiers (puzzles, numbers): right, alternative-right, wrong and malformed solutions;
suites reproducible; shots disjoint from the evaluated problems."""

import pytest

from ponder.errors import InvalidParameterError
from ponder.tasks import checker_for, load_problems, load_shots, messages, shots_for
from ponder.tasks.number_tasks import is_prime, parse_factors
from ponder.tasks.verify import VERIFIERS


def _one(suite, cat, d=2, i=0):
    return load_problems(suite, difficulty=d, count=1 + i, categories=[cat])[0][i]


def _verdict(p, text):
    return VERIFIERS[p.meta["verifier"]](p.meta["instance"], text)


@pytest.mark.parametrize("suite, cat", [("puzzles", c) for c in ("hanoi", "river", "blocks", "checkers")]
                         + [("numbers", c) for c in ("equation", "factor", "sort")])
@pytest.mark.parametrize("d", [1, 3])
def test_reference_solutions_verify_and_garbage_does_not(suite, cat, d):
    probs, _ = load_problems(suite, difficulty=d, count=6, categories=[cat])
    for p in probs:
        v = _verdict(p, p.answer)
        assert v.ok and v.solution, (p.question, p.answer, v)
        assert not _verdict(p, "I do not know.").ok
        assert _verdict(p, "").solution is None
        # the checker a strategy gets needs no answer key
        assert checker_for(p).check(f"Here you go:\n{p.answer}\n", reference="ignored")[1]


def test_hanoi_simulates_the_moves():
    p = _one("puzzles", "hanoi", d=1)  # 3 disks
    inst = p.meta["instance"]
    lines = p.answer.splitlines()
    assert len(lines) == 7
    assert not _verdict(p, "\n".join(lines[:-1])).ok  # stops one move short
    v = _verdict(p, "\n".join([lines[1]] + lines))  # a bigger disk first: not on top
    assert not v.ok and "not on top" in v.reason
    src, dst = inst["src"], inst["dst"]
    via = ({"A", "B", "C"} - {src, dst}).pop()
    bad = f"disk 1 from {src} to {via}\ndisk 2 from {src} to {via}"
    assert "smaller" in _verdict(p, bad).reason
    # a legal, longer route is still a solution: bounce disk 1 back and forth first
    longer = f"disk 1 from {src} to {via}\ndisk 1 from {via} to {src}\n" + p.answer
    assert _verdict(p, longer).ok
    assert _verdict(p, "Move 1: " + p.answer.replace("disk", "Disk")).ok  # prose around moves is fine


def test_river_safety_and_capacity():
    p = _one("puzzles", "river", d=1)  # 2 pairs, boat of 2
    assert p.meta["instance"] == {"n": 2, "k": 2}
    v = _verdict(p, "g1 g2 c1")
    assert not v.ok and "more than 2" in v.reason
    v = _verdict(p, "g2 c1")  # client 1 with guard 2 and without guard 1
    assert not v.ok and "another client's guard" in v.reason
    v = _verdict(p, "c1 c2\nc1\nc1 g1")  # g1 and g2 ... c2 alone on the right with nobody: check rules hold
    assert not v.ok


def test_blocks_and_checkers_reject_illegal_moves():
    p = _one("puzzles", "blocks", d=2)
    first = p.answer.splitlines()[0]  # "move X from i to j"
    _, b, _, i, _, j = first.split()
    assert not _verdict(p, f"move {b} from {j} to {i}").ok
    q = _one("puzzles", "checkers", d=1)  # R _ B
    assert _verdict(q, "from 1 to 2\nfrom 3 to 1\nfrom 2 to 3").ok
    v = _verdict(q, "from 3 to 2\nfrom 1 to 3\nfrom 2 to 1")
    assert v.ok
    v = _verdict(q, "from 2 to 1")
    assert not v.ok and "no checker" in v.reason
    v = _verdict(q, "from 1 to 2\nfrom 2 to 1")
    assert not v.ok and "red moves right" in v.reason


def test_equation_is_checked_by_substitution():
    p = _one("numbers", "equation", d=2)  # a quadratic with two integer roots
    lhs = p.meta["instance"]["lhs"]
    r1 = int(p.answer)
    r2 = -lhs[1] - r1  # the other root (sum of roots = -b)
    assert _verdict(p, f"x = {r1}").ok and _verdict(p, f"The answer is {r2}.").ok
    assert not _verdict(p, f"x = {r1 + 1}").ok
    lin = _one("numbers", "equation", d=1)
    assert _verdict(lin, lin.answer).ok and not _verdict(lin, str(int(lin.answer) + 1)).ok


def test_factorization_multiplies_back_and_tests_primality():
    p = _one("numbers", "factor", d=2)
    n = p.meta["instance"]["n"]
    fs = [int(x) for x in p.answer.split(" * ")]
    assert _verdict(p, f"{n} = " + " × ".join(map(str, reversed(fs)))).ok
    assert not _verdict(p, f"{n} = 1 * {n}").ok  # 1 is not prime
    if len(fs) > 1:
        v = _verdict(p, f"{fs[0] * fs[1]} * " + " * ".join(map(str, fs[2:])) if len(fs) > 2 else str(fs[0] * fs[1]))
        assert not v.ok and "not prime" in v.reason
    assert not _verdict(p, " * ".join(map(str, fs[:-1] + [fs[-1] + 2]))).ok
    assert parse_factors("360 = 2^3 * 3^2 * 5") == [2, 2, 2, 3, 3, 5]
    assert parse_factors("2^100000") is None  # bounded
    assert [x for x in range(30) if is_prime(x)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
    assert is_prime(2_147_483_647) and not is_prime(2_147_483_647 * 3)


def test_sort_needs_the_same_numbers_in_order():
    p = _one("numbers", "sort", d=2)
    items = p.meta["instance"]["items"]
    desc = p.meta["instance"]["descending"]
    assert _verdict(p, ", ".join(map(str, sorted(items, reverse=desc)))).ok
    assert not _verdict(p, ", ".join(map(str, sorted(items, reverse=not desc)))).ok
    assert not _verdict(p, ", ".join(map(str, sorted(items, reverse=desc)[:-1]))).ok


def test_word_problems_are_exact():
    import re
    from fractions import Fraction

    probs, _ = load_problems("words", difficulty=2, count=32, categories=["buy", "percent"])
    for p in probs:
        nums = [Fraction(x) for x in re.findall(r"\d+", p.question)]
        if p.category == "buy/one-step":
            assert Fraction(p.answer) == nums[0] * nums[1]
        elif p.category == "percent/one-step":
            assert Fraction(p.answer) == nums[0] * nums[1] / 100
    assert {p.category.split("/")[1] for p in probs} == {"one-step", "two-step"}


def test_verifier_suites_are_reproducible_and_bounded():
    for suite in ("puzzles", "numbers", "words"):
        a, _ = load_problems(suite, difficulty=2, count=8, seed=3)
        b, _ = load_problems(suite, difficulty=2, count=8, seed=3)
        assert a == b and len({p.id for p in a}) == 8
    with pytest.raises(InvalidParameterError, match="puzzles difficulty must be in 1..5"):
        load_problems("puzzles", difficulty=9)


def test_shots_are_disjoint_and_from_the_suite():
    probs, _ = load_problems("arithmetic", difficulty=1, count=100, seed=0)
    shots = load_shots("arithmetic", 4, difficulty=1, seed=0, exclude=probs)
    assert len(shots) == 4 and not {s.question for s in shots} & {p.question for p in probs}
    msgs = messages(probs[0], "direct", shots)
    assert [m["role"] for m in msgs] == ["user", "assistant"] * 4 + ["user"]
    assert msgs[1]["content"] == shots[0].answer
    worked = messages(probs[0], "direct", shots, worked=True)  # a run with calc: the shots' worked solutions
    assert [m["content"] for m in worked[1::2]] == [s.solution for s in shots]
    assert worked[1]["content"].endswith(f" = {shots[0].answer}") and worked[-1] == msgs[-1]
    assert messages(probs[0], "steps", shots, worked=True)[1]["content"] == \
        f"{shots[0].solution}\nThe answer is {shots[0].answer}."
    pz, _ = load_problems("puzzles", difficulty=1, count=4)
    assert load_shots("puzzles", 2, difficulty=1, exclude=pz)[0].answer_form == "moves"
    # --shot-match category: K shots of each evaluated category, still disjoint from the problems
    for suite in ("arithmetic", "words"):
        probs, _ = load_problems(suite, difficulty=2, count=40, seed=0)
        pool = load_shots(suite, 3, difficulty=2, seed=0, exclude=probs, match="category")
        assert not {s.question for s in pool} & {p.question for p in probs}
        for p in probs:
            own = shots_for(p, pool, "category")
            assert len(own) == 3 and {s.category for s in own} == {p.category}, p
        assert shots_for(probs[0], pool) == pool
    # the runner's chat: the tools' exemplars, then the problem's own shots worked in calc's style
    from ponder.runner import RunConfig
    from ponder.runner.execute import chat, shots_of
    from ponder.tools import exemplar_messages

    cfg = RunConfig(suite="words", difficulty=2, problems=40, tools=["calc"], shots=2, shot_match="category")
    probs, _ = load_problems("words", difficulty=2, count=40, seed=0)
    msgs = chat(cfg, probs[9], shots_of(cfg, probs))
    tool = exemplar_messages(["calc"])
    assert msgs[:len(tool)] == tool and len(msgs) == len(tool) + 5
    own = shots_for(probs[9], shots_of(cfg, probs), "category")
    assert [m["content"] for m in msgs[len(tool) + 1:-1:2]] == [s.solution for s in own]
    with pytest.raises(InvalidParameterError, match="unknown shot match"):
        load_shots("arithmetic", 2, match="nearest")
    assert messages(pz[0], "direct", load_shots("puzzles", 1, difficulty=1, exclude=pz), worked=True)[1]["content"] \
        == load_shots("puzzles", 1, difficulty=1, exclude=pz)[0].answer  # no worked solution: the reference
    with pytest.raises(InvalidParameterError, match="procedural suite"):
        load_shots("data.jsonl", 2)
