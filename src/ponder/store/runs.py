"""RunStore: runs, their problems and samples in SQLite.

One row per run (its config, the model's name and sha256, the ponder version, its status),
one per solved problem (answer, score, compute, wall time) and one per sample (tokens,
extracted answer, correctness, compute).  A problem is written in one transaction when it is
solved, so an interrupted run keeps everything that finished and can be resumed.

A run also records the process working on it (PID, host, start time): a run left `running`
by a process that no longer exists (killed) reads back as `interrupted`.

Whatever is read back is checked: a file that is not SQLite or is damaged, tables that are
not ponder's, and rows that do not parse all give a StoreError naming the file, never a
traceback or a silently wrong value.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import time

from ponder.errors import PonderError
from ponder.store import process

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
    config TEXT NOT NULL,             -- JSON: everything needed to resume the run
    pid INTEGER,                      -- the process working on the run, while it is running
    host TEXT,
    pid_start TEXT                    -- that process's start time (tells a reused PID apart)
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


# the columns each table must have; a table of the same name without them is someone else's
COLUMNS = {
    "runs": ("id", "created", "updated", "status", "suite", "difficulty", "strategy", "n_problems", "model",
             "model_sha256", "ponder_version", "config"),
    "problems": ("run_id", "idx", "problem_id", "category", "question", "reference", "answer", "score", "coverage",
                 "n_samples", "requests", "prompt_tokens", "cached_tokens", "forked_tokens", "generated_tokens",
                 "wall_s", "info"),
    "samples": ("run_id", "problem_idx", "sample_idx", "token_ids", "text", "answer", "correct", "generated_tokens",
                "mean_logprob", "finish_reason", "selected", "info"),
}
# added after the first release: older stores get them on open
ADDED_COLUMNS = {"runs": (("pid", "INTEGER"), ("host", "TEXT"), ("pid_start", "TEXT"))}


# the types each runs column holds (None: may be NULL); the config is checked as JSON
RUN_COLUMNS = {"id": (int,), "created": (float, int), "updated": (float, int), "status": (str,), "suite": (str,),
               "difficulty": (int, None), "strategy": (str,), "n_problems": (int,), "model": (str,),
               "model_sha256": (str,), "ponder_version": (str,), "pid": (int, None), "host": (str, None),
               "pid_start": (str, None)}
STATUSES = ("running", "interrupted", "done", "failed")


def _short(v) -> str:
    """A stored value in a message: its repr, cut short (a damaged field can be megabytes)."""
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


class StoreError(PonderError):
    code = "store"


def default_path() -> str:
    from ponder.loading.registry import ponder_home

    return os.path.join(ponder_home(), "runs.sqlite")


def _guarded(method):
    """SQLite errors (not a database, a damaged page, a lock) become a StoreError naming the file."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.DatabaseError, UnicodeDecodeError) as e:  # text that is not UTF-8: a damaged page
            raise self._error(e) from None

    return wrapper


class RunStore:
    def __init__(self, path: str | None = None):
        self.path = path or default_path()
        if os.path.isdir(self.path):
            raise StoreError(f"the results store {self.path} is a directory; give a file (--store FILE)")
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the folder of the results store {self.path}: {e.strerror}") from None
        try:
            self.db = sqlite3.connect(self.path)
        except sqlite3.Error as e:
            raise self._error(e) from None
        try:
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA foreign_keys = ON")
            self._check_tables()
            self.db.executescript(SCHEMA)
            self._add_columns()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
            self.db.close()
            raise self._error(e) from None
        except StoreError:
            self.db.close()
            raise

    def _error(self, e: Exception) -> StoreError:
        msg = "text that is not UTF-8" if isinstance(e, UnicodeDecodeError) else str(e)
        if "not a database" in msg or "malformed" in msg or "corrupt" in msg or "UTF-8" in msg:
            return StoreError(f"the results store {self.path} is damaged or not a ponder results store ({msg}); "
                              f"move it aside to start a new one, or pass another file with --store")
        return StoreError(f"cannot use the results store {self.path}: {msg}")

    def _columns(self, table: str) -> list[str]:
        return [r[1] for r in self.db.execute(f"PRAGMA table_info({table})")]

    def _check_tables(self) -> None:
        """Refuse (before writing anything) a file whose tables of our names are someone else's."""
        for table, need in COLUMNS.items():
            have = self._columns(table)
            if not have:
                continue
            missing = [c for c in need if c not in have]
            if missing:
                raise StoreError(f"{self.path} is not a ponder results store: its table {table!r} has no column "
                                 f"{missing[0]!r} (columns: {', '.join(have)}); pass another file with --store")

    def _add_columns(self) -> None:
        for table, cols in ADDED_COLUMNS.items():
            have = self._columns(table)
            for name, kind in cols:
                if name not in have:
                    with self.db:
                        self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _bad(self, where: str, what: str) -> StoreError:
        return StoreError(f"the results store {self.path} is damaged: {where}: {what}")

    def _json(self, text, where: str, kind: type):
        """A JSON column read back: it must parse and be of the kind written."""
        try:
            value = json.loads(text)
        except (TypeError, ValueError, RecursionError):
            raise self._bad(where, "not valid JSON") from None
        if not isinstance(value, kind):
            raise self._bad(where, f"expected a JSON {'object' if kind is dict else 'list'}")
        return value

    # -- runs ---------------------------------------------------------------
    @_guarded
    def create_run(self, config: dict, model: dict, version: str, n_problems: int) -> int:
        now = time.time()
        me = process.identity()
        with self.db:
            cur = self.db.execute(
                "INSERT INTO runs (created, updated, status, suite, difficulty, strategy, n_problems, model, "
                "model_sha256, ponder_version, config, pid, host, pid_start) "
                "VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now, now, config["suite"], config.get("difficulty"), config["strategy"], n_problems,
                 model.get("name", ""), model.get("sha256", ""), version, json.dumps(config, sort_keys=True),
                 me["pid"], me["host"], me["start"]))
        return cur.lastrowid

    @_guarded
    def set_status(self, run_id: int, status: str) -> None:
        with self.db:
            self.db.execute("UPDATE runs SET status = ?, updated = ? WHERE id = ?", (status, time.time(), run_id))

    @_guarded
    def claim(self, run_id: int) -> None:
        """Mark a run `running` in this process (resuming it)."""
        me = process.identity()
        with self.db:
            self.db.execute("UPDATE runs SET status = 'running', updated = ?, pid = ?, host = ?, pid_start = ? "
                            "WHERE id = ?", (time.time(), me["pid"], me["host"], me["start"], run_id))

    def _run_row(self, row) -> dict:
        """A runs row checked column by column.  A damaged one keeps its message under "damaged" and
        placeholders for what is unreadable ("?" or None), so that it can still be listed."""
        d = dict(row)
        for col, kinds in RUN_COLUMNS.items():
            v = d[col]
            if not any(v is None if k is None else type(v) is k for k in kinds) or \
                    (col == "status" and v not in STATUSES):
                d.setdefault("damaged", str(self._bad(f"run {d['id']}", f"{col} {_short(v)} is not a valid value")))
                d[col] = "?" if str in kinds else None
        try:
            d["config"] = self._json(d["config"], f"run {d['id']}, config", dict)
        except StoreError as e:
            d["config"] = {}
            d.setdefault("damaged", str(e))
        # a run whose process was killed never got to say so
        d["process"] = process.state(d["pid"], d["host"], d["pid_start"]) if d["status"] == "running" else None
        if d["process"] == "gone":
            d["status"] = "interrupted"
        return d

    @_guarded
    def run(self, run_id: int) -> dict:
        """The run row; its config must have been stored intact."""
        row = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id} in {self.path} (see `ponder runs`)")
        d = self._run_row(row)
        if "damaged" in d:
            raise StoreError(d["damaged"])
        return d

    @_guarded
    def runs(self) -> list[dict]:
        """Every run with its totals so far, newest first.  A damaged run is listed with its message under
        "damaged" (see _run_row), so one bad row does not hide the others."""
        rows = self.db.execute(
            "SELECT r.*, COUNT(p.idx) AS done, AVG(p.score) AS accuracy, AVG(p.coverage) AS coverage, "
            "COALESCE(SUM(p.generated_tokens), 0) AS generated_tokens, COALESCE(SUM(p.wall_s), 0) AS wall_s "
            "FROM runs r LEFT JOIN problems p ON p.run_id = r.id GROUP BY r.id ORDER BY r.id DESC").fetchall()
        return [self._run_row(row) for row in rows]

    @_guarded
    def summary(self, run_id: int) -> dict:
        """The run and its totals: accuracy, coverage, tokens, reuse, wall time (and the part of it
        spent compiling kernels, compile_s)."""
        run = self.run(run_id)
        self.problems(run_id)  # the totals are only as good as the rows: a damaged one fails here
        row = self.db.execute(
            "SELECT COUNT(*) AS done, AVG(score) AS accuracy, AVG(coverage) AS coverage, "
            "COALESCE(SUM(generated_tokens), 0) AS generated_tokens, COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens, "
            "COALESCE(SUM(cached_tokens), 0) AS cached_tokens, COALESCE(SUM(forked_tokens), 0) AS forked_tokens, "
            "COALESCE(SUM(n_samples), 0) AS samples, COALESCE(SUM(wall_s), 0) AS wall_s, "
            "COALESCE(SUM(json_extract(info, '$.tool_tokens')), 0) AS tool_tokens, "
            "COALESCE(SUM(json_extract(info, '$.tool_calls')), 0) AS tool_calls, "
            "COALESCE(SUM(json_extract(info, '$.compile_s')), 0) AS compile_s "
            "FROM problems WHERE run_id = ?", (run_id,)).fetchone()
        run.update(dict(row))
        run["saved_tokens"] = run["cached_tokens"] + run["forked_tokens"]
        return run

    # -- problems and samples -----------------------------------------------
    @_guarded
    def record(self, run_id: int, idx: int, problem, outcome, wall_s: float) -> None:
        """One solved problem and its samples, in one transaction."""
        u = outcome.usage
        with self.db:
            self.db.execute(
                f"INSERT OR REPLACE INTO problems ({', '.join(COLUMNS['problems'])}) "
                f"VALUES ({', '.join('?' * len(COLUMNS['problems']))})",
                (run_id, idx, problem.id, problem.category, problem.question, problem.answer, outcome.answer,
                 outcome.score, int(outcome.coverage), len(outcome.attempts), u.requests, u.prompt_tokens,
                 u.cached_tokens, u.forked_tokens, u.generated_tokens, wall_s,
                 json.dumps({**outcome.info, "pass_at_k": outcome.pass_at_k, "usage_estimated": u.estimated,
                             **({"tool_tokens": u.tool_tokens, "tool_calls": u.tool_calls} if u.tool_calls else {})},
                            default=str)))
            self.db.execute("DELETE FROM samples WHERE run_id = ? AND problem_idx = ?", (run_id, idx))
            self.db.executemany(
                f"INSERT INTO samples ({', '.join(COLUMNS['samples'])}) "
                f"VALUES ({', '.join('?' * len(COLUMNS['samples']))})",
                [(run_id, idx, a.index, json.dumps(a.token_ids), a.text, a.answer, int(a.correct), a.generated_tokens,
                  a.mean_logprob if a.mean_logprob != float("-inf") else None, a.finish_reason, int(a.selected),
                  json.dumps(a.info, default=str)) for a in outcome.attempts])
            self.db.execute("UPDATE runs SET updated = ? WHERE id = ?", (time.time(), run_id))

    @_guarded
    def done_indices(self, run_id: int) -> set[int]:
        return {r[0] for r in self.db.execute("SELECT idx FROM problems WHERE run_id = ?", (run_id,))}

    @_guarded
    def problems(self, run_id: int) -> list[dict]:
        rows = self.db.execute("SELECT * FROM problems WHERE run_id = ? ORDER BY idx", (run_id,)).fetchall()
        out = []
        for r in rows:
            where = f"run {run_id}, problem {r['idx']}"
            if not _is_int(r["idx"]) or r["idx"] < 0:
                raise self._bad(f"run {run_id}", f"a problem index {_short(r['idx'])} is not a non-negative integer")
            score = r["score"]
            if not isinstance(score, (int, float)) or not 0 <= score <= 1:  # NaN fails the range too
                raise self._bad(where, f"score {_short(score)} is not a number in [0, 1]")
            for k in ("coverage", "n_samples", "requests", "prompt_tokens", "cached_tokens", "forked_tokens",
                      "generated_tokens"):
                if not _is_int(r[k]) or r[k] < 0:
                    raise self._bad(where, f"{k} {_short(r[k])} is not a non-negative integer")
            out.append({**dict(r), "info": self._json(r["info"], where + " (info)", dict)})
        return out

    @_guarded
    def samples(self, run_id: int, problem_idx: int | None = None) -> list[dict]:
        q, args = "SELECT * FROM samples WHERE run_id = ?", [run_id]
        if problem_idx is not None:
            q, args = q + " AND problem_idx = ?", args + [problem_idx]
        rows = self.db.execute(q + " ORDER BY problem_idx, sample_idx", args).fetchall()
        out = []
        for r in rows:
            where = f"run {run_id}, problem {r['problem_idx']}, sample {r['sample_idx']}"
            ids = self._json(r["token_ids"], where + " (token_ids)", list)
            if not all(_is_int(t) and t >= 0 for t in ids):
                raise self._bad(where, "token_ids is not a list of token ids")
            out.append({**dict(r), "token_ids": ids, "info": self._json(r["info"], where + " (info)", dict)})
        return out

    def check_run(self, run_id: int) -> None:
        """Read every stored row of a run, so that a damaged one fails now (before resuming), not midway."""
        self.run(run_id)
        self.problems(run_id)
        self.samples(run_id)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
