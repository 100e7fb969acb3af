"""The determinism matrix on the default model: bits do not depend on how a sequence is run.

Kernel level (FastModel logits): alone vs in batches of 2, 7 and 32; 1 vs 2 threads;
prefilled whole vs in chunks of 1, 16 and 100 tokens.
Engine level (token ids and logprobs, greedy and seeded sampling): alone vs among
1..64 concurrent requests; cold vs warm prefix cache; token budgets; threads;
speculation off vs prompt lookup and Token Recycling (its defaults, an 8-node tree alone, batched,
budget 7; its tables start from the model's prior); a KV pool so
small that requests are preempted.
"""

import numba
import numpy as np
import pytest

from ponder import Engine, SamplingParams
from ponder.engine.kv_cache import KVCache
from ponder.model.fast_model import FastModel, StepInput

pytestmark = pytest.mark.real_model

TEXT = ("Solve step by step: a farmer has 17 sheep and buys 25 more, then sells 9. How many sheep are left? "
        "Explain each step, then write the final answer on its own line. ") * 2


@pytest.fixture(scope="module")
def runner(default_model):
    return FastModel(default_model.weights)


def _logits(runner, seqs, chunk=None, block_size=16):
    """All-position logits of each sequence, prefilled together in steps of `chunk` tokens per sequence."""
    c = runner.config
    blocks = [-(-len(s) // block_size) for s in seqs]
    kv = KVCache(c.n_layers, c.n_kv_heads, c.head_dim, sum(blocks), block_size)
    tables = np.zeros((len(seqs), max(blocks)), np.int32)
    start = 0
    for i, b in enumerate(blocks):
        tables[i, :b] = np.arange(start, start + b)
        start += b
    out = [[] for _ in seqs]
    done = [0] * len(seqs)
    while any(d < len(s) for d, s in zip(done, seqs)):
        toks, pos, rows = [], [], []
        for i, s in enumerate(seqs):
            n = min(chunk or len(s), len(s) - done[i])
            toks += s[done[i]:done[i] + n]
            pos += range(done[i], done[i] + n)
            rows += [i] * n
            done[i] += n
        step = StepInput(np.array(toks), np.array(pos), np.array(rows, np.int32), tables, np.arange(len(toks)))
        logits = runner.forward(step, kv.k, kv.v)
        for r, row in zip(rows, logits):
            out[r].append(row)
    return [np.array(o) for o in out]


@pytest.fixture(scope="module")
def target(default_model):
    return default_model.tokenizer.encode(TEXT)[:120]


@pytest.fixture(scope="module")
def alone(runner, target):
    return _logits(runner, [target])[0]


def _others(tokenizer, k):
    return [tokenizer.encode(f"Question {i}: what is {i} times {i + 3}? " * (1 + i % 3)) for i in range(k)]


@pytest.mark.parametrize("batch", [2, 7, 32])
def test_logits_independent_of_batch(runner, default_model, target, alone, batch):
    others = _others(default_model.tokenizer, batch - 1)
    seqs = others[: batch // 2] + [target] + others[batch // 2:]
    got = _logits(runner, seqs)[batch // 2]
    np.testing.assert_array_equal(got, alone)


@pytest.mark.parametrize("chunk", [1, 16, 100])
def test_logits_independent_of_chunking(runner, target, alone, chunk):
    np.testing.assert_array_equal(_logits(runner, [target], chunk=chunk)[0], alone)


def test_logits_independent_of_threads(runner, target, alone):
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _logits(runner, [target])[0]
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, alone)


# -- engine level -------------------------------------------------------------------------

CHAT = [{"role": "user", "content": "Tom has 3 apples and gets 4 more. How many apples does he have?"}]
PARAMS = [SamplingParams(temperature=0, max_tokens=24, ignore_eos=True),
          SamplingParams(temperature=0.9, top_p=0.95, seed=7, max_tokens=24, ignore_eos=True)]


def _run(engine, params, company=0):
    """The target request, alone or among `company` others of varied lengths and params."""
    others = [[{"role": "user", "content": f"Count from {i} to {i + 5 + i % 7}."}] for i in range(company)]
    prompts = others[: company // 2] + [CHAT] + others[company // 2:]
    res = engine.generate(prompts, params)[company // 2]
    _run.usage = res.usage
    return res.token_ids, res.logprobs


@pytest.fixture(scope="module")
def reference_runs(default_model):
    engine = Engine(default_model, prefix_cache=False)
    return [_run(engine, p) for p in PARAMS]


@pytest.mark.parametrize("which", [0, 1], ids=["greedy", "seeded"])
@pytest.mark.parametrize("setup", [
    "company1", "company8", "company64", "warm_cache", "budget7", "budget64", "one_thread", "lookup",
    "recycling", "recycling_tree", "recycling_company3", "recycling_budget7", "preempted",
])
def test_engine_results_independent_of_setup(default_model, reference_runs, which, setup):
    params = PARAMS[which]
    kwargs = {"budget7": {"token_budget": 7}, "budget64": {"token_budget": 64},
              "lookup": {"speculative": "lookup", "speculative_max_batch": 64},
              "recycling": {"speculative": "recycling"},  # the defaults: one drafted token, one stream
              "recycling_tree": {"speculative": "recycling", "speculative_tokens": 8},
              "recycling_budget7": {"speculative": "recycling", "speculative_tokens": 8, "token_budget": 7},
              "recycling_company3": {"speculative": "recycling", "speculative_tokens": 8,
                                     "speculative_max_batch": 4},
              "preempted": {"kv_blocks": 12}, "one_thread": {"threads": 1}}.get(setup, {})
    engine = Engine(default_model, **kwargs)
    before = numba.get_num_threads()
    if setup == "warm_cache":
        _run(engine, params)
    company = {"company1": 1, "company8": 8, "company64": 64, "preempted": 6, "recycling_company3": 3}.get(setup, 0)
    got = _run(engine, params, company)
    assert numba.get_num_threads() == before  # the engine's thread count stays around its own calls
    assert got == reference_runs[which]
    if setup.startswith(("lookup", "recycling")):
        assert _run.usage["speculative_proposed"] > 0
    if setup == "preempted":
        assert engine.stats().preemptions > 0
    if setup == "warm_cache":
        assert engine.stats().prefix_cache_nodes > 0
