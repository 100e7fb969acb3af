"""The scheduler: which tokens of which sequences run in the next forward step.

Continuous batching with chunked prefill (SARATHI): every step first gives each
running sequence its one decode token, then fills what is left of the token
budget with prefill chunks of waiting sequences.  A waiting sequence first takes
every cached block of its prefix from the radix cache, then is admitted only if
the KV pool has room for its chunk.  When a decode cannot get a block, the
youngest running sequence is preempted: its computed blocks go to the prefix
cache and its references are dropped, and it is resumed later from whatever of
it the cache still holds.  A full pool delays requests but never drops them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ponder.engine.kv_cache import KVCache
from ponder.engine.radix_cache import RadixCache
from ponder.engine.sequence import Sequence, Status


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
    def __init__(self, kv: KVCache, token_budget: int = 512, max_running: int = 256, prefix_cache: bool = True):
        self.kv = kv
        self.radix = RadixCache(kv) if prefix_cache else None
        self.token_budget = token_budget
        self.max_running = max_running
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def add_running(self, seq: Sequence) -> None:
        """A fork that already holds its blocks joins the running set directly."""
        seq.status = Status.RUNNING
        self.running.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[ScheduledChunk]:
        chunks: list[ScheduledChunk] = []
        budget = self.token_budget
        for seq in list(self.running):
            if budget == 0:
                break
            if seq not in self.running:  # preempted while making room for an earlier one
                continue
            n = min(seq.num_pending + len(seq.draft), budget)
            while not self.reserve(seq, n):
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
            if not self.reserve(seq, n):
                break
            self.waiting.popleft()
            seq.status = Status.RUNNING
            self.running.append(seq)
            chunks.append(ScheduledChunk(seq, seq.num_computed, n))
            budget -= n
        return chunks

    def finish(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.cache_computed(seq, final=True)
        self.free_blocks(seq)
        seq.status = Status.FINISHED

    def cache_computed(self, seq: Sequence, final: bool = False) -> None:
        """Offer the sequence's computed blocks to the prefix cache (the partial tail only when final)."""
        if self.radix is not None and seq.block_table:
            self.radix.insert(seq.tokens, seq.block_table, seq.num_computed, partial=final)

    def _take_cached_prefix(self, seq: Sequence) -> None:
        """A sequence with nothing computed starts from the cached blocks of its prefix.

        At least one token is left to compute: its logits give the next draw.
        """
        if self.radix is None or seq.num_computed or seq.block_table:
            return
        blocks, n = self.radix.match(seq.tokens, limit=len(seq) - 1)
        seq.block_table = [self.kv.share(b) for b in blocks]
        seq.num_computed = n
        seq.num_cached += n

    def reserve(self, seq: Sequence, n: int) -> bool:
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
        self.free_blocks(seq)
        seq.num_computed = 0
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def free_blocks(self, seq: Sequence) -> None:
        for block in seq.block_table:
            self.kv.release(block)
        seq.block_table = []
