"""The engine on a tiny model: stops, lengths, logprobs, forks, preemption, prompts of every kind."""

import numpy as np
import pytest

from ponder import Engine, SamplingParams
from ponder.errors import InvalidParameterError
from ponder.loading.model_files import load_model
from ponder.model.reference import ReferenceModel, softmax


@pytest.fixture(scope="module")
def engine(tiny_llama):
    return Engine(load_model(str(tiny_llama[2])))


def test_greedy_follows_reference_and_logprobs_are_exact(engine):
    res = engine.generate("the cat is in", SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))[0]
    assert len(res.token_ids) == 8 and res.finish_reason == "length"
    ref = ReferenceModel(engine.model.weights)
    logits = ref.forward(res.prompt_token_ids + res.token_ids, ref.new_cache())[len(res.prompt_token_ids) - 1:-1]
    assert list(logits.argmax(-1)) == res.token_ids
    ref_lp = np.log(softmax(logits))[np.arange(8), res.token_ids]
    np.testing.assert_allclose(res.logprobs, ref_lp, atol=1e-3)


def test_prompt_forms_agree(engine):
    p = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    text = engine.generate("the hat", p)[0]
    ids = engine.generate(text.prompt_token_ids, p)[0]
    assert ids.token_ids == text.token_ids
    chat = engine.generate([{"role": "user", "content": "hi"}], p)[0]
    assert chat.prompt_token_ids[0] == 1  # <|im_start|>
    both = engine.generate(["the hat", [{"role": "user", "content": "hi"}]], p)
    assert both[0].token_ids == text.token_ids and both[1].token_ids == chat.token_ids


def test_stop_string_truncates_text(engine):
    free = engine.generate("the", SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0]
    stop = free.text[3:5]
    res = engine.generate("the", SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop=[stop]))[0]
    assert res.finish_reason == "stop"
    assert res.text == free.text[:free.text.find(stop)]
    assert stop not in res.text


def test_stop_token_ids(engine):
    free = engine.generate("the", SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))[0]
    res = engine.generate("the", SamplingParams(temperature=0, max_tokens=6, ignore_eos=True,
                                                stop_token_ids=[free.token_ids[2]]))[0]
    assert res.finish_reason == "stop" and res.token_ids == free.token_ids[:free.token_ids.index(free.token_ids[2]) + 1]


def test_top_logprobs(engine):
    res = engine.generate("the", SamplingParams(temperature=0, max_tokens=3, logprobs=5))[0]
    top = res.outputs[0].top_logprobs
    assert len(top) == len(res.token_ids) and all(len(t) == 5 for t in top)
    assert top[0][0][0] == res.token_ids[0] and top[0][0][1] == res.logprobs[0]
    assert all(a[1] >= b[1] for a, b in zip(top[0], top[0][1:]))


def test_n_samples_fork_and_reproduce(engine):
    p = SamplingParams(temperature=1.0, n=5, max_tokens=10, seed=123, ignore_eos=True)
    res = engine.generate("the cat", p)[0]
    assert [o.index for o in res.outputs] == list(range(5))
    assert len({tuple(o.token_ids) for o in res.outputs}) > 1
    again = engine.generate("the cat", p)[0]
    assert [o.token_ids for o in again.outputs] == [o.token_ids for o in res.outputs]
    solo = engine.generate("the cat", SamplingParams(temperature=1.0, n=1, max_tokens=10, seed=123, ignore_eos=True))
    assert solo[0].token_ids == res.outputs[0].token_ids


def test_seed_is_drawn_and_reported_when_absent(engine):
    res = engine.generate("the", SamplingParams(temperature=1.0, max_tokens=5, ignore_eos=True))[0]
    again = engine.generate("the", SamplingParams(temperature=1.0, max_tokens=5, ignore_eos=True, seed=res.seed))[0]
    assert again.token_ids == res.token_ids


def test_small_kv_pool_preempts_and_finishes_everything(tiny_llama):
    """A pool too small for all requests at once: they wait or are preempted, none is lost."""
    roomy = Engine(load_model(str(tiny_llama[2])))
    tight = Engine(load_model(str(tiny_llama[2])), kv_blocks=6)
    prompts = ["the cat is in the hat", "and the", "is it in", "the the the"]
    p = SamplingParams(temperature=0.7, max_tokens=20, seed=9, ignore_eos=True)
    expect = roomy.generate(prompts, p)
    got = tight.generate(prompts, p)
    assert [r.token_ids for r in got] == [r.token_ids for r in expect]
    assert [r.logprobs for r in got] == [r.logprobs for r in expect]
    assert tight.scheduler.num_preemptions > 0
    # every block is free or held only by the prefix cache
    assert tight.kv.num_available == tight.kv.num_blocks
    assert set(tight.kv.ref_count[tight.kv.cached]) <= {1} and not tight.kv.ref_count[~tight.kv.cached].any()


def test_bad_prompts_are_rejected(engine):
    for bad in ([], [10**9], [{"content": "x"}], 5):
        with pytest.raises(InvalidParameterError):
            engine.generate(bad, SamplingParams(max_tokens=1))


def test_usage_accounts_for_reuse_and_forks(engine):
    p = SamplingParams(temperature=1.0, n=3, seed=1, max_tokens=5, ignore_eos=True)
    prompt = list(range(30, 70))
    first = engine.generate(prompt, p)[0]
    u = first.usage
    assert u["prompt_tokens"] == 40 and u["completion_tokens"] == 15
    assert u["forked_tokens"] == 80  # two forks skipped the 40-token prefill
    assert u["flops"] > 0 and u["bytes"] > 0
    again = engine.generate(prompt, p)[0]
    assert again.usage["cached_tokens"] == 39  # everything but the last prompt token came from the cache
    assert again.usage["computed_tokens"] < u["computed_tokens"]


def test_abort_frees_blocks_and_reports(engine):
    rid = engine.add_request("the cat", SamplingParams(temperature=0, max_tokens=100, ignore_eos=True, n=2))
    events = engine.step() + engine.step()
    assert {e.request_id for e in events} == {rid}
    engine.abort(rid)
    assert engine.is_finished(rid) and not engine.has_unfinished()
    res = engine.pop_result(rid)
    assert [o.finish_reason for o in res.outputs] == ["abort", "abort"]
    assert not engine.kv.ref_count[~engine.kv.cached].any()


def test_step_events_spell_the_output(engine):
    rid = engine.add_request("the", SamplingParams(temperature=0.5, seed=8, max_tokens=7, ignore_eos=True))
    events = []
    while not engine.is_finished(rid):
        events += engine.step()
    res = engine.pop_result(rid)
    assert [e.token_id for e in events] == res.token_ids
    assert [e.finish_reason for e in events] == [None] * 6 + ["length"]


def test_samples_in_rounds_equal_one_request(engine):
    """first_sample: rounds of 2 samples draw exactly what one request of n=6 draws."""
    base = dict(temperature=1.0, seed=17, max_tokens=8, ignore_eos=True)
    whole = engine.generate("the cat", SamplingParams(n=6, **base))[0]
    rounds = [o.token_ids for k in (0, 2, 4)
              for o in engine.generate("the cat", SamplingParams(n=2, first_sample=k, **base))[0].outputs]
    assert rounds == [o.token_ids for o in whole.outputs]


def test_fork_mid_generation_shares_blocks_and_equals_a_fresh_request(engine):
    p = SamplingParams(temperature=0.9, seed=31, max_tokens=12, ignore_eos=True)
    rid = engine.add_request("the cat is in the hat and", p)
    for _ in range(6):
        engine.step()
    seq = engine._requests[rid].samples[0]
    partial = list(seq.tokens)
    branch = SamplingParams(temperature=0.9, seed=5, max_tokens=8, ignore_eos=True)
    fid = engine.fork(rid, 0, branch)
    engine.run_until_done([rid])
    forked = engine.run_until_done([fid])[0]
    assert forked.prompt_token_ids == partial
    assert forked.usage["cached_tokens"] == len(partial) - 1  # nothing recomputed but the last token
    fresh = Engine(engine.model, prefix_cache=False).generate(partial, branch)[0]
    assert forked.token_ids == fresh.token_ids and forked.logprobs == fresh.logprobs
