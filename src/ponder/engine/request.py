"""Request: what the engine keeps per request until its result is popped, and that result."""

from __future__ import annotations

from dataclasses import dataclass, field

from ponder.engine.accounting import Cost
from ponder.engine.finish import shown
from ponder.engine.results import GenerationResult, Prompt, SampleOutput, ScoreResult
from ponder.engine.sampling_params import SamplingParams
from ponder.engine.sequence import Sequence
from ponder.engine.usage import usage


@dataclass
class Request:
    id: int
    prompt: Prompt
    prompt_ids: list[int]
    params: SamplingParams
    samples: list[Sequence]  # all n of them from the start (samples 1.. are parked until sample 0 forks)
    kind: str = "generate"  # or "score"
    scores: list[dict] = field(default_factory=list)  # for kind "score"
    cost: Cost = field(default_factory=Cost)  # the Engine is its only writer
    tools: list[str] | None = None  # the names of the tools its samples may call

    @property
    def finished(self) -> bool:
        return all(s.finished for s in self.samples)

    @property
    def error(self) -> BaseException | None:
        return next((s.error for s in self.samples if s.error is not None), None)

    def result(self, eos_ids, decode) -> GenerationResult | ScoreResult:
        """The finished request as the caller sees it (each sample as `finish.shown` decides)."""
        if self.kind == "score":
            return ScoreResult(self.prompt_ids, self.scores, self.error)
        outs = [_output(s, eos_ids, decode) for s in self.samples]
        return GenerationResult(self.prompt, self.prompt_ids, outs, self.params.seed, self.params, usage(self),
                                self.error, self.tools)


def _output(s: Sequence, eos_ids, decode) -> SampleOutput:
    """One sample's output.  With tools, its text is the text of its earlier rounds (kept and forced
    text, engine/tool_calls.py) followed by what the last round shows: stop strings only end a round."""
    st = s.tools
    rs = st.round_start if st is not None else 0
    view = shown(s.output_ids[rs:], s.logprobs[rs:], None, s.finish_reason, s.params, eos_ids, decode)
    out = SampleOutput(s.sample_index, list(s.output_ids), view.text, s.logprobs, s.finish_reason, s.top_logprobs)
    if st is not None:
        out.text = st.text + view.text
        out.tool_mask = st.mask(len(s.output_ids))
        out.tool_calls = [dict(c) for c in st.calls]
        out.tool_spans = [(a, b - a) for a, b in st.spans]
        out.drawn_tokens = len(s.output_ids) - st.forced + st.dropped
    return out
