"""Finding the final answer in a model's free-form text.

Where the model marks its answer we trust the mark, last one first: \\boxed{...}, then
"the answer is ...", "answer: ...", or GSM8K's "#### ...".  Unmarked text falls back to
its last number (or last line for lists): small models often answer "3 + 5 = 8".
"""

from __future__ import annotations

import re

from ponder.checkers.numeric import find_numbers

_MARKERS = re.compile(
    r"(?:the\s+(?:final\s+)?answer\s+is|final\s+answer\s*(?:is)?\s*:?|answer\s*:|####)\s*:?\s*",
    re.IGNORECASE,
)
# where a marked answer ends: a line break, or a full stop that is not a decimal point
_END = re.compile(r"\n|\.(?!\d)\s|\.$")


def boxed(text: str) -> str | None:
    """The contents of the last \\boxed{...} (braces balanced), if any."""
    start = text.rfind("\\boxed")
    while start != -1:
        i = text.find("{", start)
        if i != -1:
            depth = 0
            for j in range(i, len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    return text[i + 1:j].strip()
        start = text.rfind("\\boxed", 0, start)
    return None


def marked_segment(text: str) -> str | None:
    """What follows the last answer marker, up to the end of its sentence."""
    b = boxed(text)
    if b is not None:
        return b
    last = None
    for m in _MARKERS.finditer(text):
        last = m
    if last is None:
        return None
    rest = text[last.end():]
    end = _END.search(rest)
    seg = (rest[:end.start()] if end else rest).strip().strip("*").strip()
    return seg or None


def extract_answer(text: str, kind: str = "number") -> str | None:
    """The answer in `text` as a string for the checker of `kind` (number, list, text), or None."""
    seg = marked_segment(text)
    if kind == "number":
        nums = find_numbers(seg) if seg is not None else []
        if nums:
            return nums[0]  # "The answer is 8 (3 + 5 = 8)": the first number after the mark
        nums = find_numbers(text)
        return nums[-1] if nums else None
    if kind == "list":
        if seg is None:
            lines = [ln for ln in text.strip().splitlines() if find_numbers(ln)]
            seg = lines[-1] if lines else None
        if seg is None:
            return None
        seg = seg.strip("[]() ")
        return seg or None
    if kind == "text":
        if seg is None:
            lines = [ln for ln in text.strip().splitlines() if ln.strip()]
            seg = lines[-1] if lines else None
        return seg.strip().strip(".*\"'`").strip() if seg else None
    raise ValueError(f"unknown answer kind {kind!r}")
