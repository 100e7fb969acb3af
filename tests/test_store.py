"""The results store: a run, its problems and samples survive a round trip through SQLite; a damaged or
foreign store, or a damaged row, is a one-line error naming the file; a killed run reads as interrupted."""

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from ponder.cli.main import main

from ponder.errors import PonderError
from ponder.store import RunStore, process
from ponder.store.runs import SCHEMA
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
    with pytest.raises(PonderError, match="is damaged or not a ponder results store"):
        RunStore(str(bad))


def test_default_path_is_under_ponder_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PONDER_HOME", str(tmp_path))
    with RunStore() as store:
        assert store.path == str(tmp_path / "runs.sqlite")


def _store_with_a_run(tmp_path, strategy="majority"):
    """A store holding run 1: two solved problems of a 6-problem run, as `ponder run` writes it."""
    path = str(tmp_path / "runs.sqlite")
    probs, _ = load_problems("arithmetic", count=6)
    config = {"suite": "arithmetic", "difficulty": 1, "problems": 6, "strategy": strategy, "seed": 0,
              "model": "smollm2-135m", "options": {"samples": 2}}
    with RunStore(path) as store:
        rid = store.create_run(config, {"name": "tiny", "sha256": "ab" * 32}, "0.1.0", len(probs))
        store.record(rid, 0, probs[0], _outcome(True), 1.0)
        store.record(rid, 1, probs[1], _outcome(False), 1.0)
        store.set_status(rid, "interrupted")
    return path


def _damage(path, sql, *args):
    db = sqlite3.connect(path)
    with db:
        db.execute(sql, args)
    db.close()


def _cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("sql, what", [
    ("UPDATE runs SET config = '{oops'", "run 1, config: not valid JSON"),
    ("UPDATE runs SET config = '[1, 2]'", "run 1, config: expected a JSON object"),
    ("UPDATE runs SET n_problems = 'six'", "run 1: n_problems 'six' is not a valid value"),
    ("UPDATE runs SET status = 'paused'", "run 1: status 'paused' is not a valid value"),
    ("UPDATE problems SET score = 'high' WHERE idx = 1", "run 1, problem 1: score 'high' is not a number"),
    ("UPDATE problems SET info = 'nope' WHERE idx = 0", "run 1, problem 0 (info): not valid JSON"),
    ("UPDATE samples SET token_ids = '[5, \"x\"]' WHERE problem_idx = 1",
     "run 1, problem 1, sample 0: token_ids is not a list of token ids"),
    ("UPDATE samples SET token_ids = '[5, 6' WHERE problem_idx = 0", "run 1, problem 0, sample 0 (token_ids): not valid"),
])
def test_a_damaged_row_is_a_clear_error_naming_the_store(tmp_path, capsys, sql, what):
    path = _store_with_a_run(tmp_path)
    _damage(path, sql)
    code, _, err = _cli(capsys, "run", "--resume", "1", "--store", path)
    assert code == 2 and f"the results store {path} is damaged: {what}" in err and "Traceback" not in err
    if "runs" in sql or "score" in sql:
        code, _, err = _cli(capsys, "report", "1", "--store", path, "-o", str(tmp_path / "r.png"))
        assert code == 2 and path in err and what in err
    code, out, err = _cli(capsys, "runs", "--store", path)
    assert code == 0 and "arithmetic" in out  # the listing survives one bad row
    assert (path in err) == ("runs" in sql)


@pytest.mark.parametrize("config, message", [
    ({}, "its stored config has no 'suite'"),
    ({"suite": "arithmetic", "difficulty": 1, "problems": 6, "strategy": "greedy", "seed": 0, "model": "m",
      "options": {}}, "its config has strategy 'greedy' but the run was recorded with 'majority'"),
    ({"suite": "arithmetic", "difficulty": "1", "problems": 6, "strategy": "majority", "seed": 0, "model": "m",
      "options": {}}, "has difficulty = '1' (expected int)"),
    ({"suite": "arithmetic", "difficulty": 1, "problems": 6, "strategy": "majority", "seed": 0, "model": "m",
      "options": {}, "temperature": 2}, "unknown field 'temperature'"),
])
def test_a_stored_config_that_does_not_match_its_run_is_not_resumed(tmp_path, capsys, config, message):
    path = _store_with_a_run(tmp_path)
    _damage(path, "UPDATE runs SET config = ?", json.dumps(config))
    code, _, err = _cli(capsys, "run", "--resume", "1", "--store", path)
    assert code == 2 and f"run 1 in {path} cannot be resumed" in err and message in err


def test_a_foreign_or_damaged_database_is_a_clear_error(tmp_path, capsys):
    foreign = str(tmp_path / "foreign.sqlite")
    _damage(foreign, "CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT)")
    for argv in (["runs"], ["report", "1"], ["run", "--resume", "1"]):
        code, _, err = _cli(capsys, *argv, "--store", foreign)
        assert code == 2 and f"{foreign} is not a ponder results store: its table 'runs' has no column" in err
    db = sqlite3.connect(foreign)  # and nothing was written into someone else's file
    assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["runs"]
    db.close()

    path = _store_with_a_run(tmp_path)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:  # keep the header (it still looks like SQLite), scribble over the pages
        f.seek(100)
        f.write(bytes(range(256)) * ((size - 100) // 256))
    for argv in (["runs"], ["report"], ["run", "--resume", "1"]):
        code, _, err = _cli(capsys, *argv, "--store", path)
        assert code == 2 and f"the results store {path} is damaged or not a ponder results store" in err, err

    text = tmp_path / "notes.sqlite"
    text.write_text("just some text\n" * 100)
    code, _, err = _cli(capsys, "runs", "--store", str(text))
    assert code == 2 and f"the results store {text} is damaged or not a ponder results store" in err


def test_a_run_still_running_elsewhere_is_not_resumed(tmp_path, capsys):
    path = _store_with_a_run(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        st = process._stat(other.pid)
        _damage(path, "UPDATE runs SET status = 'running', pid = ?, host = ?, pid_start = ?", other.pid,
                process.identity()["host"], st and st[1])
        code, _, err = _cli(capsys, "run", "--resume", "1", "--store", path)
        assert code == 2 and f"run 1 in {path} is still running (process {other.pid}" in err
        code, out, _ = _cli(capsys, "runs", "--store", path)
        assert code == 0 and "running" in out and "interrupted" not in out
    finally:
        other.kill()
        other.wait()
    code, out, _ = _cli(capsys, "runs", "--store", path)
    assert code == 0 and "run 1 was interrupted (its process is gone)" in out


def test_a_store_from_before_pid_tracking_opens(tmp_path):
    path = str(tmp_path / "old.sqlite")
    db = sqlite3.connect(path)
    db.executescript("\n".join(line for line in SCHEMA.splitlines()
                               if not line.strip().startswith(("pid", "host", "pid_start")))
                     .replace("config TEXT NOT NULL,", "config TEXT NOT NULL"))
    db.close()
    with RunStore(path) as store:
        rid = store.create_run({"suite": "arithmetic", "strategy": "greedy"}, {}, "0.1.0", 1)
        assert store.run(rid)["pid"] == os.getpid() and store.run(rid)["status"] == "running"


def test_process_state():
    assert process.state(os.getpid(), process.identity()["host"], process.identity()["start"]) == "alive"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    st = process._stat(child.pid)
    child.kill()
    deadline = time.time() + 10  # SIGKILL lands when the child is next scheduled
    while process.state(child.pid, process.identity()["host"], st and st[1]) != "gone" and time.time() < deadline:
        time.sleep(0.01)
    assert process.state(child.pid, process.identity()["host"], st and st[1]) == "gone"  # a zombie, not reaped
    child.wait()
    assert process.state(child.pid, process.identity()["host"], None) == "gone"
    assert process.state(os.getpid(), "some-other-host", None) == "unknown"


def test_a_run_killed_by_sigkill_shows_as_interrupted_and_resumes(tiny_llama, tmp_path, capsys):
    path = str(tmp_path / "runs.sqlite")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PONDER_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "ponder.cli.main", "run", "-m", str(tiny_llama[2]), "--problems", "4",
           "--max-tokens", "4", "--store", path, "--no-progress"]
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and child.poll() is None:
            if os.path.exists(path):
                with RunStore(path) as store:
                    if store.runs():
                        break
            time.sleep(0.05)
        assert child.poll() is None, child.stderr.read().decode()
    finally:
        child.kill()  # SIGKILL: no chance to record anything
        child.wait()
    with RunStore(path) as store:
        [run] = store.runs()
        assert run["status"] == "interrupted" and run["pid"] == child.pid and run["process"] == "gone"
    code, out, _ = _cli(capsys, "runs", "--store", path)
    assert code == 0 and "interrupted" in out
    assert f"run 1 was interrupted (its process is gone): continue it with `ponder run --resume 1 --store {path}`" in out
    code, _, err = _cli(capsys, "run", "--resume", "1", "--store", path, "--no-progress")
    assert code == 0, err
    with RunStore(path) as store:
        assert store.run(1)["status"] == "done" and store.done_indices(1) == {0, 1, 2, 3}


def test_compile_time_is_kept_apart_from_the_speed(tmp_path):
    """The first run on a machine compiles kernels: the summary shows that time in the wall column
    and leaves it out of tokens/s."""
    import io

    from rich.console import Console

    from ponder.report import summary_table

    probs, _ = load_problems("arithmetic", count=2)
    with RunStore(str(tmp_path / "runs.sqlite")) as store:
        rid = store.create_run({"suite": "arithmetic", "difficulty": 1, "strategy": "greedy", "options": {}}, {"name": "tiny", "sha256": "ab" * 32}, "0.1.0", 2)
        first = _outcome(True)
        first.info["compile_s"] = 3.0
        store.record(rid, 0, probs[0], first, 4.0)   # 1 s of decoding, 3 s of compiling
        store.record(rid, 1, probs[1], _outcome(True), 1.0)
        summary = store.summary(rid)
    assert summary["wall_s"] == 5.0 and summary["compile_s"] == 3.0
    out = io.StringIO()
    Console(file=out, width=250).print(summary_table([summary]))
    text = out.getvalue()
    assert "5.0s (3s compiling)" in text
    assert "6.0" in text.split("compiling)")[1]   # 12 generated tokens in 2 s, not in 5 s
