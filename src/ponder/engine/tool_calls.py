"""The tool-splice rule: where a sample stops for a tool, which of its tokens stay, what is forced in.

One rule, used by the engine (which pauses a sequence at a trigger, runs the tool on its pool and
appends the splice as forced tokens; see tool_runner.py) and by the client-side loop
(strategies/tool_loop.py, which stops a request at the trigger and continues with a new request),
so both give the same tokens for the same request and seed:

- A *round* is what a sample draws after its last splice.  Stop strings and tool triggers are
  looked for in the round's text only, so a tool's output never ends a sample.  The earliest match
  wins; where a stop string of the request and a trigger start at the same place, the stop string
  wins.
- At a trigger, the round's tokens are kept while their text is a prefix of (the round's text up
  to the trigger) + trigger.  A token running past the trigger is dropped; the part of the trigger
  not in the kept tokens is forced text, followed by the tool's output (no output when there is no
  call before the trigger, or after MAX_CALLS calls).  Forced text is encoded without BOS.
- A call is read (`find_call`) from the text so far including the prompt's unfinished last line
  (`open_line`): a strategy that grows an answer in steps submits prompt + partial answer, and an
  expression begun in the prompt is part of the call.
- max_tokens budgets the model's kept tokens; forced tokens cost nothing.  A splice made with the
  budget used up is still made, then the sample ends with "length".
- A splice never grows a sample past its backend's sequence limit (the context window, or the KV
  pool if smaller): what does not fit is cut (`fit_splice`) and the sample ends with "length".
- Draws are keyed by (seed, sample number, position), and positions only grow, so a sample simply
  continues with its own seed and sample number after a splice.

The engine takes objects with the tools/base.py interface (`trigger`, `find_call`, `run`); it never
imports a particular tool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ponder.engine.finish import round_stop

__all__ = ["MAX_CALLS", "Pause", "ToolState", "call_record", "call_text", "failed", "fit_splice", "find_call", "open_line", "pause_at", "round_stop", "run_tool"]

MAX_CALLS = 8  # per sample; later triggers are kept as text and run nothing
OPEN_LINE_TOKENS = 64  # how far back the prompt's last line is looked for (an expression is shorter)


def open_line(prompt_ids: list[int]) -> list[int]:
    """The prompt's last tokens, where its unfinished last line is looked for (see call_text).

    Kept as token ids, not text: a character split between the prompt and the answer (a strategy
    that grows an answer in steps may cut "÷", two tokens, in half) decodes whole only with both sides.
    """
    return list(prompt_ids[-OPEN_LINE_TOKENS:])


def call_text(decode: Callable[[list[int]], str], line: list[int], ids: list[int], rest: str, trigger: str) -> str:
    """What a call is read from: the prompt's unfinished last line and the sample's tokens `ids` (kept
    and forced, up to the trigger), decoded together, then the forced rest of the trigger, without
    the trigger ("" for the line when the prompt ends a line, as a chat prompt does)."""
    head = decode(line)
    start = head.rfind("\n") + 1  # a newline is one byte: the text before it decodes alike either way
    text = decode(list(line) + list(ids)) + rest
    return text[start:len(text) - len(trigger)]


def fit_splice(decode: Callable[[list[int]], str], ids: list[int], text: str, room: int) -> tuple[list[int], str]:
    """The forced tokens that fit in `room` positions, and their text (the decoded kept tokens when
    some are cut, so that a sample's text is always its tokens')."""
    if len(ids) <= room:
        return list(ids), text
    ids = list(ids[:max(room, 0)])
    return ids, decode(ids)


@dataclass(frozen=True)
class Pause:
    """A round that ended at a trigger: how many of its tokens stay, and their text."""

    trigger: str
    kept: int  # the round's tokens kept (the others ran past the trigger and are dropped)
    kept_text: str  # their text
    rest: str  # the part of the trigger after kept_text: forced text before the tool's output

    @property
    def before(self) -> str:
        """The round's text up to, not including, the trigger (the end of what find_call reads)."""
        return (self.kept_text + self.rest)[:-len(self.trigger)]


def pause_at(decode: Callable[[list[int]], str], round_ids: list[int], trigger: str) -> Pause:
    """Where a round whose text holds `trigger` (its first stop) pauses (see the module docstring)."""
    text = decode(round_ids)
    target = text[:text.index(trigger) + len(trigger)]
    k = len(round_ids)
    while k and not target.startswith(decode(round_ids[:k])):
        k -= 1
    kept = decode(round_ids[:k])
    return Pause(trigger, k, kept, target[len(kept):])


@dataclass
class ToolState:
    """What a sample that may call tools carries (the Scheduler writes it, like the rest of a Sequence)."""

    tools: dict  # trigger -> tool
    line: list[int] = field(default_factory=list)  # the prompt's last tokens (open_line): calls read its open line
    round_start: int = 0  # index in the output where the current round starts
    text: str = ""  # the answer's text before round_start (kept text and forced text of earlier rounds)
    spans: list[tuple[int, int]] = field(default_factory=list)  # [start, end) of forced tokens in the output
    calls: list[dict] = field(default_factory=list)  # each call's record (ToolResult.to_dict + its span)
    dropped: int = 0  # drawn tokens dropped because they ran past a trigger
    pause: Pause | None = None  # set while the sample waits for a tool
    calls_started: int = 0

    @property
    def forced(self) -> int:
        return sum(b - a for a, b in self.spans)

    def mask(self, n: int) -> list[bool]:
        m = [False] * n
        for a, b in self.spans:
            m[a:b] = [True] * (b - a)
        return m


def call_record(result, at: int, n_tokens: int) -> dict:
    """A call as results and transcripts record it: the tool's result and the span of its forced tokens."""
    return {**result.to_dict(), "at_token": at, "n_tokens": n_tokens}


def find_call(tool, text: str):
    """tool.find_call(text), with an exception read as "no call here" (a tool is code the engine does not own)."""
    try:
        return tool.find_call(text)
    except Exception:  # noqa: BLE001
        return None


def run_tool(tool, call):
    """tool.run(call), with an exception turned into an error result: a tool never stops a run."""
    try:
        return tool.run(call)
    except Exception as e:  # noqa: BLE001 - a broken tool is text for the model, like any tool error
        return failed(tool, call, f"{type(e).__name__}: {e}")


def failed(tool, call, why: str):
    """The result of a call that produced none (it raised, or ran out of time)."""
    from ponder.tools.base import ToolResult  # the result type only, no tool

    return ToolResult(call, f" ({tool.name} error: {why})", False, error=why)
