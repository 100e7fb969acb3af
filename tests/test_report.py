"""`ponder run`, `runs` and `report` end to end: the store, resume after Ctrl-C, and the PNG."""

import json

import pytest

from ponder import Engine
from ponder.cli.main import main
from ponder.report import pareto_front, plot_runs
from ponder.runner import Interrupted, RunConfig, execute
from ponder.store import RunStore
from ponder.strategies import EngineBackend


def test_pareto_front():
    pts = [(10, 50), (20, 40), (30, 70), (5, 20), (30, 60), (100, 70)]
    assert pareto_front(pts) == [(5, 20), (10, 50), (30, 70)]


def test_run_runs_report_on_a_tiny_model(tiny_llama, tmp_path, capsys):
    store = str(tmp_path / "runs.sqlite")
    base = ["run", "-m", str(tiny_llama[2]), "--problems", "3", "--max-tokens", "6", "--store", store, "--no-progress"]
    assert main(base + ["--strategy", "greedy"]) == 0
    assert main(base + ["--strategy", "majority", "--samples", "3"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "saved by reuse" in out and "run 2:" in out
    assert main(["runs", "--store", store, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["strategy"] for r in runs] == ["majority", "greedy"] and all(r["done"] == 3 for r in runs)
    png = tmp_path / "report.png"
    assert main(["report", "1", "2", "--store", store, "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_plot_writes_png(tmp_path):
    rows = [{"id": i, "done": 4, "generated_tokens": t, "accuracy": a, "coverage": c, "strategy": s,
             "config": {"options": {"samples": 4}}, "suite": "arithmetic", "difficulty": 1, "model": "tiny"}
            for i, (t, a, c, s) in enumerate([(40, 0.5, 0.5, "greedy"), (160, 0.75, 1.0, "majority"),
                                               (120, 0.5, 1.0, "short-m@k")], 1)]
    path = plot_runs(rows, str(tmp_path / "sub" / "p.png"))
    with open(path, "rb") as f:
        assert f.read(4) == b"\x89PNG"


def test_interrupted_run_keeps_finished_problems_and_resumes(tiny_llama, tmp_path):
    backend = EngineBackend(Engine.from_pretrained(str(tiny_llama[2])))
    config = RunConfig(suite="algorithmic", problems=3, strategy="sample", model=str(tiny_llama[2]),
                       options={"samples": 2, "max_tokens": 5})
    store = RunStore(str(tmp_path / "runs.sqlite"))

    def ctrl_c_after_first(done, total, stats):
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="--resume 1"):
        execute(config, backend, store, on_progress=ctrl_c_after_first)
    assert store.run(1)["status"] == "interrupted" and store.done_indices(1) == {0}
    execute(config, backend, store, run_id=1)
    assert store.run(1)["status"] == "done" and store.done_indices(1) == {0, 1, 2}
    whole = execute(config, backend, store)  # the same run uninterrupted gives the same samples
    assert [s["token_ids"] for s in store.samples(whole)] == [s["token_ids"] for s in store.samples(1)]


def test_bad_input_is_one_line(tmp_path, capsys):
    store = ["--store", str(tmp_path / "r.sqlite")]
    assert main(["run", "--suite", "gsm9k", *store]) == 2
    assert "valid: arithmetic, algorithmic" in capsys.readouterr().err
    assert main(["run", "--strategy", "mcts", *store]) == 2
    assert "valid: greedy, sample, majority" in capsys.readouterr().err
    bad = tmp_path / "d.jsonl"
    bad.write_text('{"question": "a", "answer": 1}\n{oops\n')
    assert main(["run", "--suite", str(bad), *store]) == 2
    assert "d.jsonl:2: not valid JSON" in capsys.readouterr().err
    assert main(["run", "--resume", "42", *store]) == 2
    assert "no run 42" in capsys.readouterr().err


@pytest.mark.real_model
def test_default_model_greedy_run(default_model_path, tmp_path, capsys):
    store = str(tmp_path / "runs.sqlite")
    assert main(["run", "--suite", "arithmetic", "--difficulty", "1", "--problems", "3", "--strategy", "greedy",
                 "--store", store, "--no-progress"]) == 0
    s = RunStore(store).summary(1)
    assert s["done"] == 3 and s["accuracy"] > 0  # SmolLM2-135M gets "What is 1 + 9?" right
