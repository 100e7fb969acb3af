"""The Scheduler on its own: admission, the token budget, preemption order, and that no work is lost.

No model runs here: each step's logits are random rows of the shape the model runner
asks for, and greedy draws take their argmax, so the tests see only scheduling.
"""

import numpy as np
import pytest

from ponder import SamplingParams
from ponder.engine.finish import FinishRules
from ponder.engine.forking import samples
from ponder.engine.kv_cache import KVCache
from ponder.engine.model_runner import ModelRunner
from ponder.engine.scheduler import Scheduler
from ponder.engine.sequence import Sequence, Status

VOCAB = 50


def _scheduler(num_blocks=64, block_size=4, token_budget=16, prefix_cache=False, **kw) -> Scheduler:
    kv = KVCache(1, 1, 4, num_blocks, block_size)
    rules = FinishRules(eos_ids=set(), context_length=1000, decode=lambda ids: "")
    return Scheduler(kv, rules, token_budget=token_budget, prefix_cache=prefix_cache, **kw)


def _seq(rid, n_prompt, max_tokens=3, n=1) -> list[Sequence]:
    p = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True, n=n)
    return samples(rid, [5 + (rid * 7 + i) % 40 for i in range(n_prompt)], p)


def _step(sched, rng):
    """schedule + postprocess with random logits; returns the chunks and the events."""
    chunks = sched.schedule()
    step, ranges = ModelRunner.build(chunks)
    logits = rng.standard_normal((len(step.logits_rows), VOCAB)).astype(np.float32)
    events, failed = sched.postprocess(chunks, logits, ranges)
    assert not failed
    return chunks, events


def test_admission_fills_the_token_budget_in_order():
    sched = _scheduler(token_budget=10)
    seqs = [_seq(r, 8)[0] for r in range(3)]
    for s in seqs:
        sched.add(s)
    chunks = sched.schedule()
    assert [(c.seq, c.start, c.length) for c in chunks] == [(seqs[0], 0, 8), (seqs[1], 0, 2)]
    assert [s.status for s in seqs] == [Status.RUNNING, Status.RUNNING, Status.WAITING]
    assert list(sched.waiting) == [seqs[2]]


def test_running_sequences_go_first_then_waiting_ones_fill_the_rest():
    rng = np.random.default_rng(0)
    sched = _scheduler(token_budget=10, max_running=256)
    a, b = _seq(0, 6, max_tokens=5)[0], _seq(1, 9, max_tokens=5)[0]
    sched.add(a)
    _step(sched, rng)  # a prefilled and drew its first token
    sched.add(b)
    chunks = sched.schedule()
    # a's one decode token first, then 9 of b's prompt: never more than the budget
    assert [(c.seq, c.length) for c in chunks] == [(a, 1), (b, 9)]
    assert sum(c.length for c in chunks) <= 10


def test_preemption_takes_the_youngest_and_puts_it_first_in_line():
    rng = np.random.default_rng(1)
    sched = _scheduler(num_blocks=4, block_size=4, token_budget=64)
    old, young = _seq(0, 7, max_tokens=8)[0], _seq(1, 7, max_tokens=8)[0]
    sched.add(old)
    sched.add(young)
    _step(sched, rng)  # both prefilled: 2 blocks each, the pool is full
    assert sched.kv.num_available == 0
    _step(sched, rng)  # position 7 still fits in each second block
    chunks, _ = _step(sched, rng)  # old needs a third block: young goes
    assert [c.seq for c in chunks] == [old]
    assert sched.num_preemptions == 1 and young.status is Status.WAITING and young.num_computed == 0
    assert sched.waiting[0] is young and young.block_table == []


def test_nothing_is_lost_under_pressure():
    """Many requests, n > 1, a pool that forces preemption: every sample finishes with all its tokens."""
    rng = np.random.default_rng(2)
    sched = _scheduler(num_blocks=12, block_size=4, token_budget=7, prefix_cache=True)
    reqs = [_seq(r, 3 + r % 9, max_tokens=4 + r % 5, n=1 + r % 3) for r in range(12)]
    for r in reqs:
        sched.add(r[0])
    drawn = {}
    for _ in range(2000):
        if not sched.has_work():
            break
        _, events = _step(sched, rng)
        for ev in events:
            drawn.setdefault((ev.request_id, ev.sample_index), []).append(ev.token_id)
    assert not sched.has_work() and sched.num_preemptions > 0
    for r in reqs:
        for s in r:
            assert s.finished and s.finish_reason == "length"
            assert len(s.output_ids) == s.params.max_tokens
            assert drawn[(s.request_id, s.sample_index)] == s.output_ids
    # every block is free or held only by the prefix cache
    assert sched.kv.num_available == sched.kv.num_blocks


def test_forced_tokens_are_computed_like_a_prefill_chunk():
    rng = np.random.default_rng(3)
    sched = _scheduler(token_budget=4)
    seq = _seq(0, 5, max_tokens=20)[0]
    sched.add(seq)
    _step(sched, rng)
    _step(sched, rng)  # prefill (4), then the last prompt token: first draw
    assert len(seq.output_ids) == 1
    sched.append_forced(seq, [7, 8, 9, 10, 11])
    assert seq.num_pending == 6 and seq.num_forced == 5
    chunks, events = _step(sched, rng)
    assert [(c.start, c.length) for c in chunks] == [(5, 4)] and not events  # within the budget: no draw yet
    chunks, events = _step(sched, rng)
    assert [(c.start, c.length) for c in chunks] == [(9, 2)] and len(events) == 1
    assert seq.output_ids[1:6] == [7, 8, 9, 10, 11] and len(seq.output_ids) == 7


def test_a_failing_sequence_finishes_with_its_error_and_the_others_go_on(monkeypatch):
    from ponder.engine import sampler

    rng = np.random.default_rng(4)
    sched = _scheduler()
    good, bad = _seq(0, 5)[0], _seq(1, 5)[0]
    sched.add(good)
    sched.add(bad)
    real = sampler.sample_token

    def flaky(logits, params, sample_index, position, seq=bad):
        if params is seq.params:
            raise RuntimeError("injected")
        return real(logits, params, sample_index, position)

    monkeypatch.setattr(sampler, "sample_token", flaky)
    chunks = sched.schedule()
    step, ranges = ModelRunner.build(chunks)
    events, failed = sched.postprocess(chunks, rng.standard_normal((len(step.logits_rows), VOCAB)).astype(np.float32),
                                       ranges)
    assert failed == [bad] and bad.finish_reason == "error" and str(bad.error) == "injected"
    assert [e.request_id for e in events] == [good.request_id] and good.status is Status.RUNNING
    assert bad.block_table == [] and bad not in sched.running


@pytest.mark.parametrize("budget", [1, 3, 100])
def test_scoring_visits_every_row_once_whatever_the_chunking(budget):
    rng = np.random.default_rng(5)
    sched = _scheduler(token_budget=budget)
    seen = []
    seq = Sequence(0, 0, list(range(10, 30)), SamplingParams(temperature=0), score_from=4,
                   visit=lambda i, row: seen.append(i))
    sched.add(seq)
    while sched.has_work():
        _step(sched, rng)
    assert seen == list(range(4, 20)) and seq.finished
