"""Seeded, bounded fuzzing of the results store and JSONL datasets: whatever the damage, `ponder runs`,
`report` and `run --resume` end with a result or a one-line error (exit 2), never a traceback or a hang;
a dataset loads or fails with a DatasetError naming the line."""

import io
import json
import os
import random
import sqlite3

from rich.console import Console

from ponder.cli.main import main
from ponder.errors import PonderError
from ponder.report import select_runs, summary_table
from ponder.store import RunStore
from ponder.strategies import Attempt, Outcome, Usage
from ponder.tasks import load_problems


def _store(path):
    probs, _ = load_problems("arithmetic", count=4)
    config = {"suite": "arithmetic", "difficulty": 1, "problems": 4, "strategy": "majority", "seed": 0,
              "model": "/nonexistent/model.gguf", "options": {"samples": 2}}
    with RunStore(path) as store:
        for _ in range(2):
            rid = store.create_run(config, {"name": "m", "sha256": "ab" * 32}, "0.1.0", 4)
            for i in range(3):
                atts = [Attempt(k, [5, 6, k], "x", "8", k == 0, 3, -0.5, "eos", selected=k == 0) for k in range(2)]
                store.record(rid, i, probs[i], Outcome("8", 0.5, atts, Usage(1, 30, 10, 30, 6)), 1.0)
            store.set_status(rid, "interrupted")


def _commands(path, out):
    """Each command the probe ran; every one must end in 0 or 2 (main raises on anything else)."""
    for argv in (["runs"], ["runs", "--json"], ["run", "--resume", "1", "--no-progress"]):
        assert main([*argv, "--store", path]) in (0, 2), argv
    # what `ponder report` reads and tabulates (drawing the PNG each time would only make the test slow)
    try:
        with RunStore(path) as store:
            summaries = [store.summary(i) for i in select_runs(store.runs(), [], None, path)]
        Console(file=io.StringIO(), width=200).print(summary_table(summaries))
    except PonderError:
        pass


GARBAGE = ["", "x", "{", "[1,", "null", "-1", "1e999", "NaN", b"\xff\x00", 2**62, -5, 1.5, None, "[" * 5000, "9" * 5000]
COLUMNS = {"runs": ["status", "suite", "difficulty", "strategy", "n_problems", "model", "model_sha256", "config", "pid",
                    "host", "pid_start", "created"],
           "problems": ["idx", "problem_id", "score", "coverage", "n_samples", "generated_tokens", "info", "wall_s"],
           "samples": ["sample_idx", "token_ids", "answer", "correct", "mean_logprob", "info"]}


def test_damaged_fields_never_traceback(tmp_path, capsys):
    rng = random.Random(1)
    clean = str(tmp_path / "clean.sqlite")
    _store(clean)
    cases = [(t, c, g) for t, cols in COLUMNS.items() for c in cols for g in GARBAGE]
    for table, column, value in rng.sample(cases, 30):
        path = str(tmp_path / "f.sqlite")
        with open(clean, "rb") as src, open(path, "wb") as dst:
            dst.write(src.read())
        db = sqlite3.connect(path)
        try:
            with db:
                db.execute(f"UPDATE {table} SET {column} = ?", (value,))
        except sqlite3.IntegrityError:  # NOT NULL: SQLite itself refuses the damage
            continue
        finally:
            db.close()
        _commands(path, str(tmp_path / "r.png"))
    capsys.readouterr()


def test_damaged_bytes_never_traceback(tmp_path, capsys):
    rng = random.Random(2)
    clean = str(tmp_path / "clean.sqlite")
    _store(clean)
    data = open(clean, "rb").read()
    for trial in range(20):
        b = bytearray(data)
        if trial % 5 == 4:
            b = b[:rng.randrange(len(b))]  # truncated
        else:
            for _ in range(rng.choice([1, 4, 32])):
                b[rng.randrange(len(b))] = rng.randrange(256)
        path = str(tmp_path / f"b{trial}.sqlite")
        with open(path, "wb") as f:
            f.write(bytes(b))
        _commands(path, str(tmp_path / "r.png"))
    capsys.readouterr()


def test_mutated_jsonl_never_traceback(tmp_path):
    rng = random.Random(3)
    lines = [json.dumps({"question": f"What is {i} + {i}?", "answer": 2 * i, "id": f"q{i}"}) for i in range(6)]
    clean = ("\n".join(lines) + "\n").encode()
    for trial in range(300):
        b = bytearray(clean)
        for _ in range(rng.choice([1, 2, 8])):
            op = rng.random()
            i = rng.randrange(len(b))
            if op < 0.4:
                b[i] = rng.randrange(256)
            elif op < 0.7:
                b[i:i] = rng.choice([b"\\ud800", b"[" * 3000, b"9" * 5000, b"\xef\xbb\xbf", b"\x00", b"\n", b'"'])
            else:
                del b[i:i + rng.randrange(1, 20)]
        path = tmp_path / f"d{trial}.jsonl"
        path.write_bytes(bytes(b))
        for on_error in ("stop", "skip"):
            try:
                problems, warnings = load_problems(str(path), on_error=on_error)
            except PonderError as e:
                assert str(path) in str(e)
            else:
                assert problems and all(p.question.encode() for p in problems)
                assert all(str(path) in w for w in warnings)
    assert os.path.exists(tmp_path / "d0.jsonl")
