"""Request: what the engine keeps per request until its result is popped."""

from __future__ import annotations

from dataclasses import dataclass, field

from ponder.engine.accounting import Cost
from ponder.engine.results import Prompt
from ponder.engine.sampling_params import SamplingParams
from ponder.engine.sequence import Sequence


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
