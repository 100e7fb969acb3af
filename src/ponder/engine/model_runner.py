"""ModelRunner: turns a step's scheduled chunks into one `StepInput` and runs the model on it.

It owns the runnable model (FastModel) and the engine's thread count, which it
applies around its own calls only: numba's thread count and the native runtime's
(kernels/native) are per calling thread, so an engine never changes the thread
count of the rest of the process.  When the model runs on the native runtime, the
engine's threads are its pool's; any Numba kernel that remains beside it runs on one
thread; and Numba is imported only if one does (model/kernel_set.py).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ponder.engine.scheduler import ScheduledChunk
from ponder.kernels import native
from ponder.model.fast_model import FastModel, StepInput


def kernel_isa() -> str:
    """The instruction set the kernels run on in this process (chosen once; PONDER_ISA forces one)."""
    from ponder.kernels import isa

    return isa.current()


class ModelRunner:
    def __init__(self, weights, activation_bits: int, threads: int | None):
        self.model = FastModel(weights, activation_bits, native=native.active)
        self.bits = activation_bits
        self.threads = threads  # None: the default of the calling thread (native.threads(), numba's)
        # Every product on the native runtime's pool (kernels/native): then any Numba kernel that
        # remains in a step runs on the calling thread alone.  Two pools in turn on the same cores
        # slow each other down: libgomp's idle threads spin for milliseconds after each Numba
        # region, through the products that follow (measured: decode 34 -> 60 tok/s, prefill
        # 179 -> 340 tok/s at 2 threads on a loaded machine; BENCHMARKS.md, native runtime).
        self.native = self.model.native

    @property
    def num_threads(self) -> int:
        if self.threads:
            return self.threads
        if self.native:
            return native.threads()
        import numba

        return numba.get_num_threads()

    def runtime(self, block_size: int) -> str:
        """What runs the kernels: "native", "numba", or "native+numba" (some Numba kernels beside the pool)."""
        if not self.native:
            return "numba"
        return "native+numba" if self._numba_threads(block_size) else "native"

    def _numba_threads(self, block_size: int) -> int | None:
        """Numba's thread count for a step (None: leave it), or 0 if no Numba kernel runs."""
        if not self.native:
            return self.threads
        # 8-bit activations are quantized by Numba's kernels (act_quant_numba), once per input
        return 1 if self.model.kernels(block_size).numba or self.bits == 8 else 0

    @contextmanager
    def _threads(self, block_size: int):
        numba_threads = self._numba_threads(block_size)
        native_before = native.set_threads(self.threads) if self.native and self.threads else None
        numba = before = None
        if numba_threads:  # imported only when a Numba kernel runs in this step
            import numba

            before = numba.get_num_threads()
            numba.set_num_threads(numba_threads)
        try:
            yield
        finally:
            if numba is not None:
                numba.set_num_threads(before)
            if self.native and self.threads:
                native.set_threads(native_before)

    def run(self, chunks: list[ScheduledChunk], k_pool, v_pool) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Logits of the rows the chunks need, and for each chunk the range of its rows."""
        step, ranges = self.build(chunks)
        with self._threads(v_pool.shape[3]):
            logits = self.model.forward(step, k_pool, v_pool)
        return logits, ranges

    @staticmethod
    def build(chunks: list[ScheduledChunk]) -> tuple[StepInput, list[tuple[int, int]]]:
        """The flat batch of a step, and for each chunk the range of its logits rows.

        A chunk that completes its sequence is followed by the sequence's draft tree, if any: its
        nodes are tokens at their depth's position, each reading through its branch's block table,
        and each root-to-branch ancestor's K/V is also written into that branch's tail
        (engine/draft_tree.py).
        """
        tokens, positions, rows, logits_rows, ranges, tables = [], [], [], [], [], []
        extra_slots: list[tuple[int, int, int]] = []  # (token index, position, table row)
        for c in chunks:
            seq = c.seq
            first = len(tokens)
            real_end = min(c.start + c.length, len(seq))
            row = len(tables)
            tables.append(seq.block_table)
            tokens.extend(seq.tokens[c.start:real_end])
            positions.extend(range(c.start, real_end))
            rows.extend([row] * (real_end - c.start))
            tree = seq.draft if c.completes else None
            if tree is not None and len(tree):
                p0 = len(seq) - 1
                index = {-1: first + p0 - c.start}  # node -> token index in the step (root: the last real token)
                branch_row = {0: row}
                for b in range(1, tree.num_branches):
                    branch_row[b] = len(tables)
                    tables.append(tree.branch_tables[b])
                for j, tok in enumerate(tree.tokens):
                    index[j] = len(tokens)
                    tokens.append(tok)
                    positions.append(p0 + tree.depth[j])
                    rows.append(branch_row[tree.branch_of[j]])
                for b in range(1, tree.num_branches):
                    for a in tree.ancestors(tree.branch_start[b]):
                        extra_slots.append((index[a], p0 + (tree.depth[a] if a >= 0 else 0), branch_row[b]))
            lo = len(logits_rows)
            if seq.scoring:  # every position from the next one to visit
                logits_rows.extend(first + p - c.start for p in range(max(c.start, seq.score_next), real_end))
            elif c.completes:  # the last real token and any draft tokens after it
                logits_rows.extend(range(first + len(seq) - 1 - c.start, len(tokens)))
            ranges.append((lo, len(logits_rows)))
        width = max(len(t) for t in tables)
        table_array = np.zeros((len(tables), width), np.int32)
        for i, t in enumerate(tables):
            table_array[i, :len(t)] = t
        positions_arr, rows_arr = np.array(positions, np.int64), np.array(rows, np.int32)
        slots = None
        if extra_slots:
            extra = np.array(extra_slots, np.int64)
            slots = (np.concatenate([np.arange(len(tokens)), extra[:, 0]]),
                     np.concatenate([positions_arr, extra[:, 1]]),
                     np.concatenate([rows_arr, extra[:, 2].astype(np.int32)]))
        step = StepInput(np.array(tokens, np.int64), positions_arr, rows_arr, table_array,
                         np.array(logits_rows, np.int64), kv_slots=slots)
        return step, ranges
