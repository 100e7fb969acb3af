"""The sampler: filters do what they say, and draws depend only on (seed, sample, position)."""

import numpy as np
import pytest

from ponder.engine import sampler
from ponder.engine.sampling_params import SamplingParams
from ponder.errors import InvalidParameterError

LOGITS = np.log(np.array([0.5, 0.2, 0.15, 0.1, 0.05], np.float32))


def draws(params, n=4000):
    return np.array([sampler.sample_token(LOGITS, params, 0, pos) for pos in range(n)])


def test_greedy_takes_first_maximum():
    assert sampler.sample_token(np.array([1.0, 3.0, 3.0], np.float32), SamplingParams(temperature=0), 0, 0) == 1


def test_unfiltered_sampling_follows_the_distribution():
    counts = np.bincount(draws(SamplingParams(seed=1)), minlength=5) / 4000
    np.testing.assert_allclose(counts, [0.5, 0.2, 0.15, 0.1, 0.05], atol=0.03)


def test_top_k_top_p_min_p_restrict_support():
    assert set(draws(SamplingParams(seed=2, top_k=2), 500)) <= {0, 1}
    # 0.5 + 0.2 = 0.7 reaches top_p=0.7: tokens 0 and 1 only
    assert set(draws(SamplingParams(seed=3, top_p=0.7), 500)) <= {0, 1}
    assert set(draws(SamplingParams(seed=3, top_p=0.71), 2000)) == {0, 1, 2}
    # min_p 0.29 keeps tokens with p >= 0.145: 0, 1, 2; min_p 0.35 keeps p >= 0.175: 0, 1
    assert set(draws(SamplingParams(seed=4, min_p=0.29), 2000)) == {0, 1, 2}
    assert set(draws(SamplingParams(seed=4, min_p=0.35), 2000)) == {0, 1}


def test_top_p_over_a_large_vocabulary_uses_the_whole_distribution():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(50000).astype(np.float32) * 2
    p = np.exp(logits - logits.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    nucleus = set(order[: np.searchsorted(np.cumsum(p[order]), 0.5) + 1])
    got = {sampler.sample_token(logits, SamplingParams(seed=5, top_p=0.5), 0, i) for i in range(300)}
    assert got <= nucleus


def test_draws_are_keyed_by_seed_sample_and_position():
    u = sampler.uniform
    assert u(7, 0, 10) == u(7, 0, 10)
    assert len({u(7, 0, 10), u(7, 1, 10), u(7, 0, 11), u(8, 0, 10)}) == 4


def test_temperature_sharpens():
    hot = np.bincount(draws(SamplingParams(seed=6, temperature=2.0)), minlength=5)[0]
    cold = np.bincount(draws(SamplingParams(seed=6, temperature=0.3)), minlength=5)[0]
    assert cold > hot


@pytest.mark.parametrize("kwargs,param", [({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"),
                                          ({"n": 0}, "n"), ({"min_p": 2}, "min_p"), ({"max_tokens": -1}, "max_tokens")])
def test_invalid_params_name_the_field(kwargs, param):
    with pytest.raises(InvalidParameterError, match=param) as e:
        SamplingParams(**kwargs)
    assert e.value.param == param
