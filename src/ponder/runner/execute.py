"""The run loop: solve each problem not yet in the store, record it, show progress.

A problem is recorded as soon as it is solved, so Ctrl-C loses at most the problem in
flight; `execute` on an existing run id continues where it stopped, with the same
problems and seeds (they derive from the run seed and the problem id, never from order).
"""

from __future__ import annotations

import time

from ponder import __version__
from ponder.checkers import get_checker
from ponder.errors import InvalidParameterError, PonderError
from ponder.runner.config import RunConfig
from ponder.strategies import Backend, Judge, derive_seed, make_strategy
from ponder.strategies.tool_loop import ToolBackend
from ponder.tasks import has_verifier, load_problems, load_shots, messages
from ponder.tools import exemplar_messages, get_tools, parse_tool_names


class Interrupted(Exception):
    """Ctrl-C during a run: what finished is stored; resume with the run id."""

    def __init__(self, run_id: int, done: int, total: int):
        super().__init__(f"interrupted: {done} of {total} problems are stored; "
                         f"continue with `ponder run --resume {run_id}`")
        self.run_id, self.done, self.total = run_id, done, total


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
                      number_format=config.number_format, categories=config.categories or None, exclude=problems)


def chat(config: RunConfig, problem, shots) -> list[dict]:
    """The messages a problem is asked with: the tools' exemplars, shots from the suite, the problem."""
    preamble = exemplar_messages(config.tools) if config.exemplars_on else []
    return messages(problem, config.prompt_style, shots, preamble)


def with_tools(config: RunConfig, backend: Backend) -> Backend:
    """The backend the strategy sees: with the client-side tool loop when the run has tools."""
    return ToolBackend(backend, get_tools(config.tools)) if config.tools else backend


def execute(config: RunConfig, backend: Backend, store, run_id: int | None = None, on_progress=None) -> int:
    """Run (or continue) a run; returns its id.  on_progress(done, total, stats) after each problem."""
    problems, _, strategy = prepare(config)
    shots = shots_of(config, problems)
    backend = with_tools(config, backend)
    model = backend.model_info()
    if run_id is None:
        run_id = store.create_run(config.to_dict(), model, __version__, len(problems))
    else:
        stored = store.run(run_id)
        if stored["model_sha256"] and model.get("sha256") and stored["model_sha256"] != model["sha256"]:
            raise PonderError(f"run {run_id} used model {stored['model']} (sha256 {stored['model_sha256'][:12]}...); "
                              f"the model given now differs, so the run cannot be continued")
        store.set_status(run_id, "running")
    checker = get_checker(config.checker) if config.checker else None
    done = store.done_indices(run_id)
    stats = {"score": 0.0, "generated": 0, "wall": 0.0}
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
            before = backend.usage
            prompt_ids = backend.encode_chat(chat(config, problem, shots))
            outcome = strategy.solve(backend, prompt_ids, Judge(problem, checker), derive_seed(config.seed, problem.id))
            outcome.usage = backend.usage - before
            wall = time.perf_counter() - t0
            store.record(run_id, idx, problem, outcome, wall)
            done.add(idx)
            stats["score"] += outcome.score
            stats["generated"] += outcome.usage.generated_tokens
            stats["wall"] += wall
            if on_progress:
                on_progress(len(done), len(problems), stats)
    except KeyboardInterrupt:
        store.set_status(run_id, "interrupted")
        raise Interrupted(run_id, len(done), len(problems)) from None
    except BaseException:
        store.set_status(run_id, "failed")
        raise
    store.set_status(run_id, "done")
    return run_id
