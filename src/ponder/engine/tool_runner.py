"""ToolRunner: runs the tools of paused samples on a small thread pool the engine owns.

When the scheduler pauses a sample at a tool trigger, `start` reads the call out of the answer
so far (the tool's `find_call`) and submits `tool.run(call)` to the pool; the other sequences
keep stepping.  `collect` splices every finished result (the rest of the trigger and the tool's
output, encoded without BOS) through `Scheduler.resume`, which puts the sample back in the batch.
A call still running at its deadline (the tool's `time_limit`) gets a timeout text instead; the
thread is left to end on its own (python's sandbox has its own, shorter, limit).  A trigger with
no call before it, or past MAX_CALLS, is spliced at once with no tool run.

When nothing else can step, the engine calls `collect(wait=...)`, which blocks on the first
future to finish (or the first deadline), never a busy loop.  Which sample resumes when changes
only the batches, never a token: draws are keyed by position and the kernels give the same bits
whatever the batch.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable

from ponder.engine.results import TokenEvent
from ponder.engine.sequence import Sequence
from ponder.engine.tool_calls import MAX_CALLS, call_text, failed, find_call, run_tool

DEFAULT_TIME_LIMIT = 10.0  # seconds, for a tool that does not say (Tool.time_limit)
WORKERS = 4


class ToolRunner:
    def __init__(self, scheduler, encode: Callable[[str], list[int]], workers: int = WORKERS):
        self.scheduler = scheduler
        self.encode = encode
        self.workers = workers
        self._pool: cf.ThreadPoolExecutor | None = None
        self._running: dict[cf.Future, tuple] = {}  # -> (seq, tool, call, deadline, time limit)
        self.calls_started = 0

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def start(self, seq: Sequence) -> list[TokenEvent]:
        """Start the tool of a sample that just paused (or splice its trigger at once when it calls nothing)."""
        st = seq.tools
        tool = st.tools[st.pause.trigger]
        call = None
        if len(st.calls) < MAX_CALLS:
            call = find_call(tool, call_text(self.scheduler.rules.decode, st.line, seq.output_ids, st.pause.rest,
                                             st.pause.trigger))
        if call is None:
            return self.scheduler.resume(seq, self.encode(st.pause.rest) if st.pause.rest else [], st.pause.rest)
        if self._pool is None:
            self._pool = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="ponder-tool")
        limit = float(getattr(tool, "time_limit", None) or DEFAULT_TIME_LIMIT)
        self._running[self._pool.submit(run_tool, tool, call)] = (seq, tool, call, time.monotonic() + limit, limit)
        self.calls_started += 1
        return []

    def collect(self, wait: float | None = 0.0) -> list[TokenEvent]:
        """Splice the results that are ready; wait > 0 (or None: as long as it takes) first blocks until
        one is ready or a deadline passes."""
        if not self._running:
            return []
        if wait is None or wait > 0:
            timeout = max(0.0, min(r[3] for r in self._running.values()) - time.monotonic())
            cf.wait(list(self._running), timeout=timeout if wait is None else min(timeout, wait),
                    return_when=cf.FIRST_COMPLETED)
        now = time.monotonic()
        events = []
        ready = [f for f, r in self._running.items() if f.done() or now >= r[3]]
        ready.sort(key=lambda f: (self._running[f][0].request_id, self._running[f][0].sample_index))
        for fut in ready:
            seq, tool, call, _, limit = self._running.pop(fut)
            if fut.done():
                result = fut.result()  # run_tool never raises
            else:
                result = failed(tool, call, f"timed out after {limit:g} s")
            if seq.tools is None or seq.tools.pause is None:  # aborted while the tool ran
                continue
            text = seq.tools.pause.rest + result.output
            events += self.scheduler.resume(seq, self.encode(text), text, result)
        return events

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
