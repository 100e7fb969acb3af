"""The one thread that owns the Engine.

The Engine is single-threaded.  Every HTTP request becomes one or more `Job`s
put into `EngineLoop`'s inbox; the engine thread admits them between steps,
runs `engine.step()` while anything is unfinished (continuous batching: every
step carries the tokens of all running requests), and sends each job's token
events and final result to the job's `sink` (a thread-safe callable; the app
forwards it to the request's asyncio queue).

Scoring jobs are engine requests like generation, batched in the same steps.
A cancelled job (client gone) is aborted at the next turn of the loop, which
frees its KV blocks.  Nothing a request does can stop the thread: user errors
(PonderError) go back to that job only; a request that fails inside a step
comes back finished with its error (the engine keeps the others going); an
unexpected exception from a whole step fails the jobs that were running,
resets them, and the loop goes on.  The loop reads the engine only through its
public methods and `engine.stats()`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ponder.errors import PonderError

log = logging.getLogger("ponder.server")


@dataclass(eq=False)
class Job:
    """One unit of engine work for one prompt.

    kind "generate": prompt token ids + SamplingParams; the sink gets
        ("tokens", [TokenEvent, ...]) as they are produced, then ("done", GenerationResult).
    kind "score": the sink gets ("done", [score dicts]) from engine.score(ids, 1, top_logprobs).
    Either may instead end with ("error", exception).
    """

    kind: str
    prompt_ids: list[int]
    sink: Callable[[tuple], None]
    params: object = None  # SamplingParams for "generate"
    top_logprobs: int = 0  # for "score"
    cancelled: bool = False
    request_id: int | None = None
    submitted: float = field(default_factory=time.monotonic)
    tools: list | None = None  # for "generate": tools the engine runs in its decoding loop


class Stats:
    """Counters the engine thread updates and /metrics reads (plain numbers; GIL-safe reads)."""

    WINDOW = 10.0  # seconds over which tokens/s is measured

    def __init__(self):
        self.requests_started = 0
        self.requests_finished = collections.Counter()  # by finish reason of sample 0
        self.requests_failed = 0
        self.scores = 0
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.generation_tokens = 0
        self.steps = 0
        self.queue_depth = 0
        self.running = 0
        self.tool_samples = 0
        self.kv_blocks_used = 0
        self.kv_blocks_cached = 0
        self.kv_blocks_total = 0
        self.alive = True
        self._recent: collections.deque = collections.deque()  # (time, tokens) per step

    def record_step(self, n_tokens: int) -> None:
        now = time.monotonic()
        self.steps += 1
        self.generation_tokens += n_tokens
        self._recent.append((now, n_tokens))
        while self._recent and self._recent[0][0] < now - self.WINDOW:
            self._recent.popleft()

    def tokens_per_second(self) -> float:
        recent = list(self._recent)
        now = time.monotonic()
        recent = [(t, n) for t, n in recent if t >= now - self.WINDOW]
        if not recent:
            return 0.0
        span = max(now - recent[0][0], 1e-3)
        return sum(n for _, n in recent) / span


class EngineLoop:
    def __init__(self, engine):
        self.engine = engine
        self.stats = Stats()
        self._inbox: collections.deque = collections.deque()
        self._cv = threading.Condition()
        self._jobs: dict[int, Job] = {}  # engine request id -> job
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ponder-engine", daemon=True)
        self.stats.kv_blocks_total = engine.stats().kv_blocks_total

    # -- called from any thread ------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        with self._cv:
            self._inbox.append(("add", job))
            self._cv.notify()

    def cancel(self, job: Job) -> None:
        with self._cv:
            job.cancelled = True
            self._inbox.append(("cancel", job))
            self._cv.notify()

    def is_alive(self) -> bool:
        return self._thread.is_alive() and self.stats.alive

    # -- the engine thread -------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    while not (self._inbox or self._stopping or self.engine.has_unfinished()):
                        self._cv.wait()
                    if self._stopping:
                        break
                    items = list(self._inbox)
                    self._inbox.clear()
                try:
                    for action, job in items:
                        self._guard(job, self._cancel if action == "cancel" else self._admit)
                    if self.engine.has_unfinished():
                        self._step()
                    self._snapshot()
                except Exception as e:  # a bug outside any one request: reset and keep serving
                    log.exception("engine loop error; failing the running requests")
                    self._abort_running(e)
                    time.sleep(0.01)
        except BaseException:  # pragma: no cover - the guards above should make this unreachable
            log.exception("engine thread died")
            self.stats.alive = False
            raise
        finally:
            self._fail_all(RuntimeError("the server is shutting down"))

    def _guard(self, job: Job, fn) -> None:
        """Run fn(job); a failure goes to that job's sink, never up into the loop."""
        try:
            fn(job)
        except PonderError as e:
            self._send(job, ("error", e))
        except Exception as e:  # a bug, but one request's bug
            log.exception("request failed")
            self._send(job, ("error", e))

    def _admit(self, job: Job) -> None:
        if job.cancelled:
            return
        if job.kind == "score":
            job.request_id = self.engine.add_score(job.prompt_ids, 1, top_logprobs=job.top_logprobs)
        else:
            job.request_id = self.engine.add_request(job.prompt_ids, job.params, job.tools)
            self.stats.requests_started += 1
        self._jobs[job.request_id] = job

    def _cancel(self, job: Job) -> None:
        rid = job.request_id
        if rid is None or rid not in self._jobs:
            return
        self.engine.abort(rid)
        self._finish(rid)

    def _abort_running(self, error: Exception) -> None:
        """End every running request with an error (their engine state is suspect) and free their blocks."""
        for rid in list(self._jobs):
            try:
                self.engine.abort(rid)
                self.engine.pop_result(rid)
            except Exception:
                log.exception("abort after a failure")
            self._send(self._jobs.pop(rid), ("error", error))

    TOOL_WAIT = 0.05  # seconds a step waits for a tool when nothing else can run: new jobs get in between

    def _step(self) -> None:
        try:
            events = self.engine.step(wait=self.TOOL_WAIT)
        except Exception as e:
            log.exception("engine step failed; aborting the running requests")
            self._abort_running(e)
            return
        self.stats.record_step(len(events))
        by_request: dict[int, list] = {}
        for ev in events:
            by_request.setdefault(ev.request_id, []).append(ev)
        for rid, evs in by_request.items():
            job = self._jobs.get(rid)
            if job is None:
                continue
            try:
                self._send(job, ("tokens", evs, self._top_logprobs(job, evs)))
            except Exception as e:  # this request's failure: answer it, the others go on
                log.exception("request %d failed", rid)
                self._fail(rid, e)
        for rid in list(self._jobs):  # scores and failed requests finish without events
            try:
                done = self.engine.is_finished(rid)
            except Exception as e:
                log.exception("request %d failed", rid)
                self._fail(rid, e)
                continue
            if done:
                self._finish(rid)

    @staticmethod
    def _top_logprobs(job: Job, events: list) -> list | None:
        """The top alternatives of each event's token, when the request asked for them."""
        return [ev.top_logprobs for ev in events] if job.params.logprobs else None

    def _finish(self, rid: int) -> None:
        try:
            result = self.engine.pop_result(rid)
        except Exception as e:  # e.g. a token that cannot be decoded: that request's error, never a lost job
            log.exception("finishing request %d failed", rid)
            self._fail(rid, e)
            return
        job = self._jobs.pop(rid)
        if result.error is not None:
            self._send(job, ("error", result.error))
            return
        if job.kind == "score":
            self.stats.scores += 1
            self._send(job, ("done", result.scores))
            return
        self.stats.requests_finished[result.outputs[0].finish_reason] += 1
        self.stats.prompt_tokens += result.usage.get("prompt_tokens", 0)
        self.stats.cached_tokens += result.usage.get("cached_tokens", 0)
        self._send(job, ("done", result))

    def _fail(self, rid: int, error: Exception) -> None:
        """End one request with an error: free what the engine still holds for it, answer its job."""
        job = self._jobs.pop(rid, None)
        try:
            self.engine.abort(rid)  # frees its KV blocks (a no-op once the engine has dropped it)
        except Exception:
            log.exception("aborting request %d", rid)
        try:
            self.engine.pop_result(rid)  # drops the engine's record of it, if it still has one
        except Exception:
            pass  # already dropped (pop_result removes the record before it decodes), or undecodable
        if job is not None:
            self._send(job, ("error", error))

    def _fail_all(self, error: Exception) -> None:
        for rid in list(self._jobs):
            self._send(self._jobs.pop(rid), ("error", error))
        for _, job in list(self._inbox):
            self._send(job, ("error", error))

    def _send(self, job: Job, msg: tuple) -> None:
        if msg[0] == "error":
            self.stats.requests_failed += 1
        try:
            job.sink(msg)
        except Exception:  # the client's event loop is gone; nothing to tell
            pass

    def _snapshot(self) -> None:
        now = self.engine.stats()
        self.stats.queue_depth = now.waiting_requests + len(self._inbox)
        self.stats.running = now.running_requests
        self.stats.tool_samples = now.tool_sequences
        self.stats.kv_blocks_used = now.kv_blocks_used  # held by requests
        self.stats.kv_blocks_cached = now.kv_blocks_cached  # kept only by the prefix cache
