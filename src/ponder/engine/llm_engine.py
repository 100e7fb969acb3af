"""Engine: the public entry point.  Requests in, sampled sequences (or scores) out.

The Engine orchestrates and keeps the request table; the Scheduler owns the
queues and every sequence's progress; the ModelRunner builds each step's input
and runs the model.  `generate` turns prompts (text, token ids or chat
messages) into requests and steps until every sample has finished.  A request
with n > 1 is prefilled once; its other samples fork from the first, sharing
the prompt's KV blocks.  Scoring (teacher forcing) is a request like any other.

A request may carry tools (objects with the tools/base.py interface): a sample that
writes a tool's trigger pauses, the tool runs on the engine's small thread pool
(tool_runner.py) while the other sequences keep stepping, and its result is
spliced as forced tokens computed on top of the sample's KV (tool_calls.py).
"""

from __future__ import annotations

import itertools


from ponder.engine import forking, prompts, recycling_prior, scoring, tool_calls
from ponder.engine.accounting import CostModel
from ponder.engine.finish import FinishRules
from ponder.engine.info import EngineInfo, EngineStats
from ponder.engine.kv_cache import KVCache
from ponder.engine.model_runner import ModelRunner, kernel_isa
from ponder.engine.request import Request
from ponder.engine.results import GenerationResult, Prompt, SampleOutput, ScoreResult, TokenEvent
from ponder.engine.sampling_params import SamplingParams
from ponder.engine.scheduler import Scheduler
from ponder.engine.speculative import DEFAULTS, MODES
from ponder.engine.sequence import Sequence
from ponder.engine.tool_runner import ToolRunner
from ponder.errors import ContextLengthError, InvalidParameterError
from ponder.kernels import native
from ponder.loading.model_files import LoadedModel, load_model

__all__ = ["Engine", "GenerationResult", "SampleOutput", "ScoreResult", "TokenEvent"]


class Engine:
    def __init__(self, model: LoadedModel, *, kv_memory: int = 512 << 20, kv_blocks: int | None = None,
                 block_size: int = 16, token_budget: int = 512, threads: int | None = None,
                 prefix_cache: bool = True, activation_bits: int = 16, speculative: str = "off",
                 speculative_tokens: int | None = None, speculative_max_batch: int | None = None,
                 speculative_shared: bool = False,
                 speculative_prior: bool = True, isa: str | None = None):
        """threads: kernel threads for this engine's steps (None: the default, every CPU or NUMBA_NUM_THREADS); it is applied
        around the engine's own calls, never to the process.  isa: None or the instruction set the
        kernels were started with (PONDER_ISA); it is checked, and shown by info().
        speculative: "off", "lookup" (prompt lookup) or "recycling" (Token Recycling), drafting at
        most speculative_tokens tokens per step while at most speculative_max_batch sequences
        decode (None: the mode's measured defaults, speculative.DEFAULTS); tokens and logprobs are
        the same either way (engine/speculative.py).
        speculative_shared: one proposer (one Token Recycling table) for all requests instead of one
        per request: drafts, and so speed, then depend on what ran before; tokens never do.
        speculative_prior: Token Recycling tables start from the model's prior (recycling_prior.py;
        built once per model file, then read from $PONDER_HOME) instead of cold."""
        if speculative not in MODES:
            raise InvalidParameterError(f"speculative must be one of {', '.join(MODES)} (got {speculative!r})",
                                        "speculative")
        default_tokens, default_batch = DEFAULTS[speculative]
        speculative_tokens = default_tokens if speculative_tokens is None else speculative_tokens
        speculative_max_batch = default_batch if speculative_max_batch is None else speculative_max_batch
        if not (isinstance(speculative_tokens, int) and speculative_tokens >= 0):
            raise InvalidParameterError("speculative_tokens must be an integer >= 0", "speculative_tokens")
        if activation_bits not in (8, 16):
            raise InvalidParameterError("activation_bits must be 8 (llama.cpp's q8) or 16", "activation_bits")
        most = native.default_threads()   # NUMBA_NUM_THREADS, else every CPU: the most either runtime starts
        if threads is not None and not (isinstance(threads, int) and 1 <= threads <= most):
            raise InvalidParameterError(f"threads must be an integer in [1, {most}] (got {threads!r})", "threads")
        if isa is not None and isa != kernel_isa():
            raise InvalidParameterError(f"the kernels run on {kernel_isa()!r} in this process; choose the "
                                        f"instruction set with PONDER_ISA={isa} before starting", "isa")
        self.model, self.tokenizer, self.config = model, model.tokenizer, model.config
        c = self.config
        self._runner = ModelRunner(model.weights, activation_bits, threads)
        self._kv = (KVCache(c.n_layers, c.n_kv_heads, c.head_dim, kv_blocks, block_size) if kv_blocks
                    else KVCache.for_model(c, kv_memory, block_size))
        # a sequence ends ("length") at the context window or where the whole KV pool would be its
        # own, so that no single sequence can wait forever for blocks that do not exist
        kv_positions = self._kv.num_blocks * self._kv.block_size
        rules = FinishRules(self.tokenizer.eos_ids, min(c.context_length, kv_positions), self.tokenizer.decode)
        prior, self._prior_status = None, "none"
        if speculative == "recycling" and speculative_prior and _prior_worthwhile(model, self._runner.model):
            from ponder.engine.token_recycling import K   # its kernel is Numba's: imported only when it runs

            prior, self._prior_status = recycling_prior.load_or_build(model, activation_bits, threads, K)
        self._scheduler = Scheduler(self._kv, rules, token_budget=token_budget, prefix_cache=prefix_cache,
                                    speculative=speculative, speculative_tokens=speculative_tokens,
                                    speculative_shared=speculative_shared,
                                    speculative_max_batch=speculative_max_batch, speculative_prior=prior)
        self._tools = ToolRunner(self._scheduler, lambda text: self.tokenizer.encode(text, add_bos=False))
        self._prompts = prompts.PromptChecker(c.vocab_size, c.context_length, kv_positions)
        self._costs = CostModel(c, self._runner.model.nbytes())
        self._request_ids = itertools.count()
        self._requests: dict[int, Request] = {}
        self._steps = 0

    @classmethod
    def from_pretrained(cls, name_or_path: str = "smollm2-135m", **kwargs) -> Engine:
        return cls(load_model(name_or_path), **kwargs)

    # -- requests ---------------------------------------------------------------------
    def encode_prompt(self, prompt: Prompt) -> list[int]:
        return prompts.encode(self.tokenizer, prompt)

    def check_prompt(self, ids: list[int], generate: bool = True) -> None:
        """Raise the PonderError a request with these prompt ids would get, before it does any work."""
        self._prompts.check(ids, generate)

    def check_token_ids(self, ids: list[int], field: str = "prompt") -> None:
        self._prompts.check_ids(ids, field)

    def add_request(self, prompt: Prompt, params: SamplingParams, tools=None) -> int:
        """A generation request; tools: None or a list of tools (tools/base.py) its samples may call."""
        params = params.with_seed()
        triggers = _triggers(tools)
        ids = self.encode_prompt(prompt)
        self.check_prompt(ids)
        self._prompts.check_ids(params.stop_token_ids, "stop_token_ids")
        rid = next(self._request_ids)
        names = [getattr(t, "name", "") or type(t).__name__ for t in triggers.values()] if triggers else None
        line = tool_calls.open_line(ids) if triggers else []
        samples = forking.samples(rid, ids, params, triggers, line)
        return self._add(Request(rid, prompt, ids, params, samples, tools=names))

    def add_score(self, tokens: list[int], start: int = 1, top_logprobs: int = 0, visit=None) -> int:
        """A scoring request: the logprob of each of tokens[start:] given what precedes it.

        Its result (pop_result) is a ScoreResult.  visit(position, logits), if given, also sees the
        logits of every position >= start - 1 (in position order).
        """
        tokens = self.encode_prompt(list(tokens))
        if not 1 <= start <= len(tokens):
            raise InvalidParameterError(f"start must be in [1, {len(tokens)}]", "start")
        self.check_prompt(tokens, generate=False)
        rid = next(self._request_ids)
        req = Request(rid, tokens, tokens, SamplingParams(temperature=0), [], kind="score")
        visit = scoring.row_scorer(tokens, top_logprobs, req.scores, visit)
        req.samples.append(Sequence(rid, 0, list(tokens), req.params, score_from=start - 1, visit=visit))
        return self._add(req)

    def fork(self, request_id: int, sample_index: int, params: SamplingParams) -> int:
        """A new request continuing sample `sample_index` of a request from where it is now.

        Its prompt is that sample's tokens so far; it shares the sample's KV blocks (copy-on-write),
        so nothing is recomputed.  Works while the sample runs and after it finished, until its
        result is popped.  Strategies use it to branch a partial solution.
        """
        src = self._sample(request_id, sample_index)
        params = params.with_seed()
        self.check_prompt(src.tokens)
        rid = next(self._request_ids)
        samples = forking.samples(rid, src.tokens, params)
        self._requests[rid] = Request(rid, list(src.tokens), list(src.tokens), params, samples)
        self._scheduler.add_continuation(samples[0], src)
        return rid

    def append_tokens(self, request_id: int, sample_index: int, token_ids: list[int]) -> None:
        """Force tokens (e.g. a tool's output) onto a sample that has drawn its first token and is not finished.

        They are computed in the next steps like a prefill chunk; then the next token is drawn after them.
        """
        seq = self._sample(request_id, sample_index)
        if seq.finished or not seq.output_ids or not token_ids:
            raise InvalidParameterError("tokens can be appended only to a sample that has started and not finished",
                                        "token_ids")
        self.check_prompt(seq.tokens + list(token_ids))
        self._scheduler.append_forced(seq, [int(t) for t in token_ids])

    def _sample(self, request_id: int, sample_index: int) -> Sequence:
        req = self._requests.get(request_id)
        if req is None or not 0 <= sample_index < len(req.samples) or req.kind != "generate":
            raise InvalidParameterError(f"no sample {sample_index} of a generation request {request_id} "
                                        "(its result may have been popped)", "request_id")
        return req.samples[sample_index]

    def _add(self, req: Request) -> int:
        self._requests[req.id] = req
        self._scheduler.add(req.samples[0])
        return req.id

    def step(self, wait: float | None = None) -> list[TokenEvent]:
        """Run one forward step; returns the tokens it appended (tool results spliced in included).

        When every live sample waits for a tool, it first waits for one to finish: at most `wait`
        seconds (None: as long as it takes); if none has by then it returns without a step.
        """
        events = self._tools.collect()
        chunks = self._scheduler.schedule()
        if not chunks and self._tools.busy:
            events += self._tools.collect(wait)
            chunks = self._scheduler.schedule()
        if not chunks:
            if events or self._tools.busy or not self._scheduler.has_work():
                return events
            raise ContextLengthError("the KV pool is too small for any waiting request")  # pragma: no cover
        logits, ranges = self._runner.run(chunks, self._kv.k, self._kv.v)
        n_tokens = sum(c.length for c in chunks)
        for c in chunks:
            self._requests[c.seq.request_id].cost.add(self._costs.chunk(c.start, c.length, n_tokens))
        stepped, failed = self._scheduler.postprocess(chunks, logits, ranges)
        events += stepped
        for seq in failed:  # the whole request fails; nothing else in the batch does
            self.abort(seq.request_id)
        for seq in self._scheduler.take_pauses():
            events += self._tools.start(seq)
        self._steps += 1
        return events

    def abort(self, request_id: int) -> None:
        """Stop a request now: its unfinished samples finish with reason "abort" and free their blocks."""
        req = self._requests.get(request_id)
        for seq in req.samples if req is not None else ():
            self._scheduler.finish(seq, "abort")

    def has_unfinished(self) -> bool:
        return self._scheduler.has_work()

    def is_finished(self, request_id: int) -> bool:
        return self._requests[request_id].finished

    def pop_result(self, request_id: int) -> GenerationResult | ScoreResult:
        return self._requests.pop(request_id).result(self.tokenizer.eos_ids, self.tokenizer.decode)

    def run_until_done(self, request_ids: list[int]) -> list:
        while not all(self.is_finished(r) for r in request_ids):
            self.step()
        return [self.pop_result(r) for r in request_ids]

    def generate(self, prompts: Prompt | list[Prompt], params: SamplingParams | None = None,
                 tools=None) -> list[GenerationResult]:
        """Generate for one prompt or a list of prompts; returns one result per prompt (raises if one failed)."""
        params = params or SamplingParams()
        batch = prompts if _is_prompt_list(prompts) else [prompts]
        ids = [self.add_request(p, params, tools) for p in batch]
        return _raise_failed(self.run_until_done(ids))

    def forward_rows(self, tokens: list[int], first_row: int, visit) -> None:
        """Run `tokens` through the model and call visit(i, logits) for each position i >= first_row.

        logits at position i predict token i + 1.  It steps the engine until done, so any other
        request in flight advances too (use add_score to interleave scoring with streaming).
        """
        rid = self.add_score(tokens, first_row + 1, visit=visit)
        _raise_failed(self.run_until_done([rid]))

    def score(self, tokens: list[int], start: int = 1, top_logprobs: int = 0) -> list[dict]:
        """Log-probability of each of tokens[start:] given the tokens before it.

        Returns one dict per scored token: {"token", "logprob", "top_logprobs"}, the same bits
        generation reports for the same tokens.
        """
        rid = self.add_score(tokens, start, top_logprobs)
        return _raise_failed(self.run_until_done([rid]))[0].scores

    # -- read-only views ------------------------------------------------------------------
    def info(self) -> EngineInfo:
        from ponder import __version__
        from ponder.kernels import KERNEL_VERSION

        s = self._scheduler
        return EngineInfo(self.model.name, self.model.path, self._runner.bits, kernel_isa(), self._runner.num_threads,
                          KERNEL_VERSION, __version__, self.config.context_length, self.config.vocab_size,
                          self._kv.block_size, self._kv.num_blocks, s.token_budget, s.radix is not None,
                          s.speculative, s.speculative_tokens, self._runner.model.nbytes(),
                          s.rules.context_length, self._prior_status, self._runner.runtime(self._kv.block_size))

    def stats(self) -> EngineStats:
        s, kv = self._scheduler.stats(), self._kv
        unfinished = sum(1 for r in self._requests.values() if not r.finished)
        return EngineStats(s["waiting_requests"], s["running_requests"], s["waiting_sequences"],
                           s["running_sequences"], unfinished, self._steps, s["preemptions"], s["prefix_cache_nodes"],
                           kv.num_blocks, kv.num_blocks - kv.num_available, kv.num_evictable,
                           s["tool_sequences"])

    def transcript(self, result: GenerationResult) -> dict:
        """The replayable record of a generation (see engine/transcript.py)."""
        from ponder.engine import transcript

        return transcript.make_transcript(self, result)

    def verify(self, transcript: dict, tools=None):
        """Replay a transcript; the report says "verified" or names the first divergent token.

        tools: the tools (tools/base.py) a transcript with tool calls names, to re-run each call."""
        from ponder.engine import transcript as t

        return t.verify(self, transcript, tools)


def _triggers(tools) -> dict | None:
    """trigger -> tool for a request's tools (None without any); a malformed list is the caller's error."""
    if not tools:
        return None
    out = {}
    for t in tools:
        trig = getattr(t, "trigger", None)
        if not (isinstance(trig, str) and trig and callable(getattr(t, "find_call", None))
                and callable(getattr(t, "run", None))):
            raise InvalidParameterError(f"tools: {t!r} is not a tool (a trigger, find_call and run)", "tools")
        if trig in out:
            raise InvalidParameterError(f"tools: two tools have the trigger {trig!r}", "tools")
        out[trig] = t
    return out


def _raise_failed(results: list) -> list:
    failed = next((r.error for r in results if r.error is not None), None)
    if failed is not None:
        raise failed
    return results


def _is_prompt_list(prompts) -> bool:
    """A list of prompts, as opposed to one prompt that is itself a list (token ids or messages)."""
    return isinstance(prompts, list) and bool(prompts) and all(isinstance(p, (str, list)) for p in prompts)


def _prior_worthwhile(model: LoadedModel, fast_model) -> bool:
    """A Token Recycling prior is kept for a model file whose packed weights the weight cache keeps too:
    for a small test model, building it costs more than it saves."""
    import os

    from ponder.model.weight_cache import MIN_BYTES

    source = model.weights.source
    return source is not None and os.path.isfile(source) and fast_model.nbytes() >= MIN_BYTES
