"""`ponder bench decode --speculative MODE`: single-stream decode of chat answers, speculation off vs on.

The workload is greedy answers to a fixed list of varied chat questions (not a prompt
that repeats itself, which would flatter drafting).  Off and on run on two engines of
one loaded model, alternately question by question; each round's tok/s is decoded
tokens over decode time (a 1-token run of the same request, timed separately, stands
for its prefill), and the figure is the median over rounds; the median over questions of
the on / off ratio of each back-to-back pair is reported too (less moved by a load
that changes during the run).  The answers of the two
engines are checked to be the same tokens.  Mean acceptance length is decoded tokens
per decode step (1.0 without speculation).
"""

from __future__ import annotations

import statistics
import time

QUESTIONS = [
    "Why is the sky blue? Answer in a short paragraph.",
    "Write a Python function that returns the n-th Fibonacci number.",
    "Give me three tips for sleeping better.",
    "What is the difference between a virus and a bacterium?",
    "Explain what a hash table is to a beginner programmer.",
    "Write a short poem about autumn leaves.",
    "How do I make a simple tomato pasta sauce?",
    "Summarize the causes of the French Revolution.",
]


def _decode(engine, question: str, tokens: int) -> tuple[list[int], float, int, dict]:
    """(answer tokens, decode seconds, decode steps, usage) of one greedy chat answer."""
    from ponder import SamplingParams

    chat = [{"role": "user", "content": question}]
    s0 = engine.stats().steps
    t0 = time.perf_counter()
    engine.generate(chat, SamplingParams(temperature=0, max_tokens=1))
    t1 = time.perf_counter()
    s1 = engine.stats().steps
    res = engine.generate(chat, SamplingParams(temperature=0, max_tokens=tokens))[0]
    t2 = time.perf_counter()
    s2 = engine.stats().steps
    return res.token_ids, (t2 - t1) - (t1 - t0), (s2 - s1) - (s1 - s0), res.usage


def run_spec_decode(model_name: str, threads: int, mode: str, vs: str | None, tokens: int, repeats: int,
                    draft_tokens: int | None = None, shared: bool = False, prior: bool = True) -> dict:
    from ponder import Engine
    from ponder.bench import speed, suite
    from ponder.loading.model_files import load_model

    model = load_model(model_name)
    # no prefix cache: every answer pays its prefill, the same on both engines
    engines = {"off": Engine(model, threads=threads, prefix_cache=False, speculative="off"),
               mode: Engine(model, threads=threads, prefix_cache=False, speculative=mode,
                            speculative_shared=shared, speculative_prior=prior,
                            **({} if draft_tokens is None else {"speculative_tokens": draft_tokens}))}
    out = suite._header("decode", model, threads, engines["off"])
    info = engines[mode].info()
    out.update({"speculative": mode + (" (shared table)" if shared else ""), "questions": len(QUESTIONS),
                "max_tokens": tokens, "speculative_tokens": info.speculative_tokens,
                "speculative_prior": info.speculative_prior})
    for e in engines.values():  # compile and warm up
        _decode(e, QUESTIONS[0], 4)
    runs = {k: [] for k in engines}
    pairs = []  # on / off tok/s of each question, run back to back: robust to a load that drifts
    totals = {k: {"tokens": 0, "steps": 0, "seconds": 0.0, "drafted": 0, "accepted": 0} for k in engines}
    for _ in range(repeats):
        rnd = {k: [0, 0.0] for k in engines}
        for q in QUESTIONS:
            answers, rate = {}, {}
            for k, e in engines.items():
                ids, sec, steps, usage = _decode(e, q, tokens)
                totals[k]["drafted"] += usage["speculative_proposed"]
                totals[k]["accepted"] += usage["speculative_accepted"]
                answers[k] = ids
                rate[k] = (len(ids) - 1) / sec
                rnd[k][0] += len(ids) - 1
                rnd[k][1] += sec
                totals[k]["tokens"] += len(ids) - 1
                totals[k]["steps"] += steps
                totals[k]["seconds"] += sec
            pairs.append(rate[mode] / rate["off"])
            if answers["off"] != answers[mode]:
                raise AssertionError(f"speculation changed the answer to {q!r}")
        for k in engines:
            runs[k].append(rnd[k][0] / rnd[k][1])
    out["results"] = []
    for k in engines:
        t = totals[k]
        row = {"engine": "ponder" if k == "off" else f"ponder {k}", "tok_s": statistics.median(runs[k]),
               "runs": [round(r, 1) for r in runs[k]], "tokens_per_step": t["tokens"] / max(t["steps"], 1)}
        out["results"].append(row)
    out["drafted"], out["accepted"] = totals[mode]["drafted"], totals[mode]["accepted"]
    if vs:
        fig = speed.llama_decode(model.path, model.tokenizer, threads, tokens, repeats)
        out["results"].append({"engine": "llama.cpp", "tok_s": fig.tok_s, "runs": [round(r, 1) for r in fig.runs],
                               "tokens_per_step": 1.0})
    base = out["results"][0]["tok_s"]
    out["speedup"] = out["results"][1]["tok_s"] / base
    out["speedup_pairs"] = statistics.median(pairs)
    if vs:
        out["ratio_vs_llama_cpp"] = out["results"][1]["tok_s"] / out["results"][2]["tok_s"]
    return out


def print_spec(out: dict, console) -> None:
    from rich.table import Table

    console.print(f"speculative={out['speculative']} (up to {out['speculative_tokens']} drafted tokens per step): "
                  f"greedy chat answers to {out['questions']} varied questions, up to {out['max_tokens']} tokens each"
                  + (f"; tables start from the model's prior ({out['speculative_prior']})"
                     if out.get("speculative_prior", "none") != "none" else ""))
    table = Table()
    for col in ("engine", "decode tok/s (median)", "tokens per step", "runs"):
        table.add_column(col, justify="right")
    for r in out["results"]:
        table.add_row(r["engine"], f"{r['tok_s']:.1f}", f"{r['tokens_per_step']:.2f}", " ".join(map(str, r["runs"])))
    console.print(table)
    console.print(f"drafted {out['drafted']}, accepted {out['accepted']}; "
                  f"[bold]speculation on / off = {out['speedup']:.2f}×[/bold] (median of rounds; "
                  f"median of the {len(QUESTIONS)}-per-round back-to-back question pairs: {out['speedup_pairs']:.2f}×)")
    if "ratio_vs_llama_cpp" in out:
        console.print(f"[bold]ponder {out['speculative']} / llama.cpp = {out['ratio_vs_llama_cpp']:.2f}×[/bold]")
