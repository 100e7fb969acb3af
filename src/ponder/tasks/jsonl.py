"""JSONL datasets given by path: one {"question": ..., "answer": ...} object per line.

GSM8K-style answers (a worked solution ending in "#### 72") are reduced to what follows
"####".  Optional fields: "id", "kind" (the checker: number, list, text, latex).  A bad line
(not UTF-8, not JSON, nested too deeply, a number too long to read, a lone surrogate, missing
fields) is an error naming its line number; with on_error="skip" it is reported and left out.
A UTF-8 byte order mark at the start of the file is ignored.
"""

from __future__ import annotations

import codecs
import json
import os
import sys

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


def _text(path: str, lineno: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at byte {e.start + 1} "
                           f"of the line)") from None


def _parse(path: str, lineno: int, line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise DatasetError(f"{path}:{lineno}: JSON nested too deeply") from None
    except ValueError as e:  # an integer too long to convert (Python's 4300-digit limit)
        limit = sys.get_int_max_str_digits()
        what = f"a number with more than {limit} digits" if "digits" in str(e) else f"not valid JSON ({e})"
        raise DatasetError(f"{path}:{lineno}: {what}") from None


def _check_unicode(path: str, lineno: int, obj: dict) -> None:
    """JSON's \\u escapes can spell lone surrogates, which are not text (no encoder or tokenizer takes them)."""
    for key, value in obj.items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                code = f"\\u{ord(value[e.start]):04x}"
                raise DatasetError(f"{path}:{lineno}: {key!r} holds a lone surrogate ({code} at character "
                                   f"{e.start + 1}), which is not text") from None


def _problem(path: str, lineno: int, raw: bytes) -> Problem:
    obj = _parse(path, lineno, _text(path, lineno, raw))
    if isinstance(obj, dict):
        _check_unicode(path, lineno, obj)
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
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DatasetError(f"cannot read the dataset {path}: {e.strerror}") from None
    if data.startswith(codecs.BOM_UTF8):  # written by some editors; not part of the first line
        data = data[len(codecs.BOM_UTF8):]
    for lineno, line in enumerate(data.split(b"\n"), 1):
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
