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


@pytest.mark.parametrize("field,value", [
    ("temperature", float("nan")), ("temperature", float("inf")), ("temperature", -1.0), ("temperature", "hot"),
    ("temperature", 10**400), ("top_p", float("nan")), ("top_p", 0.0), ("top_p", 1.5), ("min_p", -0.1),
    ("min_p", float("inf")), ("top_k", -1), ("top_k", 1.5), ("max_tokens", -1), ("max_tokens", True),
    ("n", 0), ("n", 10**6), ("first_sample", 2**64), ("first_sample", 1180591620717411303424),
    ("first_sample", -1), ("seed", 2**63), ("seed", -1), ("seed", 1.5), ("logprobs", 21), ("logprobs", -1),
    ("stop", [1]), ("stop_token_ids", [-3]), ("stop_token_ids", "x"), ("ignore_eos", "yes"),
])
def test_sampling_params_extremes_are_refused_naming_the_field(field, value):
    from ponder.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError) as e:
        SamplingParams(**{field: value})
    assert e.value.param == field and field in str(e.value)


def test_tiny_temperature_is_greedy_and_non_finite_logits_are_an_error():
    from ponder.errors import SamplingError

    rng = np.random.default_rng(0)
    logits = rng.standard_normal(1000).astype(np.float32)
    for t in (1e-30, 1e-40, 5e-324):
        for extra in ({}, {"min_p": 0.5}, {"top_p": 0.5}, {"top_k": 5}):
            p = SamplingParams(temperature=t, seed=3, **extra)
            assert sampler.sample_token(logits, p, 0, 7) == int(np.argmax(logits))
    huge = SamplingParams(temperature=1e300, seed=3)  # the other limit: uniform, still a real token
    assert 0 <= sampler.sample_token(logits, huge, 0, 7) < 1000
    bad = logits.copy()
    bad[3] = np.nan
    for p in (SamplingParams(temperature=0), SamplingParams(temperature=1e-40, seed=1), SamplingParams(seed=1)):
        with pytest.raises(SamplingError):
            sampler.sample_token(bad, p, 0, 7)


def test_token_logprob_is_log_softmax_at_the_token_bit_for_bit():
    rng = np.random.default_rng(3)
    for scale in (0.1, 5.0, 40.0):
        logits = (rng.standard_normal(5003) * scale).astype(np.float32)
        lp = sampler.log_softmax(logits)
        for t in list(range(0, 5003, 97)) + [int(np.argmax(logits))]:
            assert sampler.token_logprob(logits, t) == float(lp[t])
