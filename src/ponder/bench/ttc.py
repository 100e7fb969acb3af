"""`ponder bench ttc`: the test-time workload, ponder against a script driving llama.cpp.

The workload is what a user runs: greedy plus majority@N over a problem suite.
ponder runs it as `ponder run` does (the runner, the strategies, the in-process
engine: the N samples of a problem fork from one prefill and decode as one
batch).  The peer is the script a llama-cpp-python user would write: the same
prompt token ids and max tokens, sent one request at a time, each sample with
llama.cpp's own sampler (same temperature and filters, its own seeds), answers
checked and voted by the same judge.  Reported: wall time, generated tokens and
accuracy of each, and ponder's speed-up.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass

from ponder.runner import RunConfig, execute
from ponder.runner.execute import chat, prepare, shots_of
from ponder.strategies import EngineBackend, Judge, Options, derive_seed
from ponder.strategies.voting import majority


@dataclass
class Workload:
    suite: str = "words"
    difficulty: int = 1
    problems: int = 40
    samples: int = 8
    max_tokens: int = 128
    seed: int = 0

    def configs(self, model: str) -> list[RunConfig]:
        """The two runs: greedy, then majority@samples (the strategies' default sampling options)."""
        base = dict(suite=self.suite, difficulty=self.difficulty, problems=self.problems, seed=self.seed, model=model)
        return [RunConfig(strategy="greedy", options={"max_tokens": self.max_tokens}, **base),
                RunConfig(strategy="majority", options={"samples": self.samples, "max_tokens": self.max_tokens},
                          **base)]

    def prompts(self, backend) -> tuple[list, list[list[int]]]:
        """The problems and the prompt ids `ponder run` asks them with (same shots, same template)."""
        cfg = self.configs(backend.model_info()["name"])[1]
        problems, _, _ = prepare(cfg)
        shots = shots_of(cfg, problems)
        return problems, [backend.encode_chat(chat(cfg, p, shots)) for p in problems]

    def sampling(self) -> Options:
        return Options(samples=self.samples, max_tokens=self.max_tokens)


@dataclass
class TTCFigure:
    engine: str
    wall_s: float
    generated_tokens: int
    greedy_accuracy: float
    majority_accuracy: float

    def to_dict(self) -> dict:
        return dict(self.__dict__, tok_s=self.generated_tokens / self.wall_s if self.wall_s else 0.0)


def run_ponder(engine, work: Workload) -> TTCFigure:
    """The workload through `ponder run`'s own path (runner, strategies, EngineBackend), timed end to end."""
    from ponder.store import RunStore

    backend = EngineBackend(engine)
    with tempfile.TemporaryDirectory() as tmp, RunStore(os.path.join(tmp, "ttc.sqlite")) as store:
        t0 = time.perf_counter()
        summaries = [store.summary(execute(cfg, backend, store)) for cfg in work.configs(engine.model.name)]
        wall = time.perf_counter() - t0
    return TTCFigure("ponder", wall, sum(s["generated_tokens"] for s in summaries),
                     summaries[0]["accuracy"], summaries[1]["accuracy"])


def majority_correct(judge: Judge, texts: list[str]) -> bool:
    """Self-consistency as the majority strategy scores it: the most frequent answer, checked."""
    checked = [judge.check(t) for t in texts]
    best, _ = majority([judge.key(answer) for answer, _ in checked])
    return best is not None and next(ok for answer, ok in checked if judge.key(answer) == best)


def run_llama(path: str, threads: int, prompts: list[list[int]], problems, work: Workload) -> TTCFigure:
    """The same requests sent one by one to llama-cpp-python, as a script would; model load not timed."""
    from ponder.bench.speed import _llama

    llm = _llama(path, threads, n_ctx=4096)
    opt = work.sampling()

    def complete(ids, temperature, seed):
        out = llm.create_completion(prompt=ids, max_tokens=work.max_tokens, temperature=temperature, top_p=opt.top_p,
                                    top_k=opt.top_k, min_p=opt.min_p, repeat_penalty=1.0, seed=seed)
        return out["choices"][0]["text"], out["usage"]["completion_tokens"]

    complete(prompts[0][:4], 0.0, 0)  # warm up outside the timing
    tokens, greedy_ok, majority_ok = 0, 0, 0
    t0 = time.perf_counter()
    for problem, ids in zip(problems, prompts):
        judge = Judge(problem)
        text, n = complete(ids, 0.0, 0)
        tokens += n
        greedy_ok += judge.check(text)[1]
        texts = []
        for i in range(work.samples):
            text, n = complete(ids, opt.temperature, derive_seed(work.seed, problem.id, i) % 2**31)
            tokens += n
            texts.append(text)
        majority_ok += majority_correct(judge, texts)
    wall = time.perf_counter() - t0
    return TTCFigure("llama.cpp", wall, tokens, greedy_ok / len(problems), majority_ok / len(problems))


def run_ttc(model_name: str, threads: int, vs: str | None, work: Workload) -> dict:
    from ponder import Engine, SamplingParams
    from ponder.bench.suite import _header

    engine = Engine.from_pretrained(model_name, threads=threads)
    out = _header("ttc", engine.model, threads, engine)
    out["workload"] = dict(work.__dict__)
    # compile (or load) the kernels outside the timing, as the other benchmarks do
    engine.generate([1, 2, 3], SamplingParams(temperature=0, max_tokens=2))
    figures = [run_ponder(engine, work)]
    if vs:
        problems, prompts = work.prompts(EngineBackend(engine))
        figures.append(run_llama(engine.model.path, threads, prompts, problems, work))
    return summarize(out, figures)


def summarize(out: dict, figures: list[TTCFigure]) -> dict:
    out["results"] = [f.to_dict() for f in figures]
    if len(figures) == 2:
        out["ratio_vs_llama_cpp"] = figures[1].wall_s / figures[0].wall_s  # > 1: ponder is faster
    return out


def print_ttc(out: dict, console) -> None:
    from rich.table import Table

    w = out["workload"]
    console.print(f"greedy + majority@{w['samples']} over {w['problems']} {w['suite']} problems "
                  f"(difficulty {w['difficulty']}), up to {w['max_tokens']} tokens per answer")
    table = Table()
    for col in ("engine", "wall s", "generated tokens", "tok/s", "greedy acc", f"majority@{w['samples']} acc"):
        table.add_column(col, justify="right")
    for r in out["results"]:
        table.add_row(r["engine"], f"{r['wall_s']:.1f}", str(r["generated_tokens"]), f"{r['tok_s']:.1f}",
                      f"{100 * r['greedy_accuracy']:.1f}%", f"{100 * r['majority_accuracy']:.1f}%")
    console.print(table)
    if "ratio_vs_llama_cpp" in out:
        console.print(f"[bold]ponder is {out['ratio_vs_llama_cpp']:.2f}× faster than llama.cpp on this workload[/bold]")
