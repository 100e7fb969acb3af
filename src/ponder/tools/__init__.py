"""Tools a model can call while it answers: `calc` (exact arithmetic) and `python` (a sandboxed program).

`base.py` says what a tool is (a trigger, a call found before it, a result spliced after it);
`calc.py` and `python.py` are the tools (`sandbox.py` runs programs for `python`); `loop.py` is the
client-side tool loop over any Backend; `exemplars.py` holds each tool's few-shot examples.
`get_tools("calc,python")` is the one entry point from names to tools.
"""

from __future__ import annotations

from ponder.errors import InvalidParameterError
from ponder.tools.base import Tool, ToolCall, ToolResult
from ponder.tools.calc import CalcTool, strip_errors
from ponder.tools.exemplars import exemplar_messages
from ponder.tools.python import PythonTool, strip_programs

TOOLS: dict[str, type[Tool]] = {t.name: t for t in (CalcTool, PythonTool)}

__all__ = ["TOOLS", "Tool", "ToolCall", "ToolResult", "answer_view", "exemplar_messages", "get_tools",
           "parse_tool_names"]


def parse_tool_names(spec) -> list[str]:
    """["calc", "python"] from "calc,python" (or a list); an unknown name is an InvalidParameterError."""
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec or []) if n.strip()]
    for n in names:
        if n not in TOOLS:
            raise InvalidParameterError(f"unknown tool {n!r}; valid: {', '.join(TOOLS)}", "tools")
    if len(set(names)) != len(names):
        raise InvalidParameterError(f"a tool is named twice in {spec!r}", "tools")
    return names


def get_tools(spec) -> list[Tool]:
    return [TOOLS[n]() for n in parse_tool_names(spec)]


def answer_view(text: str) -> str:
    """The answer as read for extraction: programs and tool error texts left out (their numbers are
    not answers), tool results kept (they usually are)."""
    return strip_errors(strip_programs(text))
