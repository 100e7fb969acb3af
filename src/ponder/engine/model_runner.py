"""ModelRunner: turns a step's scheduled chunks into one `StepInput` and runs the model on it.

It owns the runnable model (FastModel) and the engine's thread count, which it
applies around its own calls only: numba's thread count is per calling thread,
so an engine never changes the thread count of the rest of the process.
"""

from __future__ import annotations

from contextlib import contextmanager

import numba
import numpy as np

from ponder.engine.scheduler import ScheduledChunk
from ponder.model.fast_model import FastModel, StepInput


def kernel_isa() -> str:
    """The instruction set the kernels run on in this process (chosen once; PONDER_ISA forces one)."""
    from ponder.kernels import isa

    return isa.current()


class ModelRunner:
    def __init__(self, weights, activation_bits: int, threads: int | None):
        self.model = FastModel(weights, activation_bits)
        self.bits = activation_bits
        self.threads = threads  # None: numba's default for the calling thread

    @property
    def num_threads(self) -> int:
        return self.threads or numba.get_num_threads()

    @contextmanager
    def _threads(self):
        if self.threads is None:
            yield
            return
        before = numba.get_num_threads()
        numba.set_num_threads(self.threads)
        try:
            yield
        finally:
            numba.set_num_threads(before)

    def run(self, chunks: list[ScheduledChunk], k_pool, v_pool) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Logits of the rows the chunks need, and for each chunk the range of its rows."""
        step, ranges = self.build(chunks)
        with self._threads():
            logits = self.model.forward(step, k_pool, v_pool)
        return logits, ranges

    @staticmethod
    def build(chunks: list[ScheduledChunk]) -> tuple[StepInput, list[tuple[int, int]]]:
        """The flat batch of a step, and for each chunk the range of its logits rows."""
        tokens, positions, rows, logits_rows, ranges = [], [], [], [], []
        width = max(len(c.seq.block_table) for c in chunks)
        tables = np.zeros((len(chunks), width), np.int32)
        for i, c in enumerate(chunks):
            seq = c.seq
            first = len(tokens)
            tokens.extend((seq.tokens + seq.draft)[c.start:c.start + c.length])
            positions.extend(range(c.start, c.start + c.length))
            rows.extend([i] * c.length)
            tables[i, :len(seq.block_table)] = seq.block_table
            lo = len(logits_rows)
            end = c.start + c.length
            if seq.scoring:  # every position from the next one to visit
                logits_rows.extend(first + p - c.start for p in range(max(c.start, seq.score_next), end))
            elif c.completes:  # the last real token and any draft tokens after it
                logits_rows.extend(range(first + len(seq) - 1 - c.start, first + c.length))
            ranges.append((lo, len(logits_rows)))
        step = StepInput(np.array(tokens, np.int64), np.array(positions, np.int64), np.array(rows, np.int32),
                         tables, np.array(logits_rows, np.int64))
        return step, ranges
