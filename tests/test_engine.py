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


@pytest.fixture(scope="module")
def small_head_engine(tiny_llama_small_head):
    return Engine(load_model(str(tiny_llama_small_head[2])))


@pytest.mark.parametrize("which", ["head64", "head16"])
def test_greedy_follows_reference_and_logprobs_are_exact(engine, small_head_engine, which):
    """Head dimension 64 runs the IR attention, 16 the scalar fold: both match the float64 reference."""
    engine = engine if which == "head64" else small_head_engine
    assert engine.config.head_dim == (64 if which == "head64" else 16)
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
    assert tight.stats().preemptions > 0
    # every block is free or held only by the prefix cache
    assert tight.stats().kv_blocks_used == 0
    kv = tight._kv  # the invariant itself: one reference per cached block, none on the others
    assert set(kv.ref_count[kv.cached]) <= {1} and not kv.ref_count[~kv.cached].any()


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
    assert engine.stats().kv_blocks_used == 0


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
    drawn = [e.token_id for _ in range(6) for e in engine.step()]
    partial = engine.encode_prompt("the cat is in the hat and") + drawn
    branch = SamplingParams(temperature=0.9, seed=5, max_tokens=8, ignore_eos=True)
    fid = engine.fork(rid, 0, branch)
    engine.run_until_done([rid])
    forked = engine.run_until_done([fid])[0]
    assert forked.prompt_token_ids == partial
    assert forked.usage["cached_tokens"] == len(partial) - 1  # nothing recomputed but the last token
    fresh = Engine(engine.model, prefix_cache=False).generate(partial, branch)[0]
    assert forked.token_ids == fresh.token_ids and forked.logprobs == fresh.logprobs


def test_one_failing_request_does_not_fail_its_batch(engine, monkeypatch):
    """An engine invariant: a fault in one sequence of a mixed batch fails that request only."""
    from ponder.engine import sampler

    ok = SamplingParams(temperature=0.8, seed=1, max_tokens=6, ignore_eos=True)
    bad = SamplingParams(temperature=0.8, seed=666, max_tokens=6, ignore_eos=True, n=2)
    expect = engine.generate(["the cat", "is it in"], ok)
    real = sampler.sample_token

    def flaky(logits, params, sample_index, position):
        if params.seed == 666 and position > 4:  # fails mid-generation, after a few good tokens
            raise RuntimeError("injected fault")
        return real(logits, params, sample_index, position)

    monkeypatch.setattr(sampler, "sample_token", flaky)
    rids = [engine.add_request("the cat", ok), engine.add_request("the hat", bad), engine.add_request("is it in", ok)]
    got = engine.run_until_done(rids)
    assert isinstance(got[1].error, RuntimeError) and "error" in [o.finish_reason for o in got[1].outputs]
    assert [r.token_ids for r in (got[0], got[2])] == [r.token_ids for r in expect]
    assert [r.logprobs for r in (got[0], got[2])] == [r.logprobs for r in expect]
    assert got[0].error is None and got[2].error is None
    assert engine.stats().kv_blocks_used == 0 and not engine.has_unfinished()
    with pytest.raises(RuntimeError, match="injected"):  # generate() raises the failure itself
        engine.generate("the hat", bad)


def test_tiny_temperatures_behave_like_greedy(engine):
    greedy = engine.generate("the cat", SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))[0]
    for extra in ({}, {"min_p": 0.5}, {"top_p": 0.5}, {"top_k": 3}):
        for t in (1e-30, 1e-40, 5e-324):
            got = engine.generate("the cat", SamplingParams(temperature=t, seed=1, max_tokens=6, ignore_eos=True,
                                                            **extra))[0]
            assert got.token_ids == greedy.token_ids, (t, extra)


def test_a_request_too_long_for_the_kv_pool_is_refused_before_any_work(tiny_llama):
    from ponder.errors import ContextLengthError

    small = Engine(load_model(str(tiny_llama[2])), kv_blocks=2, block_size=16)
    with pytest.raises(ContextLengthError, match="KV pool"):
        small.check_prompt(list(range(10, 50)))
    with pytest.raises(ContextLengthError, match="KV pool"):
        small.add_request(list(range(10, 50)), SamplingParams(max_tokens=1))
    with pytest.raises(ContextLengthError, match="KV pool"):
        small.score(list(range(10, 50)))
    assert small.stats().steps == 0 and not small.has_unfinished()


def test_scoring_is_batched_with_generation_and_matches_generation(engine):
    p = SamplingParams(temperature=0.7, seed=3, max_tokens=8, ignore_eos=True)
    gen = engine.generate("the cat is", p)[0]
    other = engine.add_request("is it in the hat", p)
    sid = engine.add_score(gen.prompt_token_ids + gen.token_ids, len(gen.prompt_token_ids))
    scores = engine.run_until_done([sid])[0].scores
    assert [s["logprob"] for s in scores] == gen.logprobs and [s["token"] for s in scores] == gen.token_ids
    assert engine.run_until_done([other])[0].token_ids == engine.generate("is it in the hat", p)[0].token_ids


def test_info_and_stats_are_a_read_only_view(engine):
    info = engine.info()
    assert info.activation_bits == 16 and info.threads >= 1 and info.isa and info.kv_blocks > 0
    assert info.fingerprint("ab").startswith("ab-ponder") and f"-t{info.threads}" in info.fingerprint("ab")
    s = engine.stats()
    assert s.running_requests == 0 and s.kv_blocks_total == info.kv_blocks


def test_a_sequence_longer_than_the_kv_pool_ends_with_length(tiny_llama):
    """max_tokens beyond what the pool holds: the sample stops where the pool is full, never hangs."""
    small = Engine(load_model(str(tiny_llama[2])), kv_blocks=2, block_size=16)
    res = small.generate(list(range(10, 20)), SamplingParams(temperature=0, max_tokens=100, ignore_eos=True))[0]
    assert res.finish_reason == "length" and len(res.prompt_token_ids) + len(res.token_ids) == 32
    assert small.stats().kv_blocks_used == 0


def test_forced_tokens_give_what_a_prompt_holding_them_gives(engine):
    """append_tokens (tool output spliced into a running sample) equals a request whose prompt has them."""
    p = SamplingParams(temperature=0.8, seed=12, max_tokens=10, ignore_eos=True)
    rid = engine.add_request("the cat", p)
    with pytest.raises(InvalidParameterError):
        engine.append_tokens(rid, 0, [40, 41])  # nothing drawn yet
    drawn = []
    while not drawn:
        drawn += [e.token_id for e in engine.step()]
    forced = engine.encode_prompt(" is in the hat")
    engine.append_tokens(rid, 0, forced)
    res = engine.run_until_done([rid])[0]
    assert res.token_ids[:1 + len(forced)] == drawn + forced and len(res.token_ids) == 10
    prompt = res.prompt_token_ids + drawn + forced
    # draws are keyed by position, so the continuation is what a request with that prompt draws
    rest = engine.generate(prompt, SamplingParams(temperature=0.8, seed=12, max_tokens=10 - len(drawn + forced),
                                                  ignore_eos=True))[0]
    assert res.token_ids[1 + len(forced):] == rest.token_ids
    assert res.logprobs[1 + len(forced):] == rest.logprobs
    with pytest.raises(InvalidParameterError):
        engine.append_tokens(rid, 0, [40])  # popped: unknown
