"""The optional math-verify checker for LaTeX answers (pip install 'ponder[math]').

Imported only when asked for, so that ponder works without it; a missing package is a
PonderError telling the user how to install it.
"""

from __future__ import annotations

from ponder.errors import PonderError


class MathVerify:
    def __init__(self, module):
        self._m = module

    def equivalent(self, answer: str, reference: str) -> bool:
        m = self._m
        try:
            gold = m.parse(_dollars(reference))
            got = m.parse(_dollars(answer))
            return bool(gold) and bool(got) and bool(m.verify(gold, got))
        except Exception:  # math-verify raises on some malformed LaTeX; malformed is simply wrong
            return False


def _dollars(s: str) -> str:
    # math-verify finds LaTeX inside math delimiters; bare answers ("\frac{3}{4}") need them
    s = s.strip()
    return s if s.startswith("$") or "\\boxed" in s else f"${s}$"


def available() -> bool:
    try:
        import math_verify  # noqa: F401
    except ImportError:
        return False
    return True


def require() -> MathVerify:
    try:
        import math_verify
    except ImportError:
        raise PonderError("the latex checker needs math-verify: pip install 'ponder[math]'") from None
    return MathVerify(math_verify)
