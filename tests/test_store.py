"""The results store: a run, its problems and samples survive a round trip through SQLite."""

import pytest

from ponder.errors import PonderError
from ponder.store import RunStore
from ponder.strategies import Attempt, Outcome, Usage
from ponder.tasks import load_problems


def _outcome(correct):
    atts = [Attempt(0, [5, 6, 7], "3 + 5 = 8", "8", correct, 4, -0.25, "eos", selected=True, info={"score": 1.5}),
            Attempt(1, [9], "nine", None, False, 2, float("-inf"), "length")]
    return Outcome("8", float(correct), atts, Usage(requests=1, prompt_tokens=30, cached_tokens=10, forked_tokens=30,
                                                    generated_tokens=6), info={"votes": {"8": 1}})


def test_round_trip(tmp_path):
    path = str(tmp_path / "runs.sqlite")
    probs, _ = load_problems("arithmetic", count=2)
    config = {"suite": "arithmetic", "difficulty": 1, "strategy": "majority", "options": {"samples": 2}}
    with RunStore(path) as store:
        rid = store.create_run(config, {"name": "tiny", "sha256": "ab" * 32}, "0.1.0", len(probs))
        store.record(rid, 0, probs[0], _outcome(True), 1.25)
        store.record(rid, 1, probs[1], _outcome(False), 0.75)
        store.set_status(rid, "done")
    with RunStore(path) as store:  # reopened from disk
        run = store.run(rid)
        assert run["config"] == config and run["model_sha256"] == "ab" * 32 and run["status"] == "done"
        assert run["ponder_version"] == "0.1.0"
        assert store.done_indices(rid) == {0, 1}
        p0, p1 = store.problems(rid)
        assert p0["question"] == probs[0].question and p0["reference"] == probs[0].answer and p0["score"] == 1.0
        assert p1["coverage"] == 0 and p0["info"]["votes"] == {"8": 1} and p0["info"]["pass_at_k"] == {"1": 0.5, "2": 1.0}
        samples = store.samples(rid, 0)
        assert samples[0]["token_ids"] == [5, 6, 7] and samples[0]["selected"] == 1 and samples[0]["answer"] == "8"
        assert samples[1]["mean_logprob"] is None and samples[0]["info"] == {"score": 1.5}
        s = store.summary(rid)
        assert s["done"] == 2 and s["accuracy"] == 0.5 and s["generated_tokens"] == 12 and s["saved_tokens"] == 80
        assert s["wall_s"] == 2.0 and s["samples"] == 4
        [listed] = store.runs()
        assert listed["id"] == rid and listed["done"] == 2 and listed["accuracy"] == 0.5


def test_recording_a_problem_again_replaces_it(tmp_path):
    probs, _ = load_problems("arithmetic", count=1)
    with RunStore(str(tmp_path / "r.sqlite")) as store:
        rid = store.create_run({"suite": "arithmetic", "strategy": "greedy"}, {}, "0.1.0", 1)
        store.record(rid, 0, probs[0], _outcome(False), 1.0)
        store.record(rid, 0, probs[0], _outcome(True), 1.0)
        assert [p["score"] for p in store.problems(rid)] == [1.0] and len(store.samples(rid)) == 2


def test_missing_run_and_bad_file(tmp_path):
    with RunStore(str(tmp_path / "r.sqlite")) as store:
        with pytest.raises(PonderError, match="no run 7"):
            store.run(7)
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(PonderError, match="cannot open the results store"):
        RunStore(str(bad))


def test_default_path_is_under_ponder_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PONDER_HOME", str(tmp_path))
    with RunStore() as store:
        assert store.path == str(tmp_path / "runs.sqlite")
