"""The run loop: solve each problem not yet in the store, record it, show progress.

A problem is recorded as soon as it is solved, so Ctrl-C loses at most the problem in
flight; `execute` on an existing run id continues where it stopped, with the same
problems and seeds (they derive from the run seed and the problem id, never from order).
"""

from __future__ import annotations

import os
import shlex
import time

from ponder import __version__
from ponder.checkers import get_checker
from ponder.errors import InvalidParameterError, PonderError
from ponder.runner.config import RunConfig
from ponder.store import StoreError, process
from ponder.strategies import Backend, Judge, derive_seed, make_strategy
from ponder.tasks import has_verifier, load_problems, load_shots, messages, shots_for
from ponder.tools import exemplar_messages, get_tools, parse_tool_names


def resume_command(run_id: int, store_path: str) -> str:
    """The command line that continues a run."""
    from ponder.store import default_path

    same = os.path.abspath(store_path) == os.path.abspath(default_path())
    return f"ponder run --resume {run_id}" + ("" if same else f" --store {shlex.quote(store_path)}")


class Interrupted(Exception):
    """Ctrl-C during a run: what finished is stored; resume with the run id."""

    def __init__(self, run_id: int, done: int, total: int, store_path: str):
        super().__init__(f"interrupted: {done} of {total} problems are stored; "
                         f"continue with `{resume_command(run_id, store_path)}`")
        self.run_id, self.done, self.total = run_id, done, total


def resume_config(store, run_id: int) -> RunConfig:
    """The config of a stored run, checked against the run's own row."""
    run = store.run(run_id)
    try:
        config = RunConfig.from_stored(run["config"])
    except ValueError as e:
        raise StoreError(f"run {run_id} in {store.path} cannot be resumed: its stored config {e}") from None
    _check_same_run(config, run, store.path)
    _check_not_running(run, store.path)
    store.check_run(run_id)  # a damaged row fails now, before the model loads
    return config


def _check_not_running(run: dict, path: str) -> None:
    if run["process"] == "alive" and not process.is_self(run["pid"], run["host"]):
        raise StoreError(f"run {run['id']} in {path} is still running (process {run['pid']} on {run['host']}); "
                         f"stop that process first, or wait for it")


def _check_same_run(config: RunConfig, run: dict, path: str) -> None:
    for key in ("suite", "strategy", "difficulty"):
        if getattr(config, key) != run[key]:
            raise StoreError(f"run {run['id']} in {path} cannot be resumed: its config has {key} "
                             f"{getattr(config, key)!r} but the run was recorded with {run[key]!r}")


def _check_resumable(config: RunConfig, problems, store, run_id: int, model: dict) -> None:
    """Everything that must hold for the stored part of a run and the rest to be one run."""
    stored = store.run(run_id)
    where = f"run {run_id} in {store.path}"
    _check_same_run(config, stored, store.path)
    _check_not_running(stored, store.path)
    if stored["model_sha256"] and model.get("sha256") and stored["model_sha256"] != model["sha256"]:
        raise PonderError(f"run {run_id} used model {stored['model']} (sha256 {stored['model_sha256'][:12]}...); "
                          f"the model given now differs, so the run cannot be continued")
    if stored["n_problems"] != len(problems):
        raise StoreError(f"{where} cannot be resumed: it was recorded with {stored['n_problems']} problems, "
                         f"its config now gives {len(problems)} (has the dataset changed?)")
    store.check_run(run_id)
    for p in store.problems(run_id):
        if p["idx"] >= len(problems) or problems[p["idx"]].id != p["problem_id"]:
            raise StoreError(f"{where} cannot be resumed: its problem {p['idx']} was {p['problem_id']!r}, "
                             f"the config now gives another (has the dataset changed?)")


def prepare(config: RunConfig):
    """(problems, warnings, strategy): everything that can fail on bad input, before any work."""
    problems, warnings = load_problems(config.suite, difficulty=config.difficulty, count=config.problems,
                                       seed=config.seed, number_format=config.number_format,
                                       categories=config.categories or None, on_error=config.on_error)
    strategy = make_strategy(config.strategy, config.strategy_options())
    if config.checker:
        get_checker(config.checker)
    if strategy.opt.select == "verifier" and config.strategy == "best-of-n" and not all(map(has_verifier, problems)):
        raise InvalidParameterError("--select verifier needs a suite whose problems have a solution verifier "
                                    "(puzzles, numbers); elsewhere it would read the answer key", "select")
    messages(problems[0], config.prompt_style)  # validates the style
    shots_of(config, problems)  # validates --shots
    parse_tool_names(config.tools)  # validates --tools
    return problems, warnings, strategy


def shots_of(config: RunConfig, problems) -> list:
    return load_shots(config.suite, config.shots, difficulty=config.difficulty, seed=config.seed,
                      number_format=config.number_format, categories=config.categories or None, exclude=problems,
                      match=config.shot_match)


def chat(config: RunConfig, problem, shots) -> list[dict]:
    """The messages a problem is asked with: the tools' exemplars, shots from the suite, the problem."""
    preamble = exemplar_messages(config.tools) if config.exemplars_on else []
    return messages(problem, config.prompt_style, shots_for(problem, shots, config.shot_match), preamble,
                    worked="calc" in config.tools)


def with_tools(config: RunConfig, backend: Backend) -> Backend:
    """The backend the strategy sees: with tools when the run has them (the engine runs them in its
    decoding loop; other backends run the client-side tool loop)."""
    return backend.with_tools(get_tools(config.tools)) if config.tools else backend


def execute(config: RunConfig, backend: Backend, store, run_id: int | None = None, on_progress=None,
            compile_clock=None) -> int:
    """Run (or continue) a run; returns its id.  on_progress(done, total, stats) after each problem.

    compile_clock: a function giving the seconds this process has spent compiling kernels so far
    (the first run on a machine compiles them).  A problem's compile time is recorded apart
    (info["compile_s"]) so that speeds leave it out; stats["wall"] is the time without it.
    """
    problems, _, strategy = prepare(config)
    shots = shots_of(config, problems)
    backend = with_tools(config, backend)
    model = backend.model_info()
    if run_id is None:
        run_id = store.create_run(config.to_dict(), model, __version__, len(problems))
    else:
        _check_resumable(config, problems, store, run_id, model)
        store.claim(run_id)
    checker = get_checker(config.checker) if config.checker else None
    done = store.done_indices(run_id)
    stats = {"score": 0.0, "generated": 0, "wall": 0.0, "compile": 0.0}
    for p in store.problems(run_id):
        stats["score"] += p["score"]
        stats["generated"] += p["generated_tokens"]
    if on_progress:
        on_progress(len(done), len(problems), stats)
    try:
        for idx, problem in enumerate(problems):
            if idx in done:
                continue
            t0 = time.perf_counter()
            compiled0 = compile_clock() if compile_clock else 0.0
            before = backend.usage
            prompt_ids = backend.encode_chat(chat(config, problem, shots))
            outcome = strategy.solve(backend, prompt_ids, Judge(problem, checker), derive_seed(config.seed, problem.id))
            outcome.usage = backend.usage - before
            wall = time.perf_counter() - t0
            compiling = min(wall, compile_clock() - compiled0) if compile_clock else 0.0
            if compiling > 0:
                outcome.info["compile_s"] = round(compiling, 3)
            store.record(run_id, idx, problem, outcome, wall)
            done.add(idx)
            stats["score"] += outcome.score
            stats["generated"] += outcome.usage.generated_tokens
            stats["wall"] += wall - compiling
            stats["compile"] += compiling
            if on_progress:
                on_progress(len(done), len(problems), stats)
    except KeyboardInterrupt:
        store.set_status(run_id, "interrupted")
        raise Interrupted(run_id, len(done), len(problems), store.path) from None
    except BaseException:
        store.set_status(run_id, "failed")
        raise
    store.set_status(run_id, "done")
    return run_id
