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
        outs = [SampleOutput(s.sample_index, list(s.output_ids),
                             shown(s.output_ids, s.logprobs, s.top_logprobs, s.finish_reason, s.params, eos_ids,
                                   decode).text,
                             s.logprobs, s.finish_reason, s.top_logprobs) for s in self.samples]
        return GenerationResult(self.prompt, self.prompt_ids, outs, self.params.seed, self.params, usage(self),
                                self.error)
