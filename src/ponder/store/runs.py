"""RunStore: runs, their problems and samples in SQLite.

One row per run (its config, the model's name and sha256, the ponder version, its status),
one per solved problem (answer, score, compute, wall time) and one per sample (tokens,
extracted answer, correctness, compute).  A problem is written in one transaction when it is
solved, so an interrupted run keeps everything that finished and can be resumed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time

from ponder.errors import PonderError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    status TEXT NOT NULL,             -- running | interrupted | done | failed
    suite TEXT NOT NULL,
    difficulty INTEGER,
    strategy TEXT NOT NULL,
    n_problems INTEGER NOT NULL,
    model TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    ponder_version TEXT NOT NULL,
    config TEXT NOT NULL              -- JSON: everything needed to resume the run
);
CREATE TABLE IF NOT EXISTS problems (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    problem_id TEXT NOT NULL,
    category TEXT,
    question TEXT NOT NULL,
    reference TEXT NOT NULL,
    answer TEXT,
    score REAL NOT NULL,              -- 1/0, or the mean correctness of the samples (strategy sample)
    coverage INTEGER NOT NULL,        -- any sample correct
    n_samples INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    forked_tokens INTEGER NOT NULL,
    generated_tokens INTEGER NOT NULL,
    wall_s REAL NOT NULL,
    info TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
);
CREATE TABLE IF NOT EXISTS samples (
    run_id INTEGER NOT NULL,
    problem_idx INTEGER NOT NULL,
    sample_idx INTEGER NOT NULL,
    token_ids TEXT NOT NULL,          -- JSON list
    text TEXT NOT NULL,
    answer TEXT,
    correct INTEGER NOT NULL,
    generated_tokens INTEGER NOT NULL,
    mean_logprob REAL,
    finish_reason TEXT,
    selected INTEGER NOT NULL,
    info TEXT NOT NULL,
    PRIMARY KEY (run_id, problem_idx, sample_idx),
    FOREIGN KEY (run_id, problem_idx) REFERENCES problems(run_id, idx) ON DELETE CASCADE
);
"""


def default_path() -> str:
    from ponder.loading.registry import ponder_home

    return os.path.join(ponder_home(), "runs.sqlite")


class RunStore:
    def __init__(self, path: str | None = None):
        self.path = path or default_path()
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise PonderError(f"cannot open the results store {self.path}: {e}") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- runs ---------------------------------------------------------------
    def create_run(self, config: dict, model: dict, version: str, n_problems: int) -> int:
        now = time.time()
        with self.db:
            cur = self.db.execute(
                "INSERT INTO runs (created, updated, status, suite, difficulty, strategy, n_problems, model, "
                "model_sha256, ponder_version, config) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)",
                (now, now, config["suite"], config.get("difficulty"), config["strategy"], n_problems,
                 model.get("name", ""), model.get("sha256", ""), version, json.dumps(config, sort_keys=True)))
        return cur.lastrowid

    def set_status(self, run_id: int, status: str) -> None:
        with self.db:
            self.db.execute("UPDATE runs SET status = ?, updated = ? WHERE id = ?", (status, time.time(), run_id))

    def run(self, run_id: int) -> dict:
        row = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise PonderError(f"no run {run_id} in {self.path} (see `ponder runs`)")
        d = dict(row)
        d["config"] = json.loads(d["config"])
        return d

    def runs(self) -> list[dict]:
        """Every run with its totals so far, newest first."""
        rows = self.db.execute(
            "SELECT r.*, COUNT(p.idx) AS done, AVG(p.score) AS accuracy, AVG(p.coverage) AS coverage, "
            "COALESCE(SUM(p.generated_tokens), 0) AS generated_tokens, COALESCE(SUM(p.wall_s), 0) AS wall_s "
            "FROM runs r LEFT JOIN problems p ON p.run_id = r.id GROUP BY r.id ORDER BY r.id DESC").fetchall()
        out = []
        for row in rows:
            d = dict(row)
            d["config"] = json.loads(d["config"])
            out.append(d)
        return out

    def summary(self, run_id: int) -> dict:
        """The run and its totals: accuracy, coverage, tokens, reuse, wall time."""
        run = self.run(run_id)
        row = self.db.execute(
            "SELECT COUNT(*) AS done, AVG(score) AS accuracy, AVG(coverage) AS coverage, "
            "COALESCE(SUM(generated_tokens), 0) AS generated_tokens, COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens, "
            "COALESCE(SUM(cached_tokens), 0) AS cached_tokens, COALESCE(SUM(forked_tokens), 0) AS forked_tokens, "
            "COALESCE(SUM(n_samples), 0) AS samples, COALESCE(SUM(wall_s), 0) AS wall_s, "
            "COALESCE(SUM(json_extract(info, '$.tool_tokens')), 0) AS tool_tokens, "
            "COALESCE(SUM(json_extract(info, '$.tool_calls')), 0) AS tool_calls "
            "FROM problems WHERE run_id = ?", (run_id,)).fetchone()
        run.update(dict(row))
        run["saved_tokens"] = run["cached_tokens"] + run["forked_tokens"]
        return run

    # -- problems and samples -----------------------------------------------
    def record(self, run_id: int, idx: int, problem, outcome, wall_s: float) -> None:
        """One solved problem and its samples, in one transaction."""
        u = outcome.usage
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO problems VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, idx, problem.id, problem.category, problem.question, problem.answer, outcome.answer,
                 outcome.score, int(outcome.coverage), len(outcome.attempts), u.requests, u.prompt_tokens,
                 u.cached_tokens, u.forked_tokens, u.generated_tokens, wall_s,
                 json.dumps({**outcome.info, "pass_at_k": outcome.pass_at_k, "usage_estimated": u.estimated,
                             **({"tool_tokens": u.tool_tokens, "tool_calls": u.tool_calls} if u.tool_calls else {})},
                            default=str)))
            self.db.execute("DELETE FROM samples WHERE run_id = ? AND problem_idx = ?", (run_id, idx))
            self.db.executemany(
                "INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, idx, a.index, json.dumps(a.token_ids), a.text, a.answer, int(a.correct), a.generated_tokens,
                  a.mean_logprob if a.mean_logprob != float("-inf") else None, a.finish_reason, int(a.selected),
                  json.dumps(a.info, default=str)) for a in outcome.attempts])
            self.db.execute("UPDATE runs SET updated = ? WHERE id = ?", (time.time(), run_id))

    def done_indices(self, run_id: int) -> set[int]:
        return {r[0] for r in self.db.execute("SELECT idx FROM problems WHERE run_id = ?", (run_id,))}

    def problems(self, run_id: int) -> list[dict]:
        rows = self.db.execute("SELECT * FROM problems WHERE run_id = ? ORDER BY idx", (run_id,)).fetchall()
        return [{**dict(r), "info": json.loads(r["info"])} for r in rows]

    def samples(self, run_id: int, problem_idx: int | None = None) -> list[dict]:
        q, args = "SELECT * FROM samples WHERE run_id = ?", [run_id]
        if problem_idx is not None:
            q, args = q + " AND problem_idx = ?", args + [problem_idx]
        rows = self.db.execute(q + " ORDER BY problem_idx, sample_idx", args).fetchall()
        return [{**dict(r), "token_ids": json.loads(r["token_ids"]), "info": json.loads(r["info"])} for r in rows]
