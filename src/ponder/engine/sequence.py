"""Sequence: one sample of one request, as the scheduler and the model runner see it."""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field

from ponder.engine.sampling_params import SamplingParams

_ids = itertools.count()


class Status(enum.Enum):
    WAITING = "waiting"  # tokens to compute, not yet admitted (or preempted)
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Sequence:
    request_id: int
    sample_index: int
    prompt_ids: list[int]
    params: SamplingParams
    output_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    block_table: list[int] = field(default_factory=list)
    num_computed: int = 0  # leading tokens whose K/V are in the cache
    num_cached: int = 0  # tokens whose K/V came from the prefix cache instead of being computed
    status: Status = Status.WAITING
    finish_reason: str | None = None
    stop_text_end: int | None = None  # where a stop string cut the text
    draft: list[int] = field(default_factory=list)  # speculative tokens to verify in the next step
    seq_id: int = field(default_factory=lambda: next(_ids))

    @property
    def tokens(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def rng_index(self) -> int:
        """The sample number that keys this sequence's draws (see SamplingParams.first_sample)."""
        return self.params.first_sample + self.sample_index

    @property
    def num_pending(self) -> int:
        """Tokens whose K/V still have to be computed before the next draw (drafts not counted)."""
        return len(self) - self.num_computed

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED
