"""Sequence: one sample of one request, as the scheduler and the model runner see it.

Who writes what: the constructor sets identity (request_id, sample_index,
prompt_ids, params, kind, siblings, visit); after that the Scheduler is the only
writer of every other field (tokens drawn or forced, blocks, progress, status,
drafts).  The Engine and the model runner only read a Sequence.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from ponder.engine.draft_tree import DraftTree
from ponder.engine.sampling_params import SamplingParams
from ponder.engine.speculative import Proposer
from ponder.engine.tool_calls import ToolState

_ids = itertools.count()


class Status(enum.Enum):
    WAITING = "waiting"  # tokens to compute, not yet admitted (or preempted)
    RUNNING = "running"
    PARKED = "parked"  # sample i > 0 of a request, waiting for sample 0's prefill to fork from
    TOOL = "tool"  # paused at a tool trigger: keeps its blocks, out of the batch until the result is spliced
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    request_id: int
    sample_index: int
    prompt_ids: list[int]
    params: SamplingParams
    # scoring work (teacher forcing): the logits of positions >= score_from go to visit(position, row);
    # a scoring sequence draws nothing and finishes once every token is computed
    score_from: int | None = None
    visit: Callable | None = None
    siblings: list[Sequence] = field(default_factory=list)  # samples 1..n-1, forked at the first draw
    tools: ToolState | None = None  # a sample that may call tools (engine/tool_calls.py)
    output_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    block_table: list[int] = field(default_factory=list)
    num_computed: int = 0  # leading tokens whose K/V are in the cache
    num_cached: int = 0  # tokens whose K/V came from the prefix cache instead of being computed
    num_forced: int = 0  # output tokens appended from outside (tool results), not drawn
    score_next: int = 0  # the next position whose logits a scoring sequence visits
    status: Status = Status.WAITING
    finish_reason: str | None = None
    error: BaseException | None = None  # why a sequence finished with reason "error"
    draft: DraftTree | None = None  # speculative tokens to verify in the next step
    proposer: Proposer | None = None  # drafts for this request (shared by its samples); None: no speculation
    spec_proposed: int = 0
    spec_accepted: int = 0
    seq_id: int = field(default_factory=lambda: next(_ids))

    def __post_init__(self):
        if self.score_from is not None:
            self.score_next = self.score_from

    @property
    def tokens(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def scoring(self) -> bool:
        return self.score_from is not None

    @property
    def rng_index(self) -> int:
        """The sample number that keys this sequence's draws (see SamplingParams.first_sample)."""
        return self.params.first_sample + self.sample_index

    @property
    def num_pending(self) -> int:
        """Tokens whose K/V still have to be computed before the next draw (drafts not counted)."""
        return len(self) - self.num_computed

    @property
    def reuse_limit(self) -> int:
        """How many leading tokens may come from the prefix cache: the rest need their logits."""
        return self.score_next if self.scoring else len(self) - 1

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED
