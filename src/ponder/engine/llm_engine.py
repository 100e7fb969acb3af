"""Engine: the public entry point.  Requests in, sampled sequences out.

`Engine.generate` turns prompts (text, token ids or chat messages) into requests,
and steps the scheduler and the model until every sample has finished.  A
request with n > 1 is prefilled once; its samples are forks that share the
prompt's KV blocks.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from ponder.engine import sampler, speculative
from ponder.engine.accounting import Cost, CostModel
from ponder.engine.kv_cache import KVCache
from ponder.engine.sampling_params import SamplingParams
from ponder.engine.scheduler import ScheduledChunk, Scheduler
from ponder.engine.sequence import Sequence
from ponder.errors import ContextLengthError, InvalidParameterError
from ponder.loading.model_files import LoadedModel, load_model
from ponder.model.fast_model import FastModel, StepInput

Prompt = str | list[int] | list[dict]


@dataclass
class SampleOutput:
    index: int
    token_ids: list[int]
    text: str
    logprobs: list[float]
    finish_reason: str
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)


@dataclass
class GenerationResult:
    prompt: Prompt
    prompt_token_ids: list[int]
    outputs: list[SampleOutput]
    seed: int
    params: SamplingParams
    usage: dict = field(default_factory=dict)

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
class TokenEvent:
    """One token appended to one sample during a step (what a streaming client is sent)."""

    request_id: int
    sample_index: int
    token_id: int
    logprob: float
    finish_reason: str | None  # set on the sample's last token
    top_logprobs: list[tuple[int, float]] | None = None  # when the request asked for alternatives


@dataclass
class _Request:
    id: int
    prompt: Prompt
    prompt_ids: list[int]
    params: SamplingParams
    samples: list[Sequence] = field(default_factory=list)
    cost: Cost = field(default_factory=Cost)


class Engine:
    def __init__(self, model: LoadedModel, *, kv_memory: int = 512 << 20, kv_blocks: int | None = None,
                 block_size: int = 16,
                 token_budget: int = 512, threads: int | None = None, prefix_cache: bool = True,
                 activation_bits: int = 16, speculative_tokens: int = 0, speculative_max_batch: int = 4):
        if threads is not None:
            import numba
            numba.set_num_threads(threads)
        self.model = model
        self.tokenizer = model.tokenizer
        self.config = model.config
        if activation_bits not in (8, 16):
            raise InvalidParameterError("activation_bits must be 8 (llama.cpp's q8) or 16", "activation_bits")
        self.runner = FastModel(model.weights, activation_bits)
        c = self.config
        self.kv = (KVCache(c.n_layers, c.n_kv_heads, c.head_dim, kv_blocks, block_size) if kv_blocks
                   else KVCache.for_model(c, kv_memory, block_size))
        self.scheduler = Scheduler(self.kv, token_budget=token_budget, prefix_cache=prefix_cache)
        # Drafts cost compute per token; they can pay off only while decode is bound by
        # memory bandwidth, i.e. when few sequences decode together.  Off by default: on
        # chat answers they measured within noise (BENCHMARKS.md); Engine(speculative_tokens=4).
        self.speculative_tokens = speculative_tokens
        self.speculative_max_batch = speculative_max_batch
        self.costs = CostModel(self.config, self.runner.nbytes())
        self._request_ids = itertools.count()
        self._requests: dict[int, _Request] = {}

    @classmethod
    def from_pretrained(cls, name_or_path: str = "smollm2-135m", **kwargs) -> Engine:
        return cls(load_model(name_or_path), **kwargs)

    # -- prompts ------------------------------------------------------------
    def encode_prompt(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt)
        if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt) and prompt:
            return self.tokenizer.encode(self.tokenizer.apply_chat_template(prompt))
        if isinstance(prompt, list) and all(isinstance(t, (int, np.integer)) for t in prompt) and prompt:
            bad = [t for t in prompt if not 0 <= t < self.config.vocab_size]
            if bad:
                raise InvalidParameterError(f"token id {bad[0]} is outside the vocabulary (0..{self.config.vocab_size - 1})", "prompt")
            return [int(t) for t in prompt]
        raise InvalidParameterError("a prompt is a non-empty string, list of token ids, or list of chat messages", "prompt")

    # -- requests -----------------------------------------------------------
    def add_request(self, prompt: Prompt, params: SamplingParams) -> int:
        params = params.with_seed()
        ids = self.encode_prompt(prompt)
        ctx = self.config.context_length
        if len(ids) >= ctx:
            raise ContextLengthError(
                f"the prompt is {len(ids)} tokens; the model's context window is {ctx}, which leaves no room to generate"
            )
        if self.kv.blocks_for(len(ids) + 1) > self.kv.num_blocks:
            raise ContextLengthError(
                f"the prompt is {len(ids)} tokens but the KV pool holds only {self.kv.num_blocks * self.kv.block_size}"
            )
        req = _Request(next(self._request_ids), prompt, ids, params)
        first = Sequence(req.id, 0, list(ids), params)
        req.samples.append(first)
        self._requests[req.id] = req
        self.scheduler.add(first)
        return req.id

    def step(self) -> list[TokenEvent]:
        """Run one forward step; returns the tokens it appended."""
        self._propose_drafts()
        chunks = self.scheduler.schedule()
        if not chunks:
            raise ContextLengthError("the KV pool is too small for any waiting request")  # pragma: no cover
        step, rows = self._step_input(chunks)
        logits = self.runner.forward(step, self.kv.k, self.kv.v)
        events: list[TokenEvent] = []
        n_tokens = len(step.tokens)
        for chunk, (lo, hi) in zip(chunks, rows):
            seq = chunk.seq
            real_end = min(chunk.start + chunk.length, len(seq))
            self._requests[seq.request_id].cost.add(self.costs.chunk(chunk.start, chunk.length, n_tokens))
            seq.num_computed = real_end
            if chunk.completes and chunk.start < len(seq.prompt_ids):
                self.scheduler.cache_computed(seq)  # the prompt is shareable from now on
            if chunk.completes:
                draft = seq.draft[:chunk.start + chunk.length - len(seq)]
                for s in self._fork_if_first_draw(seq):
                    events.extend(self._draw(s, logits[lo:hi], draft if s is seq else []))
            seq.draft = []
        return events

    def fork(self, request_id: int, sample_index: int, params: SamplingParams) -> int:
        """A new request continuing sample `sample_index` of a request from where it is now.

        The new request's prompt is that sample's prompt and output so far; it shares
        the sample's KV blocks (copy-on-write), so nothing is recomputed.  Works while
        the sample runs and after it finished, until its result is popped.  Strategies
        use it to branch a partial solution.
        """
        src = self._requests[request_id].samples[sample_index]
        params = params.with_seed()
        req = _Request(next(self._request_ids), list(src.tokens), list(src.tokens), params)
        first = Sequence(req.id, 0, list(src.tokens), params)
        if src.block_table:
            first.block_table = [self.kv.share(b) for b in src.block_table]
            first.num_computed = min(src.num_computed, len(first) - 1)  # the last token's logits are needed
            first.num_cached = first.num_computed
        req.samples.append(first)
        self._requests[req.id] = req
        self.scheduler.add(first)
        return req.id

    def abort(self, request_id: int) -> None:
        """Stop a request now: its samples finish with reason "abort" and their blocks are freed."""
        req = self._requests.get(request_id)
        if req is None:
            return
        for seq in req.samples:
            if not seq.finished:
                seq.finish_reason = "abort"
                self.scheduler.finish(seq)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work()

    def is_finished(self, request_id: int) -> bool:
        return all(s.finished for s in self._requests[request_id].samples)

    def pop_result(self, request_id: int) -> GenerationResult:
        return self._result(self._requests.pop(request_id))

    def run_until_done(self, request_ids: list[int]) -> list[GenerationResult]:
        while not all(self.is_finished(r) for r in request_ids):
            self.step()
        return [self.pop_result(r) for r in request_ids]

    def generate(self, prompts: Prompt | list[Prompt], params: SamplingParams | None = None) -> list[GenerationResult]:
        """Generate for one prompt or a list of prompts; returns one result per prompt."""
        params = params or SamplingParams()
        batch = prompts if _is_prompt_list(prompts) else [prompts]
        ids = [self.add_request(p, params) for p in batch]
        return self.run_until_done(ids)

    # -- scoring ------------------------------------------------------------
    def forward_rows(self, tokens: list[int], first_row: int, visit) -> None:
        """Run `tokens` through the model and call visit(i, logits) for each position i >= first_row.

        logits at position i predict token i + 1.  Cached prefix blocks are reused
        up to first_row; the rows asked for are computed in prefill chunks, which
        give the same bits as decoding them one by one.
        """
        from ponder.engine.kv_cache import KVPoolFullError

        if self.kv.blocks_for(len(tokens)) > self.kv.num_blocks:
            raise KVPoolFullError(f"{len(tokens)} tokens do not fit in the KV pool "
                                  f"({self.kv.num_blocks * self.kv.block_size} positions)")
        seq = Sequence(-1, 0, list(tokens), SamplingParams(temperature=0))
        sched = self.scheduler
        if sched.radix is not None:
            blocks, n = sched.radix.match(seq.tokens, limit=first_row)
            seq.block_table, seq.num_computed = [self.kv.share(b) for b in blocks], n
        try:
            while seq.num_computed < len(tokens):
                n = min(len(tokens) - seq.num_computed, sched.token_budget)
                if not sched.reserve(seq, n):
                    raise KVPoolFullError("the KV pool is busy; score when fewer requests are running")
                start = seq.num_computed
                rows = [i - start for i in range(start, start + n) if i >= first_row]
                step = StepInput(np.array(tokens[start:start + n], np.int64), np.arange(start, start + n),
                                 np.zeros(n, np.int32), np.array([seq.block_table], np.int32),
                                 np.array(rows, np.int64))
                logits = self.runner.forward(step, self.kv.k, self.kv.v)
                seq.num_computed = start + n
                for r, row in zip(rows, logits):
                    visit(start + r, row)
        finally:
            sched.cache_computed(seq, final=True)
            sched.free_blocks(seq)

    def score(self, tokens: list[int], start: int = 1, top_logprobs: int = 0) -> list[dict]:
        """Log-probability of each of tokens[start:] given the tokens before it.

        Returns one dict per scored token: {"token", "logprob", "top_logprobs"}.
        These are the same bits generation reports for the same tokens.
        """
        if not 1 <= start <= len(tokens):
            raise InvalidParameterError(f"start must be in [1, {len(tokens)}]", "start")
        out = []

        def visit(i, logits):
            if i + 1 < len(tokens):
                lp = sampler.log_softmax(logits)
                nxt = tokens[i + 1]
                out.append({"token": nxt, "logprob": float(lp[nxt]),
                            "top_logprobs": sampler.top_logprobs(lp, top_logprobs)})

        self.forward_rows(tokens, start - 1, visit)
        return out

    # -- internals ----------------------------------------------------------
    def _propose_drafts(self) -> None:
        decoding = [s for s in self.scheduler.running if s.num_pending == 1 and s.output_ids]
        if not self.speculative_tokens or not decoding or len(decoding) > self.speculative_max_batch:
            return
        for seq in decoding:
            room = min(self.speculative_tokens, seq.params.max_tokens - len(seq.output_ids) - 1,
                       self.config.context_length - len(seq) - 1)
            seq.draft = speculative.propose(seq.tokens, room) if room > 0 else []

    def _step_input(self, chunks: list[ScheduledChunk]) -> tuple[StepInput, list[tuple[int, int]]]:
        """The flat batch of a step, and for each chunk the range of its logits rows."""
        tokens, positions, rows, logits_rows, ranges = [], [], [], [], []
        width = max(len(c.seq.block_table) for c in chunks)
        tables = np.zeros((len(chunks), width), np.int32)
        for i, c in enumerate(chunks):
            toks = c.seq.tokens + c.seq.draft
            first = len(tokens)
            tokens.extend(toks[c.start:c.start + c.length])
            positions.extend(range(c.start, c.start + c.length))
            rows.extend([i] * c.length)
            tables[i, :len(c.seq.block_table)] = c.seq.block_table
            lo = len(logits_rows)
            if c.completes:  # the last real token and any draft tokens after it
                logits_rows.extend(range(first + len(c.seq) - 1 - c.start, first + c.length))
            ranges.append((lo, len(logits_rows)))
        step = StepInput(np.array(tokens, np.int64), np.array(positions, np.int64), np.array(rows, np.int32),
                         tables, np.array(logits_rows, np.int64))
        return step, ranges

    def transcript(self, result: GenerationResult) -> dict:
        """The replayable record of a generation (see engine/transcript.py)."""
        from ponder.engine import transcript

        return transcript.make_transcript(self, result)

    def verify(self, transcript: dict):
        """Replay a transcript; the report says "verified" or names the first divergent token."""
        from ponder.engine import transcript as t

        return t.verify(self, transcript)

    def _fork_if_first_draw(self, seq: Sequence) -> list[Sequence]:
        """At the end of prefill, the other n-1 samples of the request fork from the first."""
        req = self._requests[seq.request_id]
        if seq.output_ids or seq.sample_index != 0 or len(req.samples) == req.params.n:
            return [seq]
        for i in range(1, req.params.n):
            child = Sequence(req.id, i, list(seq.prompt_ids), seq.params,
                             block_table=[self.kv.share(b) for b in seq.block_table], num_computed=seq.num_computed)
            req.samples.append(child)
            self.scheduler.add_running(child)
        return req.samples

    def _draw(self, seq: Sequence, rows: np.ndarray, draft: list[int]) -> list[TokenEvent]:
        """Draw the next token from rows[0]; while it equals the draft token fed after it, keep drawing."""
        events = []
        for i, logits in enumerate(rows[:len(draft) + 1]):
            p = seq.params
            token = sampler.sample_token(logits, p, seq.rng_index, len(seq))
            logprobs = sampler.log_softmax(logits)
            seq.output_ids.append(token)
            seq.logprobs.append(float(logprobs[token]))
            if p.logprobs:
                seq.top_logprobs.append(sampler.top_logprobs(logprobs, p.logprobs))
            reason = self._finish_reason(seq, token)
            events.append(TokenEvent(seq.request_id, seq.sample_index, token, seq.logprobs[-1], reason,
                                     seq.top_logprobs[-1] if p.logprobs else None))
            if reason:
                seq.finish_reason = reason
                self.scheduler.finish(seq)
                break
            if i < len(draft) and token == draft[i]:
                seq.num_computed += 1  # the draft token was fed at this position: its K/V are valid
                continue
            break
        if draft:
            cost = self._requests[seq.request_id].cost
            cost.spec_proposed += len(draft)
            cost.spec_accepted += len(events) - 1
        return events

    def _finish_reason(self, seq: Sequence, token: int) -> str | None:
        p = seq.params
        if not p.ignore_eos and token in self.tokenizer.eos_ids or token in p.stop_token_ids:
            return "stop"
        if p.stop:
            text = self.tokenizer.decode(seq.output_ids)
            cuts = [text.find(s) for s in p.stop if s in text]
            if cuts:
                seq.stop_text_end = min(cuts)
                return "stop"
        if len(seq.output_ids) >= p.max_tokens or len(seq) >= self.config.context_length:
            return "length"
        return None

    def _result(self, req: _Request) -> GenerationResult:
        outs = []
        for s in sorted(req.samples, key=lambda s: s.sample_index):
            shown = s.output_ids
            if s.finish_reason == "stop" and shown and (shown[-1] in self.tokenizer.eos_ids or shown[-1] in s.params.stop_token_ids):
                shown = shown[:-1]  # the stop token itself is not part of the text
            text = self.tokenizer.decode(shown)
            if s.stop_text_end is not None:
                text = text[:s.stop_text_end]
            outs.append(SampleOutput(s.sample_index, list(s.output_ids), text, s.logprobs, s.finish_reason,
                                     s.top_logprobs))
        cached = req.samples[0].num_cached
        usage = {
            "prompt_tokens": len(req.prompt_ids),
            "completion_tokens": sum(len(s.output_ids) for s in req.samples),
            "cached_tokens": cached,  # prompt tokens served by the prefix cache
            "forked_tokens": (len(req.samples) - 1) * len(req.prompt_ids),  # prompt work the n-1 forks skipped
            "computed_tokens": req.cost.computed_tokens,
            "speculative_proposed": req.cost.spec_proposed,
            "speculative_accepted": req.cost.spec_accepted,
            "flops": req.cost.flops,
            "bytes": req.cost.bytes,
        }
        return GenerationResult(req.prompt, req.prompt_ids, outs, req.params.seed, req.params, usage)


def _is_prompt_list(prompts) -> bool:
    """A list of prompts, as opposed to one prompt that is itself a list (token ids or messages)."""
    return isinstance(prompts, list) and bool(prompts) and all(isinstance(p, (str, list)) for p in prompts)
