"""Backend: the few model operations strategies need, so they run on any server.

Strategies work in token ids: a prompt is rendered once, and forking a partial solution is
submitting prompt ids + partial output ids as a new prompt (the engine's prefix cache reuses
all of it).  `EngineBackend` wraps the in-process Engine; an HTTP backend only has to
implement the same methods.  Every call adds to `usage`, the compute ledger of the run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields

from ponder.engine.finish import shown
from ponder.engine.sampling_params import SamplingParams
from ponder.engine.usage import forked_tokens


@dataclass
class Usage:
    """Tokens spent.  Reuse is counted two ways: prompt tokens found in the prefix cache, and
    prompt tokens shared by the n - 1 samples forked from one prefill."""

    requests: int = 0
    prompt_tokens: int = 0  # per request, counted once however many samples it has
    cached_tokens: int = 0  # of prompt_tokens, not recomputed (prefix cache)
    forked_tokens: int = 0  # prompt tokens the forked samples did not prefill again
    generated_tokens: int = 0
    tool_tokens: int = 0  # forced tokens of tool results (and re-encoded triggers): not generated, not prompt
    tool_calls: int = 0
    estimated: bool = False  # cached_tokens is our estimate, the backend did not report it

    @property
    def saved_tokens(self) -> int:
        return self.cached_tokens + self.forked_tokens

    @property
    def computed_tokens(self) -> int:
        """Tokens the model actually ran: prefill not served from cache, plus generation."""
        return self.prompt_tokens - self.cached_tokens + self.generated_tokens

    def __add__(self, other: Usage) -> Usage:
        out = Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self) if f.name != "estimated"})
        out.estimated = self.estimated or other.estimated
        return out

    def __sub__(self, other: Usage) -> Usage:
        out = Usage(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self) if f.name != "estimated"})
        out.estimated = self.estimated
        return out

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["saved_tokens"] = self.saved_tokens
        return d


@dataclass
class Sample:
    token_ids: list[int]  # generated ids (and forced tool ids), without a final end-of-sequence token
    text: str
    logprobs: list[float]  # the model's own log-probability of each of its generated token_ids (never tool tokens)
    finish_reason: str  # "eos": the model ended its answer; "stop": a stop string; "length"
    generated: int = 0  # tokens generated, including a final end-of-sequence token
    tool_mask: list[bool] | None = None  # with tools: True for each forced (tool) token of token_ids
    tool_calls: list[dict] = field(default_factory=list)  # with tools: each call and its result

    @property
    def tool_info(self) -> dict:
        """What a record of this sample says about its tool use (nothing without tools)."""
        if self.tool_mask is None:
            return {}
        return {"tool_calls": self.tool_calls, "tool_tokens": sum(self.tool_mask)}

    @property
    def ended(self) -> bool:
        return self.finish_reason == "eos"


@dataclass
class Generation:
    prompt_ids: list[int]
    samples: list[Sample]
    usage: Usage = field(default_factory=Usage)


class Backend(ABC):
    """What a strategy may ask of a model."""

    def __init__(self):
        self.usage = Usage()

    @abstractmethod
    def model_info(self) -> dict:
        """{"name": ..., "sha256": ...} identifying the weights, for the results store."""

    def max_sequence(self) -> int | None:
        """Where a sequence (prompt + answer) ends with "length", if the backend tells (None: unknown)."""
        return None

    @abstractmethod
    def encode_chat(self, messages: list[dict]) -> list[int]:
        """The prompt ids of a chat, rendered with the model's template, ready for the answer."""

    @abstractmethod
    def decode(self, token_ids: list[int]) -> str: ...

    def encode(self, text: str) -> list[int]:
        """The ids of a piece of text, without a beginning-of-sequence token (for forced tool text)."""
        raise NotImplementedError(f"{type(self).__name__} cannot encode text")

    @abstractmethod
    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams]) -> list[Generation]:
        """One Generation per prompt, each with params.n samples; adds to self.usage.

        `params` is one SamplingParams for all prompts or one per prompt (e.g. per-sample seeds);
        the prompts are decoded together as one batch."""

    def score(self, tokens: list[int], start: int) -> list[float]:
        """Log-probability of each of tokens[start:] given what precedes it (teacher forcing)."""
        raise NotImplementedError(f"{type(self).__name__} cannot score text")

    def warm(self, prompt_ids: list[int]) -> None:
        """Prefill a prompt into the prefix cache before several requests share it (optional)."""

    def with_tools(self, tools: list) -> Backend:
        """This backend with tools its samples may call: by default the client-side tool loop
        (strategies/tool_loop.py), which works against any server."""
        from ponder.strategies.tool_loop import ToolBackend

        return ToolBackend(self, tools)


class EngineBackend(Backend):
    """The in-process ponder Engine.  With tools, the engine runs them in its decoding loop
    (engine/tool_runner.py): the same tokens as the client-side loop, without a request per round."""

    def __init__(self, engine, tools: list | None = None):
        super().__init__()
        self.engine = engine
        self.tools = list(tools) if tools else None
        self._info = None

    def with_tools(self, tools):
        return EngineBackend(self.engine, tools)

    def model_info(self) -> dict:
        if self._info is None:
            m = self.engine.model
            self._info = {"name": m.name, "path": m.path, "sha256": m.sha256()}
        return self._info

    def max_sequence(self):
        return self.engine.info().max_sequence

    def encode_chat(self, messages):
        tok = self.engine.tokenizer
        return tok.encode(tok.apply_chat_template(messages))

    def decode(self, token_ids):
        return self.engine.tokenizer.decode(token_ids)

    def encode(self, text):
        return self.engine.tokenizer.encode(text, add_bos=False)

    def warm(self, prompt_ids):
        # scoring computes every prompt position and leaves the blocks in the prefix cache
        if len(prompt_ids) > 1:
            self.engine.score(list(prompt_ids), start=len(prompt_ids))
            self.usage.prompt_tokens += len(prompt_ids)
            self.usage.requests += 1

    def score(self, tokens, start):
        out = self.engine.score(list(tokens), start=start)
        self.usage.prompt_tokens += len(tokens)
        return [r["logprob"] for r in out]

    def generate(self, prompts, params):
        per = params if isinstance(params, list) else [params] * len(prompts)
        ids = []
        try:
            for p, sp in zip(prompts, per):
                ids.append(self.engine.add_request(list(p), sp, self.tools))
        except Exception:
            for rid in ids:  # a later prompt was rejected: do not leave the earlier ones running
                self.engine.abort(rid)
                self.engine.pop_result(rid)
            raise
        results = self.engine.run_until_done(ids)
        failed = next((r.error for r in results if r.error is not None), None)
        if failed is not None:  # the other prompts' results are complete, but the batch is incomplete
            raise failed
        gens = []
        for prompt, sp, r in zip(prompts, per, results):
            samples = [self._sample(o, sp) for o in r.outputs]
            usage = usage_of(r.prompt_token_ids, [s.generated for s in samples], r.usage["cached_tokens"],
                             r.usage["forked_tokens"])
            usage.tool_tokens = r.usage.get("tool_tokens", 0)
            usage.tool_calls = r.usage.get("tool_calls", 0)
            self.usage = self.usage + usage
            gens.append(Generation(list(r.prompt_token_ids), samples, usage))
        return gens

    def _sample(self, o, params) -> Sample:
        eos = self.engine.tokenizer.eos_ids
        if o.tool_mask is None:
            return make_sample(list(o.token_ids), o.text, list(o.logprobs), o.finish_reason, params, eos)
        s = make_sample(list(o.token_ids), o.text, list(o.logprobs), o.finish_reason, params, eos)
        s.tool_mask = o.tool_mask[:len(s.token_ids)]
        s.logprobs = [lp for lp, m in zip(s.logprobs, s.tool_mask) if not m]  # the model's tokens only
        s.tool_calls = [dict(c) for c in o.tool_calls]
        s.generated = o.drawn_tokens
        return s


def make_sample(ids: list[int], text: str, logprobs: list[float], reason: str, params: SamplingParams,
                eos_ids) -> Sample:
    """A Sample from a backend's output: a final end-of-sequence (or stop) token ends the answer ("eos")."""
    view = shown(ids, logprobs, None, reason, params, eos_ids)
    reason = "eos" if view.hidden is not None else reason
    return Sample(view.token_ids, text, view.logprobs, reason, generated=len(ids))


def usage_of(prompt_ids, generated: list[int], cached: int | None, forked: int | None = None) -> Usage:
    """One request's Usage; cached None means the backend did not say (counted as 0, marked estimated).

    forked None: the backend did not say; its n samples are taken to share one prefill."""
    p = len(prompt_ids)
    forked = forked_tokens(len(generated), p) if forked is None else forked
    return Usage(requests=1, prompt_tokens=p, cached_tokens=min(cached or 0, p - 1),
                 forked_tokens=forked, generated_tokens=sum(generated), estimated=cached is None)
