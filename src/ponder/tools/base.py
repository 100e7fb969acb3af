"""What a tool is: a trigger that ends a call in the model's text, how to find the call before it,
and how to run it.

A model calls a tool by writing text that ends with the tool's trigger ("=" for calc, the "```"
closing a python block).  Generation pauses there; `find_call` reads the call out of the answer so
far (the text up to, not including, the trigger); `run` computes the result; the trigger plus
`ToolResult.output` is spliced into the answer and decoding resumes.  Text that ends with a trigger
but holds no call (an "=" after a word) is left alone: the trigger is kept and decoding resumes.

A tool never raises on model input: errors, refusals and timeouts become `ToolResult`s with
ok=False and an error text the model sees, so one bad call never stops a run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ToolCall:
    tool: str
    source: str  # what the tool runs: the expression, the program


@dataclass(frozen=True)
class ToolResult:
    call: ToolCall
    output: str  # spliced after the trigger, as the model will read it
    ok: bool
    value: str | None = None  # the answer-like value of a successful call (calc's number, python's last line)
    error: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tool"] = self.call.tool
        d["source"] = self.call.source
        del d["call"]
        return d


class Tool(ABC):
    name: str = ""
    trigger: str = ""
    describe: str = ""

    @abstractmethod
    def find_call(self, text: str) -> ToolCall | None:
        """The call that `text` (the answer so far, ending just before the trigger) makes, or None."""

    @abstractmethod
    def run(self, call: ToolCall) -> ToolResult:
        """The result of a call; never raises on anything the model wrote."""
