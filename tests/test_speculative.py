"""Prompt-lookup speculation: proposals, and outputs bit-identical with and without it."""

import numpy as np
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
    return (Engine(model, speculative="lookup", speculative_tokens=4, prefix_cache=False),
            Engine(model, prefix_cache=False))


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
    spec, plain = Engine(default_model, speculative="lookup", speculative_tokens=4), Engine(default_model)
    chat = [{"role": "user", "content": "Repeat exactly: the cat sat on the mat, the cat sat on the mat."}]
    p = SamplingParams(temperature=0, max_tokens=32)
    a, b = spec.generate(chat, p)[0], plain.generate(chat, p)[0]
    assert a.token_ids == b.token_ids and a.logprobs == b.logprobs
    assert a.usage["speculative_accepted"] > 0


def test_top_k_rows_matches_a_stable_sort():
    from ponder.engine.token_recycling import top_k_rows

    rng = np.random.default_rng(0)
    rows = rng.standard_normal((5, 3000)).astype(np.float32)
    rows[1, 10:20] = 7.0  # ties: lower index first
    out = np.empty((5, 8), np.int32)
    top_k_rows(rows, 8, out)
    np.testing.assert_array_equal(out, np.argsort(-rows, axis=1, kind="stable")[:, :8])


def test_top_k_rows_chunk_skipping_changes_nothing():
    """Chunks of 64 are skipped by their maximum: the winners at chunk edges, a ragged last chunk,
    ties across chunks and NaNs (which never enter) must come out as a stable sort says."""
    from ponder.engine.token_recycling import top_k_rows

    rng = np.random.default_rng(1)
    rows = rng.standard_normal((4, 64 * 40 + 37)).astype(np.float32)
    rows[0, [63, 64, 127, 128, 64 * 40 + 36]] = 9.0
    rows[1, [5, 700, 1500]] = np.nan
    rows[1, [6, 701, 21]] = 8.0  # 21: the lane of the NaN at 5
    rows[2, 64 * 40:] = 10.0
    rows[3, :] = 1.0
    out = np.empty((4, 8), np.int32)
    top_k_rows(rows, 8, out)
    np.testing.assert_array_equal(out, np.argsort(-rows, axis=1, kind="stable")[:, :8])


def test_recycling_fills_the_shape_from_the_latest_rows():
    from ponder.engine.token_recycling import RecyclingProposer

    tr = RecyclingProposer(shape=((-1, 0), (-1, 1), (0, 0), (2, 0), (1, 0)), k=2)
    assert tr.propose([3], 8, 8) is None  # nothing observed yet
    rows = np.zeros((2, 10), np.float32)
    rows[0, [5, 6]] = [2.0, 1.0]  # after 3: 5 then 6
    rows[1, [7, 8]] = [2.0, 1.0]  # after 5: 7 then 8
    tr.observe([3, 5], rows)
    tree = tr.propose([1, 3], 8, 8)
    # 3 -> 5 -> 7; 3 -> 6; 7 and 6 have no successors yet, so their entries are dropped
    assert tree.tokens == [5, 6, 7] and tree.parents == [-1, -1, 0]
    assert tr.propose([3], 2, 8).tokens == [5, 6]  # at most max_nodes
    assert tr.propose([3], 8, 1).tokens == [5, 6]  # none deeper than max_depth
    rows[0] = 0
    rows[0, [9, 4]] = [3.0, 1.0]
    tr.observe([3], rows[:1])  # the latest row replaces the entry
    assert tr.propose([3], 8, 8).tokens == [9, 4]


def test_engine_rejects_an_unknown_speculation_mode(tiny_llama):
    from ponder.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="speculative"):
        Engine(load_model(str(tiny_llama[2])), speculative="medusa")
