"""Prompt-lookup speculation: proposals, and outputs bit-identical with and without it."""

import pytest

from ponder import Engine, SamplingParams
from ponder.engine.speculative import propose
from ponder.loading.model_files import load_model


def test_propose_takes_the_latest_longest_match():
    toks = [1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 5, 1, 2, 3]
    assert propose(toks, 2) == [7, 8]  # the trigram 1 2 3 was last followed by 7 8
    assert propose([4, 5, 6, 5], 3, min_ngram=1) == [6, 5]  # falls back to the unigram 5
    assert propose([4, 5, 6, 5], 3) == []  # unigram matches are too weak by default
    assert propose([1, 2, 3], 3) == []
    assert propose([1, 2, 1], 0) == []


@pytest.fixture(scope="module")
def engines(tiny_llama):
    model = load_model(str(tiny_llama[2]))
    return Engine(model, speculative_tokens=4, prefix_cache=False), Engine(model, speculative_tokens=0,
                                                                            prefix_cache=False)


@pytest.mark.parametrize("params", [SamplingParams(temperature=0, max_tokens=40, ignore_eos=True),
                                    SamplingParams(temperature=0.8, seed=3, max_tokens=40, ignore_eos=True)])
def test_speculation_changes_nothing_but_cost(engines, params):
    spec, plain = engines
    prompt = [40, 41, 42, 43, 44] * 8  # repetitive, so lookups find drafts
    a, b = spec.generate(prompt, params)[0], plain.generate(prompt, params)[0]
    assert a.token_ids == b.token_ids and a.logprobs == b.logprobs
    assert a.usage["speculative_proposed"] > 0 and b.usage["speculative_proposed"] == 0
    assert 0 <= a.usage["speculative_accepted"] <= a.usage["speculative_proposed"]


@pytest.mark.real_model
def test_speculation_on_the_default_model_is_lossless_and_accepts(default_model):
    spec, plain = Engine(default_model, speculative_tokens=4), Engine(default_model, speculative_tokens=0)
    chat = [{"role": "user", "content": "Repeat exactly: the cat sat on the mat, the cat sat on the mat."}]
    p = SamplingParams(temperature=0, max_tokens=32)
    a, b = spec.generate(chat, p)[0], plain.generate(chat, p)[0]
    assert a.token_ids == b.token_ids and a.logprobs == b.logprobs
    assert a.usage["speculative_accepted"] > 0
