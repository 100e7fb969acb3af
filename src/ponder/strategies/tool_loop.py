"""ToolBackend: the client-side tool loop, so any strategy can use tools with any backend.

It wraps a Backend and changes one thing: `generate` decodes with each tool's trigger as an extra
stop string.  When a sample stops at a trigger, the tool reads its call out of the text so far and
runs; the trigger and the tool's output are appended to the sample as *forced* tokens, and the
sample continues as a new request whose prompt is prompt + everything so far (the prefix cache
of the local engine, or of a server that has one, recomputes none of it).  This is what a remote
server without ponder's tool support gets, and it gives the same text on every backend.

The rule (which tokens stay at a trigger, what is forced in, stop strings per round, the budget,
seeds) is engine/tool_calls.py's, the one the engine follows when it runs tools itself
(EngineBackend with tools), so both paths give the same tokens for the same request and seed:

- Forced tokens are marked: `Sample.tool_mask` is True for them, `Sample.logprobs` holds only
  the model's own tokens (so likelihood scores leave tool output out), and `Usage.tool_tokens`
  counts them apart from generated tokens.  `max_tokens` budgets the model's tokens only.
- Determinism: the first round is the plain request (n samples forked from one prefill); every
  later round of sample i continues with the same seed as sample number first_sample + i (draws
  are keyed by position), whatever else is in the batch.
- A call is read from the text so far *including the prompt's unfinished last line*: a strategy that
  grows an answer in steps (smc, beam) submits prompt + partial answer, and an expression begun in
  one step ("54 // 10 %") and closed in the next ("10 =") is one call, not a call on "10".
- A tool's error or timeout is text for the model (the tool never raises); after MAX_CALLS calls a
  sample's triggers are kept as text, so no sample loops forever.  A call made with the last token
  of the budget still gets its result spliced (forced tokens cost no budget); then the sample ends
  with "length".  So does a sample whose splice reaches the backend's sequence limit (what does not
  fit is cut, as in the engine); a backend that does not tell its limit (a remote server) answers
  a continuation past it with its context-length error instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ponder.engine.finish import round_stop
from ponder.engine.tool_calls import (MAX_CALLS, call_record, call_text, find_call, fit_splice, open_line, pause_at,
                                      run_tool)
from ponder.strategies.backend import Backend, Generation, Sample, Usage
from ponder.tools import Tool

__all__ = ["MAX_CALLS", "ToolBackend"]


@dataclass
class _Run:
    """One sample in progress."""

    index: int  # sample number within its request's seed stream
    line: list[int] = field(default_factory=list)  # the prompt's last tokens, whose open line a call may begin in
    ids: list[int] = field(default_factory=list)  # generated and forced, in order
    mask: list[bool] = field(default_factory=list)  # True for forced (tool) tokens
    logprobs: list[float] = field(default_factory=list)  # of the model's tokens only
    text: str = ""
    generated: int = 0
    model_tokens: int = 0
    calls: list[dict] = field(default_factory=list)
    finish: str = "length"
    rounds: int = 0


class ToolBackend(Backend):
    """A Backend whose samples may call tools (see the module docstring)."""

    def __init__(self, inner: Backend, tools: list[Tool]):
        self.inner, self.tools = inner, list(tools)
        self.triggers = {t.trigger: t for t in self.tools}
        self._tool = Usage()  # only tool_tokens and tool_calls

    @property
    def usage(self) -> Usage:
        u = self.inner.usage
        return replace(u, tool_tokens=u.tool_tokens + self._tool.tool_tokens,
                       tool_calls=u.tool_calls + self._tool.tool_calls)

    def model_info(self):
        return self.inner.model_info()

    def max_sequence(self):
        return self.inner.max_sequence()

    def encode_chat(self, messages):
        return self.inner.encode_chat(messages)

    def encode(self, text):
        return self.inner.encode(text)

    def decode(self, token_ids):
        return self.inner.decode(token_ids)

    def score(self, tokens, start):
        return self.inner.score(tokens, start)

    def warm(self, prompt_ids):
        return self.inner.warm(prompt_ids)

    def generate(self, prompts, params):
        per = [p.with_seed() for p in (params if isinstance(params, list) else [params] * len(prompts))]
        stops = tuple(self.triggers)
        first = self.inner.generate(prompts, [replace(p, stop=tuple(dict.fromkeys(p.stop + stops))) for p in per])
        lines = [open_line(p) for p in prompts]
        runs = [[_Run(p.first_sample + i, lines[r]) for i in range(len(g.samples))]
                for r, (p, g) in enumerate(zip(per, first))]
        pending = []  # (request, run, sample just generated)
        for r, (g, rs) in enumerate(zip(first, runs)):
            pending += [(r, run, s) for run, s in zip(rs, g.samples)]
        limit = self.inner.max_sequence()
        while pending:
            todo = []
            for r, run, s in pending:
                room = None if limit is None else limit - len(prompts[r])
                if self._absorb(run, s, per[r], room):
                    todo.append((r, run))
            if not todo:
                break
            conts = [list(prompts[r]) + run.ids for r, run in todo]
            cparams = [replace(per[r], n=1, first_sample=run.index,
                               max_tokens=per[r].max_tokens - run.model_tokens,
                               stop=tuple(dict.fromkeys(per[r].stop + stops)))
                       for r, run in todo]
            gens = self.inner.generate(conts, cparams)
            pending = [(r, run, g.samples[0]) for (r, run), g in zip(todo, gens)]
        out = []
        for g, rs in zip(first, runs):
            samples = [Sample(run.ids, run.text, run.logprobs, run.finish, run.generated, tool_mask=run.mask,
                              tool_calls=run.calls) for run in rs]
            out.append(Generation(g.prompt_ids, samples, g.usage))
        return out

    def _absorb(self, run: _Run, s: Sample, params, room: int | None) -> bool:
        """Add a round's sample to the run; True when it stopped at a tool trigger and should continue.
        room: the positions the backend holds after the prompt (None: it does not say)."""
        run.rounds += 1
        run.generated += s.generated
        run.finish = s.finish_reason
        hit = round_stop(self.inner.decode(s.token_ids), params.stop, self.triggers) if s.finish_reason == "stop" else None
        if hit is None or hit[0] != "tool":
            self._keep(run, s.token_ids, s.logprobs, s.text)
            return False
        pause = pause_at(self.inner.decode, s.token_ids, hit[1])
        tool = self.triggers[pause.trigger]
        call = (find_call(tool, call_text(self.inner.decode, run.line, run.ids + s.token_ids[:pause.kept], pause.rest,
                                          pause.trigger)) if len(run.calls) < MAX_CALLS else None)
        res = run_tool(tool, call) if call is not None else None
        self._keep(run, s.token_ids[:pause.kept], s.logprobs[:pause.kept], pause.kept_text)
        forced_text = pause.rest + (res.output if res is not None else "")
        forced = self.inner.encode(forced_text) if forced_text else []
        if room is not None:
            forced, forced_text = fit_splice(self.inner.decode, forced, forced_text, room - len(run.ids))
        if res is not None:
            run.calls.append(call_record(res, len(run.ids), len(forced)))
            self._tool.tool_calls += 1
        run.ids += forced
        run.mask += [True] * len(forced)
        run.text += forced_text
        self._tool.tool_tokens += len(forced)
        run.finish = "length"
        # out of budget or of room: the result is spliced, the answer ends
        return run.model_tokens < params.max_tokens and (room is None or len(run.ids) < room)

    @staticmethod
    def _keep(run: _Run, ids, logprobs, text):
        run.ids += list(ids)
        run.mask += [False] * len(ids)
        run.logprobs += list(logprobs)
        run.text += text
        run.model_tokens += len(ids)
