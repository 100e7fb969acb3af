"""The Token Recycling prior (engine/recycling_prior.py): built once, read from its cache file while the
model file is the same, rebuilt (never trusted) when the model file changed or the cache file is corrupt;
and a request that starts from it gets the same tokens and logprobs as without speculation (tiny model)."""

import os
import shutil

import numpy as np
import pytest

from ponder import Engine, SamplingParams
from ponder.engine import recycling_prior
from ponder.engine.speculative import DEFAULTS
from ponder.engine.token_recycling import K
from ponder.loading.model_files import load_model

PROMPTS = ([40, 41, 42, 43, 44] * 3, [7, 8, 9, 10] * 4, [100 + i for i in range(12)])


@pytest.fixture
def tiny_copy(tiny_llama, tmp_path, monkeypatch):
    """A private copy of the tiny model's file (the test changes it) and a private $PONDER_HOME."""
    monkeypatch.setenv("PONDER_HOME", str(tmp_path / "home"))
    path = tmp_path / "tiny.gguf"
    shutil.copy(tiny_llama[2], path)
    return path


def _load(path, said):
    recycling_prior.notice[:] = [said.append]
    try:
        return recycling_prior.load_or_build(load_model(str(path)), 16, None, K, PROMPTS, max_tokens=12)
    finally:
        recycling_prior.notice[:] = []


def test_prior_is_cached_and_rebuilt_when_stale_or_corrupt(tiny_copy, monkeypatch):
    said = []
    table, status = _load(tiny_copy, said)
    assert status == "built" and len(said) == 2 and "(empty before)" in said[1]
    assert table.shape[1] == K and not table.flags.writeable
    for p in PROMPTS:  # every prompt's last token has successors: the first answer token's alternatives
        assert (table[p[-1]] >= 0).all()

    # the same file again: read, not rebuilt
    build = recycling_prior.build
    monkeypatch.setattr(recycling_prior, "build", lambda *a, **k: pytest.fail("rebuilt a valid prior"))
    again, status = _load(tiny_copy, said)
    assert status == "hit" and len(said) == 2
    np.testing.assert_array_equal(again, table)
    monkeypatch.setattr(recycling_prior, "build", build)

    # a corrupt cache file (one flipped byte in the table) is rebuilt
    path = recycling_prior.cache_path(str(tiny_copy), 16)
    blob = bytearray(open(path, "rb").read())
    blob[-5] ^= 0x40
    open(path, "wb").write(bytes(blob))
    rebuilt, status = _load(tiny_copy, said)
    assert status == "built" and "(corrupt before)" in said[-1]
    np.testing.assert_array_equal(rebuilt, table)  # the model's greedy answers: the same table

    # a truncated one too
    open(path, "wb").write(bytes(blob[:40]))
    assert _load(tiny_copy, said)[1] == "built" and "(corrupt before)" in said[-1]

    # the model file changed (its identity includes the mtime): stale, rebuilt and replaced
    st = os.stat(tiny_copy)
    os.utime(tiny_copy, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert _load(tiny_copy, said)[1] == "built" and "(stale before)" in said[-1]
    assert _load(tiny_copy, said)[1] == "hit"


@pytest.mark.parametrize("params", [SamplingParams(temperature=0, max_tokens=30, ignore_eos=True, logprobs=2),
                                    SamplingParams(temperature=0.8, seed=3, max_tokens=30, ignore_eos=True, n=2)],
                         ids=["greedy", "seeded_n2"])
def test_starting_from_the_prior_changes_no_token(tiny_copy, params):
    model = load_model(str(tiny_copy))
    table, _ = recycling_prior.load_or_build(model, 16, None, K, PROMPTS, max_tokens=12)
    spec = Engine(model, speculative="recycling", speculative_max_batch=8, kv_blocks=64)
    spec._scheduler.speculative_prior = table  # a test model gets no prior by itself (too small to pay)
    plain = Engine(model, kv_blocks=64)
    for batch in ([list(PROMPTS[0])], [list(p) for p in PROMPTS]):
        a, b = spec.generate(batch, params), plain.generate(batch, params)
        for x, y in zip(a, b):
            for sx, sy in zip(x.outputs, y.outputs):
                assert sx.token_ids == sy.token_ids and sx.logprobs == sy.logprobs
                assert sx.top_logprobs == sy.top_logprobs
        assert sum(x.usage["speculative_accepted"] for x in a) > 0
    np.testing.assert_array_equal(table, recycling_prior.load_or_build(model, 16, None, K, PROMPTS, 12)[0])
    assert spec.info().speculative_prior == "none" and spec.stats().kv_blocks_used == 0


def test_each_mode_has_its_measured_defaults(tiny_llama):
    model = load_model(str(tiny_llama[2]))
    for mode, want in DEFAULTS.items():
        info = Engine(model, speculative=mode, kv_blocks=8).info()
        assert (info.speculative, info.speculative_tokens) == (mode, want[0])
    assert Engine(model, speculative="recycling", speculative_tokens=5, kv_blocks=8).info().speculative_tokens == 5
