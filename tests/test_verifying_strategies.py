"""self-verify and smc on a tiny model through the real engine: they run, account, replay exactly;
smc's resampling is seeded and systematic, its copies share their parent's prefix."""

import random
from collections import Counter

import pytest

from ponder import Engine
from ponder.errors import InvalidParameterError
from ponder.strategies import EngineBackend, Options, make_strategy
from ponder.strategies.smc import systematic_resample
from ponder.strategies.tool_loop import ToolBackend
from ponder.tasks import load_problems
from strategy_runs import solve
from ponder.tools import get_tools


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    return EngineBackend(Engine.from_pretrained(str(tiny_llama[2])))


@pytest.fixture(scope="module")
def problem():
    return load_problems("arithmetic", difficulty=1, count=1)[0][0]


def test_self_verify_checks_each_distinct_answer_once(tiny, problem):
    out = solve(tiny, problem, "self-verify")
    answers = {a.answer for a in out.attempts if a.answer is not None}
    assert set(out.info["checks"]) == answers
    assert out.usage.requests == 1 + len(answers)  # the samples, then one check per distinct answer (one batch)
    assert all("confirmed" in a.info for a in out.attempts if a.answer is not None)
    again = solve(tiny, problem, "self-verify")
    assert again.info == out.info and [a.token_ids for a in again.attempts] == [a.token_ids for a in out.attempts]


def test_self_verify_prefers_confirmed_answers():
    from ponder.strategies.voting import weighted_vote

    # two votes unconfirmed (0.25 each) lose to one confirmed vote
    assert weighted_vote(["a", "a", "b"], [0.25, 0.25, 1.0])[0] == "b"


def test_systematic_resampling_is_seeded_and_proportional():
    w = [0.1, 0.0, 0.6, 0.3]
    a = systematic_resample(w, 10, random.Random(5))
    assert a == systematic_resample(w, 10, random.Random(5)) and a == sorted(a)
    c = Counter(a)
    assert c[1] == 0 and c[2] == 6 and c[3] == 3 and c[0] == 1
    assert systematic_resample([0.0, 0.0], 2, random.Random(1)) == [0, 1]  # all zero: uniform


@pytest.mark.parametrize("potential", ["likelihood", "tool"])
def test_smc_runs_replays_and_shares_prefixes(tiny, problem, potential):
    backend = ToolBackend(tiny, get_tools("calc")) if potential == "tool" else tiny
    opts = dict(samples=4, max_tokens=16, step_tokens=4, max_steps=4, potential=potential, beta=5.0)
    out = solve(backend, problem, "smc", **opts)
    assert len(out.attempts) == 4 and out.info["steps"] >= 2
    assert out.usage.generated_tokens > 0
    again = solve(backend, problem, "smc", **opts)
    assert [a.token_ids for a in again.attempts] == [a.token_ids for a in out.attempts]
    assert out.info == again.info
    # the continuations find their prefixes in the cache: resampled copies recompute nothing
    assert out.usage.cached_tokens > 0


def test_smc_verifier_potential_needs_a_verifier_suite(tiny, problem):
    with pytest.raises(InvalidParameterError, match="--potential verifier needs"):
        solve(tiny, problem, "smc", potential="verifier")
    p = load_problems("numbers", difficulty=1, count=1)[0][0]
    out = solve(tiny, p, "smc", potential="verifier", step_tokens=4, max_steps=3, max_tokens=12)
    assert len(out.attempts) == 4
    with pytest.raises(InvalidParameterError, match="unknown potential"):
        make_strategy("smc", Options(potential="vibes"))
