"""Numbers as exact values: parsing integers, decimals, fractions, scientific notation and
thousands separators into `Fraction`, and comparing two of them.

Values are kept exact (Fraction, never float) so that "0.1 + 0.2" style answers compare
without rounding surprises; the tolerance only matters for answers that are themselves
approximations (a long decimal against a fraction such as 1/3).
"""

from __future__ import annotations

import re
from fractions import Fraction

# A number as it appears in text.  Thousands groups need exactly three digits after each comma
# and no space, so "1,000" is one number while "1, 2, 3" is three.
_SIGN = r"[-+−]?"
_INT = r"(?:\d{1,3}(?:,\d{3})+|\d+)"
_DEC = rf"{_INT}(?:\.\d+)?|\.\d+"
_EXP = r"(?:\s*[eE]\s*[-+]?\d+|\s*(?:[x×*]|\\times)\s*10\s*\^\s*\{?[-+−]?\d+\}?)"
NUMBER_RE = re.compile(
    rf"(?<![\w.])({_SIGN}(?:\\frac\{{\s*\d+\s*\}}\{{\s*\d+\s*\}}|(?:{_DEC})\s*/\s*(?:{_DEC})(?![\d.])|(?:{_DEC}){_EXP}?))(?![\w])"
)
_FRAC_LATEX = re.compile(r"^\\frac\{\s*(\d+)\s*\}\{\s*(\d+)\s*\}$")
_SCI = re.compile(r"^(.*?)(?:\s*[eE]\s*([-+]?\d+)|\s*(?:[x×*]|\\times)\s*10\s*\^\s*\{?([-+−]?\d+)\}?)$")


def parse_number(text: str) -> Fraction | None:
    """The exact value of one number written as text, or None if it is not a number.

    Accepts "1,000", "-0", "1e3", "1.5 × 10^3", "3/4", "\\frac{3}{4}", "$12.50", "50%".
    A percent sign is dropped, not divided by 100: "what percent" answers are the number before it.
    """
    s = text.strip().replace("−", "-").replace("$", "").replace("\\!", "").rstrip(".").rstrip("%").strip()
    s = s.replace("\\,", "").replace("{,}", ",")
    if not s:
        return None
    sign = 1
    if s[0] in "+-":
        sign, s = (-1 if s[0] == "-" else 1), s[1:].strip()
    m = _FRAC_LATEX.match(s)
    if m:
        num, den = int(m.group(1)), int(m.group(2))
        return sign * Fraction(num, den) if den else None
    if "/" in s:
        a, _, b = s.partition("/")
        x, y = _plain(a), _plain(b)
        return sign * x / y if x is not None and y not in (None, 0) else None
    m = _SCI.match(s)
    if m and m.group(1):
        mant = _plain(m.group(1))
        exp = int((m.group(2) or m.group(3)).replace("−", "-"))
        return sign * mant * Fraction(10) ** exp if mant is not None else None
    v = _plain(s)
    return sign * v if v is not None else None


def _plain(s: str) -> Fraction | None:
    s = s.strip()
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    if not re.fullmatch(r"\d+(?:\.\d*)?|\.\d+", s):
        return None
    return Fraction(s)


def numbers_equal(a: Fraction, b: Fraction, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """Exact equality, or within the tolerance for answers that are decimal approximations."""
    if a == b:
        return True
    return abs(a - b) <= max(Fraction(rel_tol) * max(abs(a), abs(b)), Fraction(abs_tol))


def find_numbers(text: str) -> list[str]:
    """Every number in the text, in order, as written."""
    return [m.group(1) for m in NUMBER_RE.finditer(text)]
