"""Answer extraction and checking: from a model's text to a verdict against a reference answer.

`extract.py` finds the answer in free text, `numeric.py` parses and compares numbers exactly,
`checker.py` ties them together per answer kind, and `latex.py` wraps the optional math-verify.
"""

from ponder.checkers.checker import CHECKERS, Checker, get_checker
from ponder.checkers.extract import extract_answer
from ponder.checkers.numeric import numbers_equal, parse_number

__all__ = ["CHECKERS", "Checker", "extract_answer", "get_checker", "numbers_equal", "parse_number"]
