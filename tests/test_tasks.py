"""Task suites: reproducible, exact, rendered in both number formats; JSONL datasets and their errors."""

import json
from fractions import Fraction

import pytest

from ponder.checkers import get_checker, parse_number
from ponder.errors import InvalidParameterError, PonderError
from ponder.tasks import load_problems, messages
from ponder.tasks.arithmetic import CATEGORIES as ARITH


def test_suites_are_reproducible_and_prefix_stable():
    for suite in ("arithmetic", "algorithmic"):
        a, _ = load_problems(suite, difficulty=2, count=20, seed=7)
        b, _ = load_problems(suite, difficulty=2, count=5, seed=7)
        c, _ = load_problems(suite, difficulty=2, count=5, seed=8)
        assert a[:5] == b
        assert [p.question for p in b] != [p.question for p in c]
        assert len({p.id for p in a}) == 20


@pytest.mark.parametrize("suite", ["arithmetic", "words"])
def test_worked_solutions_are_calc_expressions_whose_value_is_the_answer(suite):
    """Every problem's worked solution ("expression = value", shown by --shots with calc) is right: calc
    computes its expression to exactly the value written, and that value is the reference."""
    from ponder.tools.calc import evaluate, format_value

    checker = get_checker("number")
    for d in (1, 2, 3, 4):
        for fmt in ("plain", "commas"):
            for p in load_problems(suite, difficulty=d, count=48, seed=5, number_format=fmt)[0]:
                expr, _, value = p.solution.rpartition(" = ")
                assert format_value(evaluate(expr)) == value, p
                assert checker.correct(value, p.answer), p
    digits, _ = load_problems("arithmetic", difficulty=3, count=64, categories=["digit", "place"])
    assert any("// 100 % 10" in p.solution for p in digits)  # the digit worth 10^2, as calc computes it


def test_arithmetic_covers_operations_and_representations():
    probs, _ = load_problems("arithmetic", difficulty=2, count=64)
    cats = {p.category for p in probs}
    assert {c.split("/")[0] for c in cats} == set(ARITH)
    assert {c.split("/")[1] for c in cats} >= {"integer", "decimal", "fraction", "scientific"}
    for p in probs:  # every reference is a number its own checker accepts
        assert parse_number(p.answer) is not None, p


def test_arithmetic_answers_are_right():
    probs, _ = load_problems("arithmetic", difficulty=3, count=40, categories=["add", "sub", "mul", "div"])
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "×": lambda a, b: a * b, "÷": lambda a, b: a / b}
    for p in probs:
        a, op, b = p.question.removeprefix("What is ").rstrip("?").split(" ")
        assert ops[op](parse_number(a), parse_number(b)) == Fraction(parse_number(p.answer)), p


def test_difficulty_is_digits():
    for d in (1, 4, 9):
        p = load_problems("arithmetic", difficulty=d, count=1, categories=["add"])[0][0]
        a = p.question.split(" ")[2]
        assert len(a) == d


def test_number_format_commas():
    plain, _ = load_problems("arithmetic", difficulty=6, count=8, categories=["add"])
    commas, _ = load_problems("arithmetic", difficulty=6, count=8, categories=["add"], number_format="commas")
    assert all("," not in p.question for p in plain)
    assert all("," in p.question for p in commas if "scientific" not in p.category)
    assert [p.answer for p in plain] == [p.answer for p in commas]
    alg, _ = load_problems("algorithmic", difficulty=4, count=6, categories=["max"], number_format="commas")
    assert any("," in p.question.split(":")[1].replace(", ", " ") for p in alg)


def test_algorithmic_answers():
    probs, _ = load_problems("algorithmic", difficulty=3, count=12)
    by_cat = {p.category: p for p in probs}
    hanoi = by_cat["hanoi"]
    n = int(hanoi.question.split(" with ")[1].split()[0])
    assert int(hanoi.answer) == 2 ** n - 1
    s = by_cat["sort"]
    assert s.kind == "list" and get_checker("list").correct(s.answer, s.answer)
    nums = [int(x) for x in s.question.split(": ")[1].rstrip(".").split(", ")]
    assert [int(x) for x in s.answer.split(", ")] == sorted(nums, reverse="descending" in s.question)


def test_prompt_asks_for_the_answer_form():
    p = load_problems("algorithmic", difficulty=1, count=1, categories=["sort"])[0][0]
    assert "separated by commas" in messages(p)[0]["content"]
    assert "The answer is" in messages(p, "steps")[0]["content"]
    with pytest.raises(InvalidParameterError, match="valid: direct, steps"):
        messages(p, "socratic")


def test_unknown_suite_and_category_list_the_valid_ones():
    with pytest.raises(InvalidParameterError, match="valid: arithmetic, algorithmic"):
        load_problems("gsm8k")
    with pytest.raises(InvalidParameterError, match="valid: add, sub"):
        load_problems("arithmetic", categories=["pow"])
    with pytest.raises(InvalidParameterError, match="difficulty"):
        load_problems("arithmetic", difficulty=0)


def _write(tmp_path, lines):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_jsonl_and_gsm8k_answers(tmp_path):
    path = _write(tmp_path, [
        json.dumps({"question": "What is 2+2?", "answer": "4"}),
        "",
        json.dumps({"question": "Natalia sold clips...", "answer": "She sold 48/2 = 24 clips.\n#### 72"}),
        json.dumps({"question": "Capital of France?", "answer": "Paris"}),
        json.dumps({"problem": "x?", "answer": "1,000", "id": "q9"}),
    ])
    probs, warnings = load_problems(path)
    assert warnings == []
    assert [p.answer for p in probs] == ["4", "72", "Paris", "1,000"]
    assert [p.kind for p in probs] == ["number", "number", "text", "number"]
    assert probs[3].id.endswith("/q9")
    assert len(load_problems(path, count=2)[0]) == 2


def test_jsonl_malformed_line_names_its_number(tmp_path):
    path = _write(tmp_path, [json.dumps({"question": "a", "answer": 1}), '{"question": "b", "answer": ',
                             json.dumps({"question": "c"}), json.dumps({"question": "d", "answer": 4})])
    with pytest.raises(PonderError, match=r"data.jsonl:2: not valid JSON"):
        load_problems(path)
    probs, warnings = load_problems(path, on_error="skip")
    assert [p.question for p in probs] == ["a", "d"]
    assert len(warnings) == 2 and ":2:" in warnings[0] and ":3: needs" in warnings[1]


def test_jsonl_missing_file_and_empty(tmp_path):
    with pytest.raises(PonderError, match="no such dataset file"):
        load_problems(str(tmp_path / "nope.jsonl"))
    with pytest.raises(PonderError, match="no problems"):
        load_problems(_write(tmp_path, ["not json"]), on_error="skip")


def test_jsonl_hostile_lines_name_their_number_and_are_skipped(tmp_path):
    good = [json.dumps({"question": q, "answer": 1}).encode() for q in ("a", "b")]
    bad = {  # line content -> what the message says
        b'{"question": "caf\xe9", "answer": 1}': "not UTF-8 text (byte 0xe9",
        b"[" * 100_000: "nested too deeply",
        b'{"question": "big", "answer": ' + b"7" * 5001 + b"}": "more than 4300 digits",
        b'{"question": "hi \\ud800", "answer": 1}': "lone surrogate (\\ud800",
    }
    for i, (line, message) in enumerate(bad.items()):
        path = tmp_path / f"d{i}.jsonl"
        path.write_bytes(b"\n".join([good[0], line, good[1]]) + b"\n")
        with pytest.raises(PonderError) as e:
            load_problems(str(path))
        assert f"d{i}.jsonl:2: " in str(e.value) and message in str(e.value)
        probs, warnings = load_problems(str(path), on_error="skip")
        assert [p.question for p in probs] == ["a", "b"]
        assert len(warnings) == 1 and f"d{i}.jsonl:2: " in warnings[0] and message in warnings[0]


def test_jsonl_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"question": "What is 2+2?", "answer": 4}).encode() + b"\r\n")
    probs, warnings = load_problems(str(path))
    assert [(p.question, p.answer) for p in probs] == [("What is 2+2?", "4")] and warnings == []
