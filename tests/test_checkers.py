"""Answer extraction and checking on the answers that trip checkers up."""

import pytest

from ponder.checkers import extract_answer, get_checker, parse_number
from ponder.errors import InvalidParameterError

NUM = get_checker("number")


@pytest.mark.parametrize("got, ref", [
    ("1,000", "1000"), ("1e3", "1000"), ("3/4", "0.75"), ("0.75", "3/4"), ("-0", "0"), ("0", "-0.0"),
    ("1,234,567.5", "1234567.5"), ("1.5 × 10^3", "1500"), ("2.50", "2.5"), ("\\frac{3}{4}", "0.75"),
    ("$12", "12"), ("−7", "-7"), ("0.3333333", "1/3"),
])
def test_equivalent_numbers(got, ref):
    assert NUM.correct(got, ref), (got, ref)


@pytest.mark.parametrize("got, ref", [
    ("1,001", "1000"), ("1e4", "1000"), ("3/5", "0.75"), ("0.333", "1/3"), ("3.14", "3.1416"), ("abc", "1"),
    (None, "1"), ("1/0", "0"),
])
def test_different_numbers(got, ref):
    assert not NUM.correct(got, ref)


@pytest.mark.parametrize("text, want", [
    ("3 + 5 = 8", "8"),
    ("The answer is 8.", "8"),
    ("The answer is 8 (since 3 + 5 = 8), not 9", "8"),
    ("first 12, then \\boxed{42} and 7 more", "42"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("Natalia sold 48 clips.\n#### 72", "72"),
    ("Answer: 1,000", "1,000"),
    ("It is 3.5.", "3.5"),
    ("The final answer is -0.", "-0"),
    ("no digits here", None),
])
def test_extract_number(text, want):
    assert extract_answer(text) == want


def test_thousands_separator_is_not_a_list():
    assert parse_number("1,000") == 1000
    assert parse_number("1,00") is None  # not a valid grouping
    lst = get_checker("list")
    assert lst.correct("1, 5, 1,000", "1, 5, 1000")
    assert lst.correct("[3,2,1]", "3, 2, 1")
    assert not lst.correct("1, 2", "1, 2, 3")
    assert not lst.correct("2, 1, 3", "1, 2, 3")
    assert lst.check("Sorted:\n1, 2, 3", "1, 2, 3") == ("1, 2, 3", True)


def test_text_and_votes_share_keys():
    assert get_checker("text").correct("The answer is Yes.", "yes") is False  # extraction is the caller's job
    assert get_checker("text").check("The answer is Yes.", "yes") == ("Yes", True)
    assert NUM.key("3/4") == NUM.key("0.75") == NUM.key("75e-2")
    assert NUM.key("-0") == NUM.key("0")


def test_unknown_checker_lists_valid():
    with pytest.raises(InvalidParameterError, match="valid: number, list, text, latex"):
        get_checker("regex")


def test_latex_checker_with_math_verify():
    pytest.importorskip("math_verify")
    tex = get_checker("latex")
    assert tex.check("so the answer is \\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}")[1]
    assert tex.check("The answer is 0.75.", "\\frac{3}{4}")[1]
    assert not tex.check("\\boxed{x^2}", "x^3")[1]


def test_latex_checker_without_math_verify_is_a_clean_error(monkeypatch):
    import sys

    from ponder.errors import PonderError

    monkeypatch.setitem(sys.modules, "math_verify", None)  # as if not installed
    with pytest.raises(PonderError, match="pip install 'ponder\\[math\\]'"):
        get_checker("latex")
