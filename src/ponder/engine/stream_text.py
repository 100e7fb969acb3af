"""SampleText: one sample's text as it streams, across tool splices (the server's SSE and `ponder generate`).

Stop strings are looked for within a *round* only, the text a sample draws after its last
splice, never in a tool's output (engine/tool_calls.py).  So each round gets its own
IncrementalDetokenizer (which holds back a possible stop string and an unfinished UTF-8
character), a splice's tokens are held until the splice is complete, and then handed out whole
and marked, with the character span of the tool's output.  What has been handed out is always a
prefix of the result's text.
"""

from __future__ import annotations

from ponder.engine.finish import cut_at_stop
from ponder.loading.detokenize import IncrementalDetokenizer


class SampleText:
    def __init__(self, tokenizer, stop: tuple[str, ...] = ()):
        self.tokenizer, self.stop = tokenizer, tuple(stop)
        self.round = IncrementalDetokenizer(tokenizer, self.stop)
        self.done = 0  # characters of the rounds and splices before the current round
        self._forced: list[int] = []  # tokens of a splice still arriving
        self._out = ""
        self._spans: list[list[int]] = []

    def add(self, token_id: int, tool: bool = False, hidden: bool = False) -> int:
        """Add one token (a tool token if `tool`; a stop token not shown if `hidden`); returns the
        character offset at which its text starts (OpenAI's text_offset)."""
        if tool and not self._forced:  # a splice starts: the round's text is final
            kept = self.tokenizer.decode(self.round.ids)
            self._out += self.round.finish(kept)
            self.done += len(kept)
            self.round = IncrementalDetokenizer(self.tokenizer, self.stop)
        if tool:
            at = self.done + (len(self.tokenizer.decode(self._forced)) if self._forced else 0)
            self._forced.append(int(token_id))
            return at
        self._flush_splice()
        at = self.done + len(self.round.text)
        if not hidden:
            self.round.add(token_id)
        self._out += self.round.take()
        return at

    def finish(self) -> None:
        """The sample ended: the rest of its last round, cut where a stop string begins, as the engine cuts it."""
        self._flush_splice()
        self._out += self.round.finish(cut_at_stop(self.tokenizer.decode(self.round.ids), self.stop)[0])

    def take(self) -> tuple[str, list[list[int]]]:
        """The text that is final and not yet handed out, and the [start, end) spans of tool output in it.

        Call it between engine steps, not between the tokens of one step: a splice's tokens all
        arrive in one step, so the splice held at a step's end is complete."""
        self._flush_splice()
        out, spans = self._out, self._spans
        self._out, self._spans = "", []
        return out, spans

    @property
    def round_ids(self) -> list[int]:
        """The tokens of the current round (what a stop reason is computed from)."""
        return self.round.ids

    def _flush_splice(self) -> None:
        if self._forced:
            t = self.tokenizer.decode(self._forced)
            self._spans.append([len(self._out), len(self._out) + len(t)])
            self._out += t
            self.done += len(t)
            self._forced = []
