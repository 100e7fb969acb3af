"""Rich tables: the list of runs, and the summary of one or more runs side by side."""

from __future__ import annotations

from rich.table import Table

from ponder.report.labels import run_label, task_label, when


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def runs_table(runs: list[dict]) -> Table:
    t = Table(title="runs")
    for col in ("id", "when", "status", "task", "strategy", "model", "done", "accuracy", "coverage", "gen tokens"):
        t.add_column(col, justify="right" if col in ("id", "done", "accuracy", "coverage", "gen tokens") else "left")
    for r in runs:
        total = "?" if r["n_problems"] is None else r["n_problems"]  # None: a damaged row (see RunStore.runs)
        t.add_row(str(r["id"]), when(r["created"]), r["status"], task_label(r), run_label(r), r["model"],
                  f"{r['done']}/{total}", _pct(r["accuracy"]), _pct(r["coverage"]), str(r["generated_tokens"]))
    return t


def summary_table(summaries: list[dict], title: str = "results") -> Table:
    t = Table(title=title)
    cols = ("run", "task", "strategy", "problems", "accuracy", "coverage", "gen tokens", "tokens/problem",
            "tool tokens", "saved by reuse", "wall", "tokens/s")
    for col in cols:
        t.add_column(col, justify="left" if col in ("task", "strategy") else "right")
    for s in summaries:
        done = s["done"] or 0
        wall = s["wall_s"] or 0.0
        compiling = min(wall, s.get("compile_s") or 0.0)  # the first run on a machine compiles kernels
        running = wall - compiling
        wall_text = f"{wall:.1f}s" + (f" ({compiling:.0f}s compiling)" if compiling >= 0.5 else "")
        t.add_row(str(s["id"]), task_label(s), run_label(s), f"{done}/{s['n_problems']}", _pct(s["accuracy"]),
                  _pct(s["coverage"]), str(s["generated_tokens"]),
                  f"{s['generated_tokens'] / done:.1f}" if done else "-", str(s.get("tool_tokens") or 0),
                  str(s["saved_tokens"]), wall_text, f"{s['generated_tokens'] / running:.1f}" if running > 0 else "-")
    return t
