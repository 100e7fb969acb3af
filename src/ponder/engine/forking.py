"""Forking: the sequences of a request whose samples share one prefill.

A request with n samples is created as sample 0 plus n - 1 parked siblings;
at the end of sample 0's prefill the scheduler gives each sibling a reference to
sample 0's blocks (copy-on-write), so the prompt is computed once.  A request
continuing another sample's text (`Engine.fork`) shares that sample's blocks
the same way (`Scheduler.add_continuation`).
"""

from __future__ import annotations

from ponder.engine.sampling_params import SamplingParams
from ponder.engine.sequence import Sequence
from ponder.engine.tool_calls import ToolState


def samples(request_id: int, prompt_ids: list[int], params: SamplingParams, tools=None, line: list[int] | None = None,
            ) -> list[Sequence]:
    """Sample 0, whose siblings are samples 1..n-1 (all n returned, in sample order).

    tools: None, or trigger -> tool; each sample gets its own ToolState (line: the prompt's open line)."""

    def one(i):
        return Sequence(request_id, i, list(prompt_ids), params,
                        tools=ToolState(dict(tools), list(line or [])) if tools else None)

    first = one(0)
    first.siblings = [one(i) for i in range(1, params.n)]
    return [first, *first.siblings]
