"""Scoring rows: turning the logits of teacher-forced positions into per-token logprobs."""

from __future__ import annotations

from collections.abc import Callable

from ponder.engine import sampler


def row_scorer(tokens: list[int], top_logprobs: int, out: list[dict], visit: Callable | None = None) -> Callable:
    """visit(i, logits) for a scoring sequence: appends the score of tokens[i + 1] to out."""

    def score_row(i, logits):
        if visit is not None:
            visit(i, logits)
        if i + 1 < len(tokens):
            lp = sampler.log_softmax(logits)
            out.append({"token": tokens[i + 1], "logprob": float(lp[tokens[i + 1]]),
                        "top_logprobs": sampler.top_logprobs(lp, top_logprobs)})

    return score_row
