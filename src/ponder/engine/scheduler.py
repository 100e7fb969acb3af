"""The scheduler: which tokens of which sequences run in each step, and what a step's logits change.

It owns the queues and every sequence's progress: it is the only writer of a
Sequence after construction (tokens drawn or forced, blocks, num_computed,
status, drafts).

Scheduling is continuous batching with chunked prefill (SARATHI): every step
first gives each running sequence its pending tokens (one decode token, plus a
speculative draft tree, or the rest of a chunked prefill, or tokens forced in from
outside), then fills what is left of the token budget with prefill chunks of
waiting sequences.  A waiting sequence first takes every cached block of its
prefix from the radix cache, then is admitted only if the KV pool has room for
its chunk.  When a running sequence cannot get a block, the youngest running
sequence is preempted: its computed blocks go to the prefix cache and its
references are dropped, and it resumes later from whatever of it the cache
still holds.  A full pool delays requests but never drops them.

After the model ran, `postprocess` records what was computed, draws the next
token of every sequence whose pending tokens are all computed (walking down its
draft tree while the drawn token is one of the node's children), applies the finish rules, forks the other samples of a
request at its first draw, pauses a sample whose new text ends a tool trigger
(status TOOL: it keeps its blocks and leaves the batch until `resume` appends the
tool's result as forced tokens; engine/tool_calls.py has the rule), and hands
scoring rows to their visitor.  A failure
while post-processing one sequence finishes that sequence with reason "error";
the other sequences of the step are unaffected.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np

from ponder.engine import sampler
from ponder.engine.draft_tree import DraftTree
from ponder.engine.finish import FinishRules, round_stop
from ponder.engine.kv_cache import KVCache
from ponder.engine.radix_cache import RadixCache
from ponder.engine.results import TokenEvent
from ponder.engine.sequence import Sequence, Status
from ponder.engine.speculative import make_proposer
from ponder.engine.tool_calls import call_record, fit_splice, pause_at

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
                 prefix_cache: bool = True, speculative: str = "off", speculative_tokens: int = 8,
                 speculative_max_batch: int = 4, speculative_shared: bool = False,
                 speculative_prior=None):
        self.kv = kv
        self.rules = rules
        self.radix = RadixCache(kv) if prefix_cache else None
        self.token_budget = token_budget
        self.max_running = max_running
        # Drafts cost compute per token; they can pay off only while decode is bound by
        # memory bandwidth, i.e. when few sequences decode together (see BENCHMARKS.md).
        self.speculative = speculative  # "off", "lookup" or "recycling" (engine/speculative.py)
        self.speculative_tokens = speculative_tokens  # at most this many draft nodes per step
        self.speculative_prior = speculative_prior  # Token Recycling's starting table, or None (cold)
        # opt-in: one proposer for every request, so drafts (speed, never tokens) depend on history
        self._shared_proposer = (make_proposer(speculative, speculative_prior)
                                 if speculative_shared and speculative != "off" else None)
        self.speculative_max_batch = speculative_max_batch
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.paused: list[Sequence] = []  # waiting for a tool (status TOOL)
        self.new_pauses: list[Sequence] = []  # paused since the engine last took them (take_pauses)
        self.num_preemptions = 0
        self._drafting = False  # this step's drafting decision (few sequences decode)

    # -- adding work ---------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        """A new sequence; its siblings (samples 1..n-1) wait parked until it forks them."""
        self.waiting.append(seq)
        if self.speculative != "off" and not seq.scoring:
            # one proposer per request, shared by its samples: nothing crosses requests
            seq.proposer = self._shared_proposer or make_proposer(self.speculative, self.speculative_prior)
        for s in seq.siblings:
            s.status = Status.PARKED
            s.proposer = seq.proposer

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
        self._drop_draft(seq)

    def resume(self, seq: Sequence, forced_ids: list[int], forced_text: str, result=None) -> list[TokenEvent]:
        """Splice a paused sample's forced tokens (the rest of its trigger and the tool's output) and
        put it back in the batch; returns their events (marked as tool tokens).

        A sample aborted while its tool ran stays finished.  With the budget of model tokens used up,
        or the context full, the sample ends ("length") after the splice.
        """
        st = seq.tools
        if seq.finished or st is None or st.pause is None:
            return []
        forced_ids, forced_text = fit_splice(self.rules.decode, forced_ids, forced_text,
                                             self.rules.context_length - len(seq))
        at = len(seq.output_ids)
        st.text += st.pause.kept_text + forced_text
        if result is not None:
            st.calls.append(call_record(result, at, len(forced_ids)))
        self.append_forced(seq, forced_ids)
        st.spans += [(at, len(seq.output_ids))] if forced_ids else []
        st.round_start = len(seq.output_ids)
        st.pause = None
        self.paused.remove(seq)
        end = None
        if len(seq.output_ids) - st.forced >= seq.params.max_tokens or len(seq) >= self.rules.context_length:
            end = "length"
        events = [TokenEvent(seq.request_id, seq.sample_index, t, 0.0, None, [] if seq.params.logprobs else None,
                             tool=True) for t in forced_ids]
        if end:
            if events:
                events[-1].finish_reason = end
            self.finish(seq, end)
        else:
            seq.status = Status.RUNNING
            self.running.append(seq)
        return events

    def take_pauses(self) -> list[Sequence]:
        """The samples paused at a trigger since the last call (the engine starts their tools)."""
        out, self.new_pauses = self.new_pauses, []
        return [s for s in out if s.status is Status.TOOL]

    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.paused)

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
            if seq.draft is not None and seq.num_pending + len(seq.draft) > budget:
                seq.draft = seq.draft.prefix(max(0, budget - seq.num_pending)) or None
            main = seq.draft.main_depth() if seq.draft is not None else 0
            while not self._reserve(seq, min(seq.num_pending + main, budget)):
                victim = self.running[-1]
                self._preempt(victim)
                if victim is seq:
                    break
            else:
                self._reserve_branches(seq)
                n = min(seq.num_pending + (len(seq.draft) if seq.draft is not None else 0), budget)
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
            tree = seq.draft
            if seq.proposer is not None and self._drafting:
                # the rows of the last real token and of every drafted node (tokens never depend on this)
                seq.proposer.observe([seq.tokens[-1]] + (tree.tokens if tree is not None else []), rows)
            for s in self._fork_siblings(seq):
                events.extend(self._draw(s, rows, tree if s is seq else None))
        self._drop_draft(seq)

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

    def _draw(self, seq: Sequence, rows: np.ndarray, tree: DraftTree | None) -> list[TokenEvent]:
        """Draw the next token from rows[0] (the root's); while the drawn token is a child of the
        current node in the draft tree, move to that child and draw again from its row."""
        events = []
        p = seq.params
        node, logits = -1, rows[0]
        while True:
            token = sampler.sample_token(logits, p, seq.rng_index, len(seq))
            seq.output_ids.append(token)
            if p.logprobs:
                logprobs = sampler.log_softmax(logits)
                seq.logprobs.append(float(logprobs[token]))
                seq.top_logprobs.append(sampler.top_logprobs(logprobs, p.logprobs))
            else:
                seq.logprobs.append(sampler.token_logprob(logits, token))
            st = seq.tools
            reason = (self.rules.reason(seq.output_ids, len(seq), p) if st is None else
                      self.rules.reason(seq.output_ids, len(seq), p, st.round_start, st.forced, st.tools))
            if reason == "tool":  # its event, if the token stays, comes from _pause
                break
            events.append(TokenEvent(seq.request_id, seq.sample_index, token, seq.logprobs[-1], reason,
                                     seq.top_logprobs[-1] if p.logprobs else None))
            if reason:
                break
            child = tree.child_with_token(node, token) if tree is not None else None
            if child is None:
                break
            node, logits = child, rows[1 + child]
            seq.num_computed += 1  # the node was fed at this position: its K/V are valid in its branch
        if tree is not None and len(tree):
            seq.spec_proposed += len(tree)
            seq.spec_accepted += len(events) - (reason != "tool")  # a trigger token was drawn, its event is _pause's
            if node >= 0 and tree.branch_of[node] > 0:  # before finishing: the prefix cache takes these blocks
                self._adopt_branch(seq, tree, tree.branch_of[node])
        if reason == "tool":
            events.extend(self._pause(seq))
        elif reason:
            self.finish(seq, reason)
        return events

    def _pause(self, seq: Sequence) -> list[TokenEvent]:
        """The sample's round ends at a tool trigger: drop what ran past it, leave the batch, keep the blocks."""
        st = seq.tools
        rs = st.round_start
        _, trigger = round_stop(self.rules.decode(seq.output_ids[rs:]), seq.params.stop, st.tools)
        pause = pause_at(self.rules.decode, seq.output_ids[rs:], trigger)
        events = []
        if rs + pause.kept == len(seq.output_ids):  # the trigger's last token stays: it is streamed
            events.append(TokenEvent(seq.request_id, seq.sample_index, seq.output_ids[-1], seq.logprobs[-1], None,
                                     seq.top_logprobs[-1] if seq.params.logprobs else None))
        end = rs + pause.kept
        st.dropped += len(seq.output_ids) - end
        del seq.output_ids[end:], seq.logprobs[end:]
        if seq.params.logprobs:
            del seq.top_logprobs[end:]
        seq.num_computed = min(seq.num_computed, len(seq))
        st.pause = pause
        seq.status = Status.TOOL
        self.running.remove(seq)
        self.paused.append(seq)
        self.new_pauses.append(seq)
        return events

    def _propose_drafts(self) -> None:
        self._drafting = False
        if self.speculative == "off" or self.speculative_tokens <= 0:
            return
        decoding = [s for s in self.running if s.num_pending == 1 and s.output_ids and not s.scoring]
        if not decoding or len(decoding) > self.speculative_max_batch:
            return
        self._drafting = True
        for seq in decoding:
            room = min(self.speculative_tokens, seq.params.max_tokens - len(seq.output_ids) - 1,
                       self.rules.context_length - len(seq) - 1)
            if seq.proposer is not None and room > 0:
                seq.draft = seq.proposer.propose(seq.tokens, self.speculative_tokens, room) or None

    # -- draft tree blocks -----------------------------------------------------------------
    def _reserve_branches(self, seq: Sequence) -> None:
        """Give every branch of seq's draft tree but the first its private tail blocks, whose
        lanes before the root's position copy the sequence's partial block (draft_tree.py).
        If the pool cannot spare them, the draft shrinks to its first branch."""
        tree = seq.draft
        if tree is None or tree.num_branches == 1:
            return
        bs = self.kv.block_size
        p0 = len(seq) - 1
        first = p0 // bs
        sizes = [(p0 + tree.branch_depth(b)) // bs - first + 1 for b in range(1, tree.num_branches)]
        if sum(sizes) > self.kv.num_available:
            seq.draft = tree.main_chain()
            return
        tails = [[self.kv.allocate() for _ in range(n)] for n in sizes]
        tree.shared_blocks = first
        self.kv.copy_lanes(seq.block_table[first], [t[0] for t in tails], p0 % bs)
        for b, tail in enumerate(tails, start=1):
            tree.branch_tables[b] = seq.block_table[:first] + tail

    def _adopt_branch(self, seq: Sequence, tree: DraftTree, b: int) -> None:
        """The accepted path ends in branch b: its tail becomes the sequence's tail (no copy back)."""
        table = tree.branch_tables.pop(b)
        for block in seq.block_table[tree.shared_blocks:]:
            self.kv.release(block)
        seq.block_table = list(table)

    def _drop_draft(self, seq: Sequence) -> None:
        """Forget seq's draft tree, releasing the private tails nobody adopted."""
        tree, seq.draft = seq.draft, None
        if tree is None:
            return
        for b, table in tree.branch_tables.items():
            for block in table[tree.shared_blocks:]:
                self.kv.release(block)
        tree.branch_tables.clear()

    # -- ending --------------------------------------------------------------------------
    def finish(self, seq: Sequence, reason: str, error: BaseException | None = None) -> None:
        """End a sequence (any state): its blocks go to the prefix cache and its references are dropped."""
        if seq.finished:
            return
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        elif seq in self.paused:
            self.paused.remove(seq)
        self.cache_computed(seq, final=True)
        self._free_blocks(seq)
        seq.finish_reason = reason
        seq.error = error
        self._drop_draft(seq)
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
        self._drop_draft(seq)
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
                "preemptions": self.num_preemptions, "tool_sequences": len(self.paused),
                "prefix_cache_nodes": self.radix.num_nodes if self.radix is not None else 0}
