"""`ponder run`, `runs` and `report` end to end: the store, resume after Ctrl-C, and the PNG."""

import json

import pytest

from ponder import Engine
from ponder.cli.main import main
from ponder.errors import PonderError
from ponder.report import pareto_front, plot_runs, select_runs
from ponder.runner import Interrupted, RunConfig, execute
from ponder.store import RunStore
from ponder.strategies import EngineBackend


def test_pareto_front():
    pts = [(10, 50), (20, 40), (30, 70), (5, 20), (30, 60), (100, 70)]
    assert pareto_front(pts) == [(5, 20), (10, 50), (30, 70)]


def test_run_runs_report_on_a_tiny_model(tiny_llama, tmp_path, capsys, monkeypatch):
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
    capsys.readouterr()
    # bare `ponder report`: the latest run and the other runs of its task, into a default file
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "greedy" in out and "majority n=3" in out and "wrote ponder-report-1-2.png" in out
    assert (tmp_path / "ponder-report-1-2.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["report", "--last", "1", "--store", store]) == 0
    assert "wrote ponder-report-2.png" in capsys.readouterr().out


def _listed(i, suite, difficulty=1, done=3, damaged=False):
    r = {"id": i, "suite": suite, "difficulty": difficulty, "done": done, "strategy": "greedy", "config": {}}
    return {**r, "damaged": "bad"} if damaged else r


def test_which_runs_a_report_covers():
    runs = [_listed(6, "arithmetic", done=0), _listed(5, "arithmetic", damaged=True), _listed(4, "arithmetic", 2),
            _listed(3, "algorithmic"), _listed(2, "arithmetic", 2), _listed(1, "data/q.jsonl")]  # newest first
    assert select_runs(runs, [], None, "s") == [2, 4]  # run 6 has nothing finished yet
    assert select_runs(runs, [], 3, "s") == [3, 4, 6]  # the 3 latest that can be read
    assert select_runs(runs, [3, 1, 3], None, "s") == [3, 1]
    assert select_runs([_listed(7, "/y/q.jsonl"), _listed(1, "/x/q.jsonl")], [], None, "s") == [7]
    with pytest.raises(PonderError, match="not both"):
        select_runs(runs, [1], 2, "s")
    with pytest.raises(PonderError, match="--last must be at least 1"):
        select_runs(runs, [], 0, "s")
    with pytest.raises(PonderError, match="no run in s has a finished problem"):
        select_runs([_listed(1, "arithmetic", done=0)], [], None, "s")


def test_plot_writes_png(tmp_path):
    rows = [{"id": i, "done": 4, "generated_tokens": t, "accuracy": a, "coverage": c, "strategy": s,
             "config": {"options": {"samples": 4}}, "suite": "arithmetic", "difficulty": 1, "model": "tiny"}
            for i, (t, a, c, s) in enumerate([(40, 0.5, 0.5, "greedy"), (160, 0.75, 1.0, "majority"),
                                               (120, 0.5, 1.0, "short-m@k")], 1)]
    path = plot_runs(rows, str(tmp_path / "sub" / "p.png"))
    with open(path, "rb") as f:
        assert f.read(4) == b"\x89PNG"
    (tmp_path / "file").write_text("")
    with pytest.raises(PonderError, match="cannot write the plot"):
        plot_runs(rows, str(tmp_path / "file" / "p.png"))


def _summaries(points):
    return [{"id": i, "done": 20, "generated_tokens": 20 * t, "accuracy": a, "coverage": c, "strategy": s,
             "config": {"options": {"samples": 8}}, "suite": "arithmetic", "difficulty": 2, "model": "smollm2-135m",
             "created": 1.7e9 + i} for i, (t, a, c, s) in enumerate(points, 1)]


@pytest.mark.parametrize("spread", [1.0, 1.3, 40])  # one point, a linear and a log x axis
def test_plot_is_readable(spread):
    """Labels overlap no other label, tick labels do not collide, the legend covers no point."""
    import random

    from ponder.report.plot import figure

    rng = random.Random(0)
    strategies = ["greedy", "sample", "majority", "adaptive-majority", "short-m@k", "best-of-n", "beam"]
    pts = [(100 * spread ** rng.random(), rng.choice([0.2, 0.25, 0.3, rng.random()]), 0.6, rng.choice(strategies))
           for _ in range(14)]
    pts += [pts[0], pts[1]]  # runs that coincide share one label
    fig = figure(_summaries(pts))
    try:
        ax = fig.axes[0]
        r = fig.canvas.get_renderer()
        labels = [t.get_window_extent(r) for t in ax.texts]
        texts = [t.get_text() for t in ax.texts]
        assert len(texts) == len({(x, a) for x, a, _, _ in pts}) and any(t.startswith("#1,") for t in texts)
        for i, a in enumerate(labels):
            assert not any(a.overlaps(b) for b in labels[i + 1:]), texts
        lo, hi = ax.get_xlim()
        shown = [t for t in ax.get_xticklabels() if t.get_text() and lo <= t.get_position()[0] <= hi]
        ticks = [t.get_window_extent(r) for t in shown]
        assert len(ticks) >= 2 and not any(a.overlaps(b) for i, a in enumerate(ticks) for b in ticks[i + 1:])
        assert len({t.get_text() for t in shown}) == len(shown)  # no two ticks read the same
        assert not ax.get_legend().get_window_extent(r).overlaps(ax.get_window_extent(r))
        assert "arithmetic d2" in fig.texts[0].get_text() or "arithmetic d2" in fig._suptitle.get_text()
        assert "smollm2-135m" in fig._suptitle.get_text()
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


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
