"""Finish rules, and the one function that decides what a finished sample shows.

`FinishRules.reason` is asked after every drawn token: EOS or a stop token id or
a stop string ends a sample with "stop"; max_tokens or the context window with
"length".  `shown` turns a finished sample into what a user sees: the token ids
without a final stop token, their logprobs, the text cut where a stop string
starts, vLLM's `stop_reason`, and whether the model itself ended the answer.
The engine, the strategy backends and the server all use `shown`, so a stop
token or stop string is handled in exactly one place.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from ponder.engine.sampling_params import SamplingParams


def is_stop_token(token: int, params: SamplingParams, eos_ids: Collection[int]) -> bool:
    """A token that ends a sample without being part of its text."""
    return (not params.ignore_eos and token in eos_ids) or token in params.stop_token_ids


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, str | None]:
    """The text up to the earliest stop string in it, and that stop string (None if none occurs)."""
    found = [(text.find(s), i) for i, s in enumerate(stop) if s and s in text]
    if not found:
        return text, None
    at, i = min(found)
    return text[:at], stop[i]


def round_stop(text: str, stop: tuple[str, ...], triggers) -> tuple[str, str] | None:
    """("stop", s) or ("tool", trigger) for the earliest stop string or trigger in a round's text."""
    cut, which = cut_at_stop(text, tuple(dict.fromkeys(tuple(stop) + tuple(triggers))))
    if which is None:
        return None
    rest = text[len(cut):]
    hit = next((s for s in stop if s and rest.startswith(s)), None)
    if hit is not None:
        return "stop", hit
    return "tool", max((t for t in triggers if rest.startswith(t)), key=len)


class FinishRules:
    def __init__(self, eos_ids: Collection[int], context_length: int, decode: Callable[[list[int]], str]):
        self.eos_ids = eos_ids
        self.context_length = context_length
        self.decode = decode

    def reason(self, output_ids: list[int], length: int, params: SamplingParams, since: int = 0,
               forced: int = 0, triggers=()) -> str | None:
        """Why a sample whose last drawn token is output_ids[-1] (total length `length`) ends, or None.

        With tools (engine/tool_calls.py): stop strings and `triggers` are looked for in the text
        drawn since output index `since` (the round), "tool" means the sample pauses at a trigger,
        and the `forced` tokens of the output do not count against max_tokens.
        """
        if is_stop_token(output_ids[-1], params, self.eos_ids):
            return "stop"
        if params.stop or triggers:
            hit = round_stop(self.decode(output_ids[since:]), params.stop, triggers)
            if hit is not None:
                return hit[0]
        if len(output_ids) - forced >= params.max_tokens or length >= self.context_length:
            return "length"
        return None


@dataclass
class Shown:
    token_ids: list[int]  # the generated ids without a final stop token
    logprobs: list[float]
    top_logprobs: list
    text: str | None  # decoded and cut at a stop string (None when no decoder was given)
    stop_reason: str | int | None  # vLLM's: the stop string or stop token id that ended it; None for EOS/length
    hidden: int | None  # the stop token left out, if any
    eos: bool  # the model's own end-of-sequence token ended the sample


def shown(token_ids: list[int], logprobs: list[float], top_logprobs: list | None, finish_reason: str | None,
          params: SamplingParams, eos_ids: Collection[int], decode: Callable[[list[int]], str] | None = None,
          ) -> Shown:
    """What a finished sample shows (see the module docstring)."""
    ids, lps, tops = list(token_ids), list(logprobs), list(top_logprobs or [])
    hidden = None
    if finish_reason == "stop" and ids and is_stop_token(ids[-1], params, eos_ids):
        hidden = ids.pop()
        lps, tops = lps[:len(ids)], tops[:len(ids)]
    text, why = None, None
    if hidden is not None and hidden in params.stop_token_ids:
        why = hidden
    if decode is not None:
        text = decode(ids)
        if finish_reason == "stop" and hidden is None:
            text, why = cut_at_stop(text, params.stop)
    eos = hidden is not None and hidden not in params.stop_token_ids
    return Shown(ids, lps, tops, text, why, hidden, eos)
