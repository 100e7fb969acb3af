"""What the engine hands back: finished generations, scores, and per-step token events."""

from __future__ import annotations

from dataclasses import dataclass, field

from ponder.engine.sampling_params import SamplingParams

Prompt = str | list[int] | list[dict]


@dataclass
class SampleOutput:
    index: int
    token_ids: list[int]  # every generated token, a final stop token included
    text: str  # what the sample shows: stop token left out, cut where a stop string starts
    logprobs: list[float]
    finish_reason: str  # "stop", "length", "abort" or "error"
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    # with tools (engine/tool_calls.py): True for each forced (tool) token of token_ids (their
    # logprob is 0.0: not the model's), each call with the span of its forced tokens, and the
    # tokens the model drew (forced ones not counted, tokens dropped at a trigger counted)
    tool_mask: list[bool] | None = None
    tool_calls: list[dict] | None = None
    tool_spans: list[tuple[int, int]] | None = None  # (first, count) of each splice's forced tokens
    drawn_tokens: int | None = None


@dataclass
class GenerationResult:
    prompt: Prompt
    prompt_token_ids: list[int]
    outputs: list[SampleOutput]
    seed: int
    params: SamplingParams
    usage: dict = field(default_factory=dict)
    error: BaseException | None = None  # set when the request failed (its finish_reason is "error")
    tools: list[str] | None = None  # the names of the tools the samples could call (None: no tools)

    # the first sample, for the common n = 1 case
    @property
    def text(self) -> str:
        return self.outputs[0].text

    @property
    def token_ids(self) -> list[int]:
        return self.outputs[0].token_ids

    @property
    def logprobs(self) -> list[float]:
        return self.outputs[0].logprobs

    @property
    def finish_reason(self) -> str:
        return self.outputs[0].finish_reason


@dataclass
class ScoreResult:
    """Teacher forcing: one {"token", "logprob", "top_logprobs"} per scored token."""

    token_ids: list[int]
    scores: list[dict]
    error: BaseException | None = None


@dataclass
class TokenEvent:
    """One token appended to one sample during a step (what a streaming client is sent)."""

    request_id: int
    sample_index: int
    token_id: int
    logprob: float
    finish_reason: str | None  # set on the sample's last token
    top_logprobs: list[tuple[int, float]] | None = None  # when the request asked for alternatives
    tool: bool = False  # a forced token of a tool's result (or of a trigger re-encoded), not drawn
