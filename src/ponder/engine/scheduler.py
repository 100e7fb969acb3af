"""The scheduler: which tokens of which sequences run in each step, and what a step's logits change.

It owns the queues and every sequence's progress: it is the only writer of a
Sequence after construction (tokens drawn or forced, blocks, num_computed,
status, drafts).

Scheduling is continuous batching with chunked prefill (SARATHI): every step
first gives each running sequence its pending tokens (one decode token, plus a
speculative draft, or the rest of a chunked prefill, or tokens forced in from
outside), then fills what is left of the token budget with prefill chunks of
waiting sequences.  A waiting sequence first takes every cached block of its
prefix from the radix cache, then is admitted only if the KV pool has room for
its chunk.  When a running sequence cannot get a block, the youngest running
sequence is preempted: its computed blocks go to the prefix cache and its
references are dropped, and it resumes later from whatever of it the cache
still holds.  A full pool delays requests but never drops them.

After the model ran, `postprocess` records what was computed, draws the next
token of every sequence whose pending tokens are all computed (accepting drafts
while they match), applies the finish rules, forks the other samples of a
request at its first draw, and hands scoring rows to their visitor.  A failure
while post-processing one sequence finishes that sequence with reason "error";
the other sequences of the step are unaffected.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np

from ponder.engine import sampler, speculative
from ponder.engine.finish import FinishRules
from ponder.engine.kv_cache import KVCache
from ponder.engine.radix_cache import RadixCache
from ponder.engine.results import TokenEvent
from ponder.engine.sequence import Sequence, Status

log = logging.getLogger("ponder.engine")


@dataclass
class ScheduledChunk:
    seq: Sequence
    start: int  # first position computed in this step
    length: int

    @property
    def completes(self) -> bool:
        """After this chunk the sequence's next token can be drawn (drafts may follow the last real token)."""
        return self.start + self.length >= len(self.seq)


class Scheduler:
    def __init__(self, kv: KVCache, rules: FinishRules, token_budget: int = 512, max_running: int = 256,
                 prefix_cache: bool = True, speculative_tokens: int = 0, speculative_max_batch: int = 4):
        self.kv = kv
        self.rules = rules
        self.radix = RadixCache(kv) if prefix_cache else None
        self.token_budget = token_budget
        self.max_running = max_running
        # Drafts cost compute per token; they can pay off only while decode is bound by
        # memory bandwidth, i.e. when few sequences decode together (see BENCHMARKS.md).
        self.speculative_tokens = speculative_tokens
        self.speculative_max_batch = speculative_max_batch
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    # -- adding work ---------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        """A new sequence; its siblings (samples 1..n-1) wait parked until it forks them."""
        self.waiting.append(seq)
        for s in seq.siblings:
            s.status = Status.PARKED

    def add_continuation(self, seq: Sequence, src: Sequence) -> None:
        """A new sequence whose prompt is src's tokens so far: it shares src's blocks (copy-on-write)."""
        if src.block_table:
            seq.block_table = [self.kv.share(b) for b in src.block_table]
            seq.num_computed = min(src.num_computed, len(seq) - 1)  # the last token's logits are needed
            seq.num_cached = seq.num_computed
        self.add(seq)

    def append_forced(self, seq: Sequence, token_ids: list[int]) -> None:
        """Append tokens chosen outside the model (e.g. a tool's result) to a sequence that is not finished.

        They are computed in the next steps like a prefill chunk, then the next token is drawn
        after them.  They carry logprob 0.0 and are counted in `num_forced`.
        """
        seq.output_ids.extend(token_ids)
        seq.logprobs.extend([0.0] * len(token_ids))
        if seq.params.logprobs:
            seq.top_logprobs.extend([] for _ in token_ids)
        seq.num_forced += len(token_ids)
        seq.draft = []

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # -- one step ----------------------------------------------------------------------
    def schedule(self) -> list[ScheduledChunk]:
        self._propose_drafts()
        chunks: list[ScheduledChunk] = []
        budget = self.token_budget
        for seq in list(self.running):
            if budget == 0:
                break
            if seq not in self.running:  # preempted while making room for an earlier one
                continue
            n = min(seq.num_pending + len(seq.draft), budget)
            while not self._reserve(seq, n):
                victim = self.running[-1]
                self._preempt(victim)
                if victim is seq:
                    break
            else:
                chunks.append(ScheduledChunk(seq, seq.num_computed, n))
                budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.max_running:
            seq = self.waiting[0]
            self._take_cached_prefix(seq)
            n = min(seq.num_pending, budget)
            if not self._reserve(seq, n):
                break
            self.waiting.popleft()
            seq.status = Status.RUNNING
            self.running.append(seq)
            chunks.append(ScheduledChunk(seq, seq.num_computed, n))
            budget -= n
        return chunks

    def postprocess(self, chunks: list[ScheduledChunk], logits: np.ndarray,
                    ranges: list[tuple[int, int]]) -> tuple[list[TokenEvent], list[Sequence]]:
        """Record a step's results; returns its token events and the sequences that failed."""
        events: list[TokenEvent] = []
        failed: list[Sequence] = []
        for chunk, (lo, hi) in zip(chunks, ranges):
            seq = chunk.seq
            if seq.finished:  # a sibling's failure already ended it
                continue
            try:
                self._advance(seq, chunk, logits[lo:hi], events)
            except Exception as e:  # noqa: BLE001 - one sequence's failure must not fail the others
                log.exception("request %d sample %d failed", seq.request_id, seq.sample_index)
                for s in [seq] + [s for s in seq.siblings if s.status is Status.PARKED]:
                    self.finish(s, "error", e)
                    failed.append(s)
                events = [ev for ev in events if ev.request_id != seq.request_id]  # the request fails
        return events, failed

    def _advance(self, seq: Sequence, chunk: ScheduledChunk, rows: np.ndarray, events: list[TokenEvent]) -> None:
        seq.num_computed = min(chunk.start + chunk.length, len(seq))
        if chunk.completes and chunk.start < len(seq.prompt_ids):
            self.cache_computed(seq)  # the prompt is shareable from now on
        if seq.scoring:
            first = max(chunk.start, seq.score_next)
            for k, row in enumerate(rows):
                seq.visit(first + k, row)
            seq.score_next = max(seq.score_next, chunk.start + chunk.length)
            if seq.num_computed == len(seq):
                self.finish(seq, "length")
            return
        if chunk.completes:
            draft = seq.draft[:chunk.start + chunk.length - len(seq)]
            for s in self._fork_siblings(seq):
                events.extend(self._draw(s, rows, draft if s is seq else []))
        seq.draft = []

    def _fork_siblings(self, seq: Sequence) -> list[Sequence]:
        """At the end of sample 0's prefill, the request's other samples fork from it, sharing its blocks."""
        if seq.output_ids or not seq.siblings:
            return [seq]
        out = [seq]
        for child in seq.siblings:
            if child.status is Status.PARKED:
                child.block_table = [self.kv.share(b) for b in seq.block_table]
                child.num_computed = seq.num_computed
                child.status = Status.RUNNING
                self.running.append(child)
                out.append(child)
        return out

    def _draw(self, seq: Sequence, rows: np.ndarray, draft: list[int]) -> list[TokenEvent]:
        """Draw the next token from rows[0]; while it equals the draft token fed after it, keep drawing."""
        events = []
        p = seq.params
        for i, logits in enumerate(rows[:len(draft) + 1]):
            token = sampler.sample_token(logits, p, seq.rng_index, len(seq))
            logprobs = sampler.log_softmax(logits)
            seq.output_ids.append(token)
            seq.logprobs.append(float(logprobs[token]))
            if p.logprobs:
                seq.top_logprobs.append(sampler.top_logprobs(logprobs, p.logprobs))
            reason = self.rules.reason(seq.output_ids, len(seq), p)
            events.append(TokenEvent(seq.request_id, seq.sample_index, token, seq.logprobs[-1], reason,
                                     seq.top_logprobs[-1] if p.logprobs else None))
            if reason:
                self.finish(seq, reason)
                break
            if i < len(draft) and token == draft[i]:
                seq.num_computed += 1  # the draft token was fed at this position: its K/V are valid
                continue
            break
        if draft:
            seq.spec_proposed += len(draft)
            seq.spec_accepted += len(events) - 1
        return events

    def _propose_drafts(self) -> None:
        if not self.speculative_tokens:
            return
        decoding = [s for s in self.running if s.num_pending == 1 and s.output_ids and not s.scoring]
        if not decoding or len(decoding) > self.speculative_max_batch:
            return
        for seq in decoding:
            room = min(self.speculative_tokens, seq.params.max_tokens - len(seq.output_ids) - 1,
                       self.rules.context_length - len(seq) - 1)
            seq.draft = speculative.propose(seq.tokens, room) if room > 0 else []

    # -- ending --------------------------------------------------------------------------
    def finish(self, seq: Sequence, reason: str, error: BaseException | None = None) -> None:
        """End a sequence (any state): its blocks go to the prefix cache and its references are dropped."""
        if seq.finished:
            return
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.cache_computed(seq, final=True)
        self._free_blocks(seq)
        seq.finish_reason = reason
        seq.error = error
        seq.draft = []
        seq.status = Status.FINISHED

    # -- blocks ------------------------------------------------------------------------------
    def cache_computed(self, seq: Sequence, final: bool = False) -> None:
        """Offer the sequence's computed blocks to the prefix cache (the partial tail only when final)."""
        if self.radix is not None and seq.block_table:
            self.radix.insert(seq.tokens, seq.block_table, seq.num_computed, partial=final)

    def _take_cached_prefix(self, seq: Sequence) -> None:
        """A sequence with nothing computed starts from the cached blocks of its prefix.

        At least one token is left to compute: its logits give the next draw (or the next score).
        """
        if self.radix is None or seq.num_computed or seq.block_table:
            return
        blocks, n = self.radix.match(seq.tokens, limit=seq.reuse_limit)
        seq.block_table = [self.kv.share(b) for b in blocks]
        seq.num_computed = n
        seq.num_cached += n

    def _reserve(self, seq: Sequence, n: int) -> bool:
        """Make sure seq's blocks cover positions [num_computed, num_computed + n) and are writable."""
        end = seq.num_computed + n
        need = self.kv.blocks_for(end) - len(seq.block_table)
        first = seq.num_computed // self.kv.block_size
        cow = 1 if first < len(seq.block_table) and self.kv.ref_count[seq.block_table[first]] > 1 else 0
        if need + cow > self.kv.num_available:
            return False
        if cow:
            self.kv.make_writable(seq.block_table, first)
        for _ in range(need):
            seq.block_table.append(self.kv.allocate())
        return True

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.cache_computed(seq, final=True)
        self._free_blocks(seq)
        seq.num_computed = 0
        seq.draft = []
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def _free_blocks(self, seq: Sequence) -> None:
        for block in seq.block_table:
            self.kv.release(block)
        seq.block_table = []

    def stats(self) -> dict:
        return {"waiting_sequences": len(self.waiting), "running_sequences": len(self.running),
                "waiting_requests": len({s.request_id for s in self.waiting}),
                "running_requests": len({s.request_id for s in self.running}),
                "preemptions": self.num_preemptions,
                "prefix_cache_nodes": self.radix.num_nodes if self.radix is not None else 0}
