"""`python`: a fenced ```python block the model closes is run in the sandbox and its output spliced in.

The model writes

    ```python
    print(17 * 23)
    ```

and when it writes the closing fence (the trigger) the program runs (`tools.sandbox`); the answer
continues with

    ```output
    391
    ```

An error, a refusal by the sandbox or a timeout is shown the same way, as the program's output
(the traceback's last line, or "timed out after N s"), so the model can read it; nothing is raised.
"""

from __future__ import annotations

import re

from ponder.tools.base import Tool, ToolCall, ToolResult
from ponder.tools.sandbox import Limits, run_python

_OPEN = re.compile(r"(?:python|py|python3)[ \t]*\n")
_PROGRAM = re.compile(r"```(?:python|py|python3)[ \t]*\n.*?(?:```|$)", re.DOTALL)


def strip_programs(text: str) -> str:
    """The text without its python blocks (their output blocks stay)."""
    return _PROGRAM.sub("", text)


def open_block(text: str) -> str | None:
    """The code of the python block `text` ends inside (its closing fence not yet written), or None."""
    i = text.rfind("```")
    if i < 0:
        return None
    m = _OPEN.match(text, i + 3)
    return text[m.end():] if m else None


class PythonTool(Tool):
    name = "python"
    trigger = "```"
    describe = "runs a closed ```python block in a sandboxed subprocess and splices its output"

    def __init__(self, limits: Limits = Limits()):
        self.limits = limits

    def find_call(self, text):
        code = open_block(text)
        return ToolCall(self.name, code) if code is not None and code.strip() else None

    def run(self, call):
        r = run_python(call.source, self.limits)
        out = r.output.rstrip("\n").replace("<|", "< |")  # printed text never becomes a special token
        if r.truncated:
            out += "\n[output truncated]"
        if r.timed_out:
            out += f"\n[timed out after {self.limits.wall_seconds:g} s]"
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        error = None
        if not r.ok:
            error = "timed out" if r.timed_out else (lines[-1] if lines else f"exit status {r.returncode}")
            if not r.timed_out and lines:
                out = lines[-1]  # the exception itself; the traceback's frames only cost tokens
        value = lines[-1] if r.ok and lines else None
        return ToolResult(call, f"\n```output\n{out}\n```\n", r.ok, value=value, error=error)
