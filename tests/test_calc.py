"""calc: exact values, the whitelist, and the bounds that keep a model's expression from hanging ponder."""

import time
from fractions import Fraction

import pytest

from ponder.tools.calc import CalcError, NotAnExpression, evaluate, find_expression, format_value


def calc(text):
    return format_value(evaluate(text))


@pytest.mark.parametrize("expr, want", [
    ("3 + 5", "8"), ("0.1 + 0.2", "0.3"), ("1/3 * 3", "1"), ("10/3", "10/3"), ("-7 + 2", "-5"),
    ("1,234 + 1", "1235"), ("1e3 + 1", "1001"), ("12 × 3 ÷ 4", "9"), ("5 − 7", "-2"), ("$3.50 * 4", "14"),
    ("15% of 80", "12"), ("50%", "0.5"), ("200 * 15%", "30"), ("7 % 3", "1"), ("7 // 2", "3"),
    ("2^10", "1024"), ("2**-2", "0.25"), ("(2/3)**3", "8/27"),
    ("max(3, 7/2)", "3.5"), ("min(4, 0.5, 2)", "0.5"), ("abs(-3/4)", "0.75"),
    ("round(2.5)", "3"), ("round(-2.5)", "-3"), ("round(3.14159, 2)", "3.14"), ("round(1/3, 3)", "0.333"),
    ("3/4 > 0.7", "True"), ("1 < 2 < 2", "False"), ("0.5 == 1/2", "True"),
    ("+".join(["1"] * 150), "150"),
    ("5/63 ÷ 5/7", "1/9"), ("5/2 × 2/5", "1"), ("12 ÷ 3/4", "16"), ("12 / 3 / 4", "1"), ("2**3/4", "2"),
    ("1/2/3", "1/6"), ("4 x 7", "28"), ("(2 + 1)x3", "9"), ("(1/2)/(3/4)", "2/3"), ("0.5/0.25 × 2", "4"),
])
def test_exact_values(expr, want):
    assert calc(expr) == want


def test_values_are_fractions_not_floats():
    assert evaluate("0.1 * 3") == Fraction(3, 10)
    assert evaluate("1/7 * 7") == 1


@pytest.mark.parametrize("text", ["__import__('os').system('true')", "x + 1", "open('f')", "(1).__class__",
                                  "[1, 2]", "lambda: 1", "a = 3", "'text' * 2", "1 if 2 else 3", "sum([1])",
                                  "max(x=1)", "True + 1", "3 +", "{1: 2}"])
def test_anything_outside_the_whitelist_is_not_an_expression(text):
    with pytest.raises(NotAnExpression):
        evaluate(text)


@pytest.mark.parametrize("text, why", [
    ("2**100000", "exponent"), ("9 ** 9 ** 9", "exponent"), ("10**4000 * 10**4000", "too large"),
    ("99**1000", "too large"), ("1" * 100 + " + 1", "digits"), ("(" * 30 + "1" + ")" * 30, "nested"),
    ("1 + " * 300 + "1", "longer"), ("1/0", "division by zero"), ("5 % 0", "division by zero"),
    ("0 ** -1", "division by zero"), ("2 ** 0.5", "whole-number"), ("round(1.5, 0.5)", "round"),
    ("abs(1, 2)", "abs"), ("(1 < 2) + 1", "comparison"),
])
def test_refused_with_an_error_text_and_quickly(text, why):
    t0 = time.perf_counter()
    with pytest.raises(CalcError, match=why):
        evaluate(text)
    assert time.perf_counter() - t0 < 1.0


def test_deep_unary_chain_is_an_error_not_a_crash():
    with pytest.raises((CalcError, NotAnExpression)):
        evaluate("-" * 399 + "1")


@pytest.mark.parametrize("line, want", [
    ("So she pays 3 * 4.5 ", "3 * 4.5"), ("Dara has 4 x 7 ", "4 x 7"), ("The total is 12 + 7 ", "12 + 7"), ("x = 3 + 4 ", "3 + 4"),
    ("(3 + 4) * 2 ", "(3 + 4) * 2"), ("Total: 20% of 50 ", "20% of 50"), ("x ", None), ("The answer ", None),
    ("She has 3 apples + 4 ", None), ("It costs 12 ", None), ("2**99999 ", "2**99999"),
])
def test_find_expression_takes_the_longest_calculable_tail(line, want):
    assert find_expression(line) == want


def test_calc_tool_calls_and_results():
    from ponder.tools import get_tools
    from ponder.tools.base import ToolCall

    [tool] = get_tools("calc")
    assert tool.trigger == "="
    call = tool.find_call("He pays 3 * 4.5 ")
    assert call == ToolCall("calc", "3 * 4.5")
    res = tool.run(call)
    assert res.ok and res.output == " 13.5" and res.value == "13.5"
    assert tool.find_call("x ") is None and tool.find_call("3 <") is None and tool.find_call("") is None
    bad = tool.run(tool.find_call("so 7 / 0 "))
    assert not bad.ok and bad.output == " (calc error: division by zero)"


def test_unknown_tool_name_is_a_clear_error():
    from ponder.errors import InvalidParameterError
    from ponder.tools import get_tools

    with pytest.raises(InvalidParameterError, match="unknown tool 'calculator'; valid: calc, python"):
        get_tools("calc,calculator")
