"""JSONL datasets given by path: one {"question": ..., "answer": ...} object per line.

GSM8K-style answers (a worked solution ending in "#### 72") are reduced to what follows
"####".  Optional fields: "id", "kind" (the checker: number, list, text, latex).  A bad line is
an error naming its line number; with on_error="skip" it is reported and left out.
"""

from __future__ import annotations

import json
import os

from ponder.checkers.numeric import parse_number
from ponder.errors import PonderError
from ponder.tasks.problem import Problem

QUESTION_KEYS = ("question", "problem", "prompt")
ANSWER_KEYS = ("answer", "final_answer", "target")


class DatasetError(PonderError):
    code = "dataset"


def reference_answer(raw) -> str:
    """The final answer of a reference: what follows "####" if present, as text."""
    s = str(raw)
    if "####" in s:
        s = s.rsplit("####", 1)[1]
    return s.strip()


def _problem(path: str, lineno: int, line: str) -> Problem:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}:{lineno}: expected a JSON object with 'question' and 'answer'")
    q = next((obj[k] for k in QUESTION_KEYS if k in obj), None)
    a = next((obj[k] for k in ANSWER_KEYS if k in obj), None)
    if not isinstance(q, str) or not q.strip() or a is None or (isinstance(a, str) and not a.strip()):
        raise DatasetError(f"{path}:{lineno}: needs a non-empty 'question' (string) and 'answer'")
    answer = reference_answer(a)
    kind = obj.get("kind") or ("number" if parse_number(answer) is not None else "text")
    if kind not in ("number", "list", "text", "latex"):
        raise DatasetError(f"{path}:{lineno}: unknown kind {kind!r} (number, list, text, latex)")
    pid = str(obj.get("id", lineno))
    return Problem(id=f"{os.path.basename(path)}/{pid}", question=q.strip(), answer=answer, kind=kind,
                   category=str(obj.get("category", "")), answer_form="number" if kind == "number" else "text",
                   meta={"line": lineno})


def load_jsonl(path: str, on_error: str = "stop") -> tuple[list[Problem], list[str]]:
    """(problems, warnings): the warnings name the lines skipped under on_error="skip"."""
    if on_error not in ("stop", "skip"):
        raise PonderError(f"--on-error must be 'stop' or 'skip' (got {on_error!r})")
    if not os.path.isfile(path):
        raise DatasetError(f"no such dataset file: {path}")
    problems, warnings = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                problems.append(_problem(path, lineno, line))
            except DatasetError as e:
                if on_error == "stop":
                    raise
                warnings.append(f"skipped {e}")
    if not problems:
        raise DatasetError(f"{path}: no problems in the file")
    return problems, warnings
