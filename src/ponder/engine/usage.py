"""Usage: what one finished request cost, as reported in its result."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ponder.engine.request import Request


def forked_tokens(samples: int, prompt_tokens: int) -> int:
    """Prompt work the n - 1 samples forked from one prefill did not do (for any backend that forks)."""
    return max(samples - 1, 0) * prompt_tokens


def usage(req: Request) -> dict:
    c = req.cost
    forked = len(req.samples) if req.samples[0].output_ids else 1  # forks happen at sample 0's first draw
    forced = sum(s.tools.forced for s in req.samples if s.tools is not None)
    tools = {} if req.samples[0].tools is None else {  # tool output is not the model's: counted apart
        "tool_tokens": forced, "tool_calls": sum(len(s.tools.calls) for s in req.samples)}
    return {
        "prompt_tokens": len(req.prompt_ids),
        "completion_tokens": sum(len(s.output_ids) for s in req.samples) - forced,
        **tools,
        "cached_tokens": req.samples[0].num_cached,  # prompt tokens served by the prefix cache
        "forked_tokens": forked_tokens(forked, len(req.prompt_ids)),
        "computed_tokens": c.computed_tokens,
        "speculative_proposed": sum(s.spec_proposed for s in req.samples),
        "speculative_accepted": sum(s.spec_accepted for s in req.samples),
        "flops": c.flops,
        "bytes": c.bytes,
    }
