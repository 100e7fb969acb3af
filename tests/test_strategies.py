"""Every strategy on a tiny random model through the real engine, and the voting arithmetic."""

import math
from collections import Counter

import pytest

from ponder import Engine, SamplingParams
from ponder.errors import InvalidParameterError
from ponder.strategies import STRATEGIES, EngineBackend, Judge, Options, derive_seed, make_strategy
from ponder.strategies.voting import leader_confidence, majority, pass_at_k, pass_at_k_table, weighted_vote
from ponder.tasks import load_problems, messages
from strategy_runs import solve


@pytest.fixture(scope="module")
def tiny_backend(tiny_llama):
    return EngineBackend(Engine.from_pretrained(str(tiny_llama[2])))


@pytest.fixture(scope="module")
def problem():
    return load_problems("arithmetic", difficulty=1, count=1)[0][0]


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_each_strategy_runs_and_accounts(tiny_backend, problem, name):
    out = solve(tiny_backend, problem, name)
    assert out.attempts and 0.0 <= out.score <= 1.0
    assert sum(a.selected for a in out.attempts) <= 1
    assert out.usage.generated_tokens > 0 and out.usage.requests >= 1
    assert out.usage.generated_tokens >= sum(a.generated_tokens for a in out.attempts if a.selected)
    assert out.coverage == any(a.correct for a in out.attempts)
    again = solve(tiny_backend, problem, name)  # seeded: the same problem gives the same samples
    assert [a.token_ids for a in again.attempts] == [a.token_ids for a in out.attempts]


def test_greedy_matches_the_engine(tiny_backend, problem):
    out = solve(tiny_backend, problem, "greedy")
    ref = tiny_backend.engine.generate(messages(problem), SamplingParams(temperature=0, max_tokens=12))[0]
    assert out.attempts[0].text == ref.text


def test_samples_fork_from_one_prefill(tiny_backend, problem):
    out = solve(tiny_backend, problem, "sample", samples=6)
    assert len(out.attempts) == 6 and out.usage.requests == 1
    prompt_len = len(tiny_backend.encode_chat(messages(problem)))
    assert out.usage.forked_tokens == 5 * prompt_len
    assert set(out.pass_at_k) == {1, 2, 4, 6}


def test_short_m_at_k_lockstep_equals_uninterrupted_samples(tiny_backend, problem):
    """Continuing a sample round by round draws exactly the tokens of one long request."""
    out = solve(tiny_backend, problem, "short-m@k", samples=3, m=3, chunk=3, max_tokens=10)
    prompt = tiny_backend.encode_chat(messages(problem))
    seed = derive_seed(0, problem.id)
    for a in out.attempts:
        whole = tiny_backend.engine.generate(prompt, SamplingParams(temperature=0.7, max_tokens=10,
                                                                    seed=derive_seed(seed, "sample", a.index)))[0]
        n = len(a.token_ids)
        assert a.token_ids == whole.token_ids[:n]
    assert out.info["rounds"] >= 2
    assert out.usage.cached_tokens > 0  # later rounds reuse the earlier ones


def test_adaptive_majority_stops_when_decided(tiny_backend, problem):
    eager = solve(tiny_backend, problem, "adaptive-majority", samples=8, batch=2, confidence=0.0)
    assert len(eager.attempts) == 2 and eager.info["stopped_early"]
    full = solve(tiny_backend, problem, "adaptive-majority", samples=6, batch=2, confidence=1.0)
    votes = Counter(a.answer for a in full.attempts if a.answer is not None).most_common(2) + [(None, 0)] * 2
    assert len(full.attempts) == 6 or votes[0][1] - votes[1][1] > 6 - len(full.attempts)


def test_adaptive_rounds_are_a_prefix_of_majority(tiny_backend, problem):
    """Round r draws samples r*batch.. of the same seed: the same tokens majority@N draws."""
    maj = solve(tiny_backend, problem, "majority", samples=6)
    ada = solve(tiny_backend, problem, "adaptive-majority", samples=6, batch=2, confidence=1.0)
    assert [a.token_ids for a in ada.attempts] == [a.token_ids for a in maj.attempts[:len(ada.attempts)]]


def test_decided_rule():
    from ponder.strategies.adaptive import _decided

    assert _decided(Counter({"5": 4}), 3) and not _decided(Counter({"5": 4}), 4)
    assert _decided(Counter({"5": 6, "7": 2}), 3) and not _decided(Counter({"5": 6, "7": 3}), 3)
    assert not _decided(Counter(), 0)


def test_best_of_n_selectors(tiny_backend, problem):
    lp = solve(tiny_backend, problem, "best-of-n", select="logprob")
    chosen = next(a for a in lp.attempts if a.selected)
    assert chosen.mean_logprob == max(a.mean_logprob for a in lp.attempts)
    oracle = solve(tiny_backend, problem, "best-of-n", select="oracle")
    assert oracle.score == float(oracle.coverage)
    # weighted: the chosen answer has the largest exp(mean logprob) total over distinct paths
    weighted = solve(tiny_backend, problem, "best-of-n", select="weighted", samples=8, max_tokens=16)
    judge, seen, totals = Judge(problem), set(), {}
    for a in weighted.attempts:
        key = judge.key(a.answer) if tuple(a.token_ids) not in seen else None
        seen.add(tuple(a.token_ids))
        if key is not None:
            totals[key] = totals.get(key, 0.0) + (math.exp(a.mean_logprob) if a.token_ids else 0.0)
    chosen = next(a for a in weighted.attempts if a.selected)
    if totals:
        assert totals[judge.key(chosen.answer)] == max(totals.values())
    else:  # no sample gave an answer: the first is shown
        assert chosen is weighted.attempts[0]
    with pytest.raises(InvalidParameterError, match="valid: oracle, logprob, weighted"):
        make_strategy("best-of-n", Options(select="longest"))


def test_beam_rejects_early_and_takes_a_user_scorer(tiny_backend, problem):
    out = solve(tiny_backend, problem, "beam", beam_width=2, expand=6, probe_tokens=2, step_tokens=5,
                 max_steps=2, keep=0.5, temperature=1.5)
    assert out.info["rejected_early"] > 0
    scores = [a.info["score"] for a in out.attempts]
    assert scores == sorted(scores, reverse=True) and out.attempts[0].selected
    seen = []

    def shortest(question, partial):
        seen.append(question)
        return -len(partial)

    out = solve(tiny_backend, problem, "beam", beam_width=1, expand=2, probe_tokens=2, step_tokens=4, max_steps=2,
                 scorer=shortest)
    assert seen and seen[0] == problem.question
    assert out.attempts[0].info["score"] == -len(out.attempts[0].text)


def test_unknown_strategy_lists_the_valid_ones():
    with pytest.raises(InvalidParameterError, match="valid: greedy, sample, majority, adaptive-majority"):
        make_strategy("tree-of-thought")


def test_voting_arithmetic():
    assert majority(["8", None, "3", "8", "3"]) == ("8", Counter({"8": 2, "3": 2}))
    assert majority([None, None])[0] is None
    assert weighted_vote(["a", "b", "b"], [0.9, 0.3, 0.3])[0] == "a"
    assert pass_at_k(10, 0, 3) == 0.0 and pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25) and pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(5, 3, 3) == 1.0  # fewer wrong samples than k
    assert pass_at_k_table(8, 2) == pytest.approx({1: 0.25, 2: 1 - 15 / 28, 4: 1 - 15 / 70, 8: 1.0})
    assert leader_confidence(Counter({"8": 4})) == pytest.approx(31 / 32)
    assert leader_confidence(Counter({"8": 2, "3": 2})) == pytest.approx(0.5)
    assert leader_confidence(Counter()) == 0.0
