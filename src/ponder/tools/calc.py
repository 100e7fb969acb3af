"""`calc`: exact arithmetic on the expression a model writes before "=".

The model writes "12 * 3/4 =" and the tool splices " 9".  The expression is parsed with
`ast.parse(mode="eval")` and walked over a whitelist of node types; nothing is ever passed to
eval/exec.  Values are exact rationals (`Fraction`): "0.1 + 0.2" is 3/10, "1/3 * 3" is 1.

Covered: integers, decimals, scientific notation, fractions (a/b is exact division), percentages
("15%" is 15/100, "15% of 80" is 12), + - * / // % and powers (** or ^) within bounds, min, max,
round (half away from zero, as people round), abs, and comparisons (True/False).  Thousands
separators ("1,234"), the signs × ÷ − and an x between numbers ("4 x 7") are understood; a fraction written tight ("5/63 ÷ 5/7")
binds tighter than the operators around it, as people read it.

Everything that could hang or exhaust memory is refused before it is computed: long input, deep
nesting, long literals, large exponents and results beyond a size bound each give an error text for
the model (`CalcError`), never a crash.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction

from ponder.tools.base import Tool, ToolCall, ToolResult

MAX_INPUT_CHARS = 400
MAX_DEPTH = 24  # parentheses
MAX_AST_DEPTH = 220  # operator chains: "1 + 1 + ... + 1" nests one level per term
MAX_LITERAL_DIGITS = 60
MAX_BITS = 4096  # numerator and denominator of every intermediate value
MAX_EXPONENT = 4096


class CalcError(ValueError):
    """An expression calc understands but will not compute (or that has no value): its text goes to the model."""


class NotAnExpression(ValueError):
    """Text that is not a calc expression at all (prose, an assignment, a lone number)."""


_FUNCS = ("min", "max", "round", "abs")
_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
_CMPOPS = {ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b,
           ast.GtE: lambda a, b: a >= b, ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b}

_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?![\d])")
_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)"
# "15% of 80" and a percent not followed by something it could take the remainder of
_PCT_OF = re.compile(rf"({_NUM})\s*%\s*of\b", re.IGNORECASE)
_PCT = re.compile(rf"({_NUM})\s*%(?!\s*[\d.(])")
_PLAIN_NUMBER = re.compile(rf"^\s*[-+]?\s*{_NUM}(?:[eE][-+]?\d+)?\s*$")
# "5/63" written tight is a fraction: it binds tighter than the × and ÷ around it, as people read
# "5/63 ÷ 5/7"; not after a power sign, where "2**3/4" keeps Python's reading
# "4 x 7": people (and models) write x for times between two numbers
_TIMES_X = re.compile(r"(?<=[\d)])\s*[xX]\s*(?=[\d(.])")
_TIGHT_FRACTION = re.compile(rf"(?<![\w.*^/)])({_NUM})/({_NUM})(?![\w.(/])")


def normalize(text: str) -> str:
    """The expression in Python syntax: × ÷ − ^ and percentages rewritten, thousands separators dropped."""
    s = text.strip().replace("×", "*").replace("·", "*").replace("÷", "/").replace("−", "-").replace("^", "**")
    s = s.replace("$", "")
    s = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), s)
    s = _TIMES_X.sub("*", s)
    s = _TIGHT_FRACTION.sub(r"(\1/\2)", s)
    s = _PCT_OF.sub(r"(\1/100)*", s)
    return _PCT.sub(r"(\1/100)", s)


def parse(text: str) -> ast.Expression:
    """The checked AST of an expression; NotAnExpression if it is not one, CalcError if it is too big."""
    if len(text) > MAX_INPUT_CHARS:
        raise CalcError(f"expression longer than {MAX_INPUT_CHARS} characters")
    src = normalize(text)
    depth = 0
    for ch in src:  # before parsing: the parser itself recurses on nesting
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth > MAX_DEPTH:
            raise CalcError(f"nested deeper than {MAX_DEPTH} levels")
    try:
        tree = ast.parse(src, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise NotAnExpression(text) from None
    _check(tree.body, src, 0)
    return tree


def _check(node, src: str, depth: int) -> None:
    if depth > MAX_AST_DEPTH:
        raise CalcError(f"more than {MAX_AST_DEPTH} operations")
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise NotAnExpression(src)
        seg = ast.get_source_segment(src, node) or ""
        if sum(c.isdigit() for c in seg) > MAX_LITERAL_DIGITS:
            raise CalcError(f"a number longer than {MAX_LITERAL_DIGITS} digits")
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        return _check(node.operand, src, depth + 1)
    if isinstance(node, ast.BinOp) and isinstance(node.op, _BINOPS):
        _check(node.left, src, depth + 1)
        return _check(node.right, src, depth + 1)
    if isinstance(node, ast.Compare) and all(type(op) in _CMPOPS for op in node.ops):
        for n in (node.left, *node.comparators):
            _check(n, src, depth + 1)
        return
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
            and not node.keywords and node.args):
        for a in node.args:
            _check(a, src, depth + 1)
        return
    raise NotAnExpression(src)


def _has_operation(node) -> bool:
    return not (isinstance(node, ast.Constant)
                or (isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant)))


def _bounded(v: Fraction) -> Fraction:
    if v.numerator.bit_length() > MAX_BITS or v.denominator.bit_length() > MAX_BITS:
        raise CalcError("result too large")
    return v


def _round_half_away(v: Fraction, places: int) -> Fraction:
    scale = Fraction(10) ** places
    x = abs(v) * scale
    n = int(x)  # floor for x >= 0
    if x - n >= Fraction(1, 2):
        n += 1
    return _bounded((n if v >= 0 else -n) / scale)


def _power(a: Fraction, b: Fraction) -> Fraction:
    if b.denominator != 1:
        raise CalcError("only whole-number exponents are supported")
    e = b.numerator
    if abs(e) > MAX_EXPONENT:
        raise CalcError(f"exponent larger than {MAX_EXPONENT}")
    if a == 0 and e < 0:
        raise CalcError("division by zero")
    if a != 0 and max(a.numerator.bit_length(), a.denominator.bit_length()) * abs(e) > MAX_BITS + 64:
        raise CalcError("result too large")
    return _bounded(a ** e)


def _eval(node, src: str):
    if isinstance(node, ast.Constant):
        return Fraction(ast.get_source_segment(src, node))  # the text, not the float: 0.1 is 1/10
    if isinstance(node, ast.UnaryOp):
        v = _num(_eval(node.operand, src))
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        a, b = _num(_eval(node.left, src)), _num(_eval(node.right, src))
        op = type(node.op)
        if op is ast.Pow:
            return _power(a, b)
        if op in (ast.Div, ast.FloorDiv, ast.Mod) and b == 0:
            raise CalcError("division by zero")
        if op is ast.Add:
            return _bounded(a + b)
        if op is ast.Sub:
            return _bounded(a - b)
        if op is ast.Mult:
            return _bounded(a * b)
        if op is ast.Div:
            return _bounded(a / b)
        if op is ast.FloorDiv:
            return _bounded(Fraction(a // b))
        return _bounded(a % b)
    if isinstance(node, ast.Compare):
        left = _num(_eval(node.left, src))
        for op, comp in zip(node.ops, node.comparators):
            right = _num(_eval(comp, src))
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    # a call to one of _FUNCS
    name, args = node.func.id, [_num(_eval(a, src)) for a in node.args]
    if name in ("min", "max"):
        return (min if name == "min" else max)(args)
    if name == "abs":
        if len(args) != 1:
            raise CalcError("abs takes one argument")
        return abs(args[0])
    if len(args) not in (1, 2) or (len(args) == 2 and args[1].denominator != 1):
        raise CalcError("round takes a number and a whole number of decimal places")
    places = int(args[1]) if len(args) == 2 else 0
    if abs(places) > MAX_LITERAL_DIGITS:
        raise CalcError(f"round to at most {MAX_LITERAL_DIGITS} places")
    return _round_half_away(args[0], places)


def _num(v) -> Fraction:
    if isinstance(v, bool):
        raise CalcError("a comparison is not a number")
    return v


def evaluate(text: str) -> Fraction | bool:
    """The exact value of an expression (a bool for a comparison).

    NotAnExpression if the text is not a calc expression; CalcError if it is one calc refuses."""
    tree = parse(text)
    return _eval(tree.body, normalize(text))


def format_value(v: Fraction | bool) -> str:
    """Integers as integers, terminating decimals as decimals, anything else as an exact a/b."""
    if isinstance(v, bool):
        return str(v)
    if v.denominator == 1:
        return str(v.numerator)
    d, twos, fives = v.denominator, 0, 0
    while d % 2 == 0:
        d, twos = d // 2, twos + 1
    while d % 5 == 0:
        d, fives = d // 5, fives + 1
    if d != 1:
        return f"{v.numerator}/{v.denominator}"
    places = max(twos, fives)
    scaled = abs(v.numerator) * (10 ** places // v.denominator)
    whole, frac = divmod(scaled, 10 ** places)
    return f"{'-' if v < 0 else ''}{whole}.{str(frac).rjust(places, '0').rstrip('0')}"


# Where an expression may start inside a line of prose: after a word, a colon, "is", etc.
_STARTS = re.compile(r"(?:^|(?<=[\s:,;=(\[]))(?=[\d.(+\-−$]|min\(|max\(|round\(|abs\()")


def find_expression(line: str) -> str | None:
    """The longest tail of `line` (the text before "=") that is an expression with an operation.

    "So she pays 3 * 4.5" gives "3 * 4.5"; "x" or "The total" gives None: not a calculation.
    """
    if len(line) > MAX_INPUT_CHARS:
        line = line[-MAX_INPUT_CHARS:]
    for m in _STARTS.finditer(line):
        cand = line[m.start():].strip()
        if not cand or _PLAIN_NUMBER.match(cand):
            continue
        try:
            tree = parse(cand)
        except NotAnExpression:
            continue
        except CalcError:
            return cand  # an expression, too big: its error is worth telling the model
        if _has_operation(tree.body):
            return cand
    return None


_ERROR_TEXT = re.compile(r" \(calc error: [^)]*\)")


def strip_errors(text: str) -> str:
    """The text without calc's error texts (whose numbers, like a limit, are not answers)."""
    return _ERROR_TEXT.sub("", text)


class CalcTool(Tool):
    """The calc tool: "=" after an expression gets the expression's exact value."""

    name = "calc"
    trigger = "="
    describe = "exact arithmetic on the expression before '=' (integers, decimals, fractions, %, powers, " \
               "min, max, round, abs, comparisons)"

    def find_call(self, text):
        if not text.strip() or text[-1:] in "<>!=*/+-":  # "<=", "==", "**=": an operator, not a request
            return None
        expr = find_expression(text.rsplit("\n", 1)[-1])
        return ToolCall(self.name, expr) if expr is not None else None

    def run(self, call):
        try:
            v = format_value(evaluate(call.source))
        except CalcError as e:
            return ToolResult(call, f" (calc error: {e})", False, error=str(e))
        except NotAnExpression:
            return ToolResult(call, " (calc error: not an expression)", False, error="not an expression")
        return ToolResult(call, f" {v}", True, value=v)
