"""`ponder bench` figures: each result with its ratio to llama.cpp and to the machine's limits."""

from __future__ import annotations

import statistics
import time
from datetime import datetime, timezone

import numpy as np

from ponder.bench import machine, speed


def _header(kind: str, model, threads: int, engine=None) -> dict:
    from ponder.kernels import isa

    info = machine.cpu_info()
    return {"benchmark": kind, "model": model.name, "file": model.path, "threads": threads,
            "cpu": info["name"], "vnni": info["vnni"], "amx": info.get("amx", False),
            "isa": isa.describe(engine.info().isa if engine else None),
            "runtime": engine.info().runtime if engine else None,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def run_speed(kind: str, model_name: str, threads: int, vs: str | None, tokens: int, repeats: int) -> dict:
    from ponder import Engine

    before = machine.resident_bytes()
    # no speculation: the filler prompt repeats itself, so lookup drafts would flatter the kernels
    engine = Engine.from_pretrained(model_name, threads=threads, speculative="off")
    model_rss = machine.resident_bytes() - before
    model, cfg = engine.model, engine.config
    out = _header(kind, model, threads, engine)
    import os

    out["model_resident_MB"] = model_rss / 1e6
    out["model_file_MB"] = os.path.getsize(model.path) / 1e6 if os.path.isfile(model.path) else None
    bw = machine.memory_bandwidth(threads)
    peaks = machine.peak_ops(threads)
    weight_bytes = engine.info().weight_bytes
    flops = cfg.matmul_flops_per_token()
    out.update({"memory_bandwidth_GBs": bw / 1e9, "weight_bytes_per_token": weight_bytes,
                "matmul_flop_per_token": flops, "peak_fp32_GFLOPs": peaks["fp32_flops"] / 1e9,
                "peak_int8_GOPs": peaks["int8_ops"] / 1e9})
    figures = []
    if kind == "decode":
        figures.append(speed.ponder_decode(engine, tokens, repeats))
        if vs:
            figures.append(speed.llama_decode(model.path, engine.tokenizer, threads, tokens, repeats))
        out["limit_tok_s"] = bw / weight_bytes
    else:
        figures.append(speed.ponder_prefill(engine, tokens, repeats))
        if vs:
            figures.append(speed.llama_prefill(model.path, engine.tokenizer, threads, tokens, repeats))
        out["limit_tok_s"] = peaks["int8_ops"] / flops
    out["tokens"] = tokens
    out["results"] = []
    for f in figures:
        out["results"].append({
            "engine": f.engine, "tok_s": f.tok_s, "runs": [round(r, 1) for r in f.runs],
            "GB_s": f.tok_s * weight_bytes / 1e9, "GFLOP_s": f.tok_s * flops / 1e9,
            "fraction_of_limit": f.tok_s / out["limit_tok_s"],
        })
    if vs and len(figures) == 2:
        out["ratio_vs_llama_cpp"] = figures[0].tok_s / figures[1].tok_s
    return out


def run_parallel(model_name: str, threads: int, vs: str | None, n_seqs: int, prompt_len: int, new_tokens: int,
                 repeats: int, speculative: str | None = None) -> dict:
    """n samples of one prompt: ponder forks after one prefill; llama.cpp copies the prompt's KV (unified cache).

    With `speculative`, a second engine with that speculation on runs each round after the first."""
    from ponder import Engine, SamplingParams

    # no prefix cache: each run pays its prefill, with no help from the previous one
    engine = Engine.from_pretrained(model_name, threads=threads, prefix_cache=False, speculative="off")
    engines = {"ponder": engine}
    if speculative:
        engines[f"ponder {speculative}"] = Engine(engine.model, threads=threads, prefix_cache=False,
                                                  speculative=speculative)
    out = _header("parallel", engine.model, threads, engine)
    out.update({"memory_bandwidth_GBs": machine.memory_bandwidth(threads) / 1e9, "n_seqs": n_seqs,
                "prompt_tokens": prompt_len, "new_tokens": new_tokens})
    runs = {k: [] for k in engines}
    prefill = {k: [] for k in engines}
    for r in range(repeats + 1):
        ids = speed.prompt_ids(engine.tokenizer, prompt_len, 100 + r)
        for name, e in engines.items():
            t0 = time.perf_counter()
            e.generate(ids, SamplingParams(temperature=0, max_tokens=1))
            t1 = time.perf_counter()
            res = e.generate(ids, SamplingParams(temperature=0.8, seed=r, n=n_seqs, max_tokens=new_tokens,
                                                 ignore_eos=True))[0]
            t2 = time.perf_counter()
            assert sum(len(o.token_ids) for o in res.outputs) == n_seqs * new_tokens
            if r:
                prefill[name].append(t1 - t0)
                runs[name].append(n_seqs * new_tokens / ((t2 - t1) - (t1 - t0)))
    out["results"] = [{"engine": k, "decode_tok_s": statistics.median(runs[k]), "runs": [round(x, 1) for x in runs[k]],
                       "prefill_s": statistics.median(prefill[k])} for k in engines]
    if speculative:
        out["speculative_vs_off"] = out["results"][1]["decode_tok_s"] / out["results"][0]["decode_tok_s"]
    if vs:
        from ponder.bench.llama_batched import batched_decode

        lruns, lpre = [], []
        for r in range(repeats):
            ids = speed.prompt_ids(engine.tokenizer, prompt_len, 100 + r)
            fig = batched_decode(engine.model.path, threads, ids, n_seqs, new_tokens)
            lruns.append(fig["decode_tok_s"])
            lpre.append(fig["prefill_s"])
        out["results"].append({"engine": "llama.cpp", "decode_tok_s": statistics.median(lruns),
                               "runs": [round(x, 1) for x in lruns], "prefill_s": statistics.median(lpre)})
        out["ratio_vs_llama_cpp"] = out["results"][0]["decode_tok_s"] / out["results"][-1]["decode_tok_s"]
    return out


def run_prefix(model_name: str, threads: int, prefix_len: int = 1000, repeats: int = 3) -> dict:
    """A second request sharing a long prefix with the first: how much of its prefill is skipped."""
    from ponder import Engine, SamplingParams

    engine = Engine.from_pretrained(model_name, threads=threads, speculative="off")
    out = _header("prefix", engine.model, threads, engine)
    rows = []
    for r in range(repeats + 1):
        prefix = speed.prompt_ids(engine.tokenizer, prefix_len, 200 + r)
        first, second = prefix + engine.tokenizer.encode(" Question one?"), prefix + engine.tokenizer.encode(" Two?")
        p = SamplingParams(temperature=0, max_tokens=1)
        t0 = time.perf_counter()
        engine.generate(first, p)
        t1 = time.perf_counter()
        res = engine.generate(second, p)[0]
        t2 = time.perf_counter()
        if r:
            rows.append({"cold_s": t1 - t0, "warm_s": t2 - t1, "prompt_tokens": res.usage["prompt_tokens"],
                         "cached_tokens": res.usage["cached_tokens"]})
    med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    out["results"] = [dict(med, skipped_fraction=med["cached_tokens"] / med["prompt_tokens"],
                           speedup=med["cold_s"] / med["warm_s"])]
    return out


def run_kernels(model_name: str, threads: int, repeats: int) -> dict:
    """Each distinct weight matrix of the model through the quantized matmul, at 1 and 256 tokens."""
    from ponder.loading.model_files import load_model
    from ponder.model.linear import Activations, make_linear

    from ponder.kernels import native

    if native.active:
        native.set_threads(threads)
    else:
        import numba

        numba.set_num_threads(threads)
    model = load_model(model_name)
    out = _header("kernels", model, threads)
    bw = machine.memory_bandwidth(threads)
    out["memory_bandwidth_GBs"] = bw / 1e9
    layer = model.weights.layers[0]
    mats = dict(layer.matrices())
    mats["output"] = model.weights.output
    rng = np.random.default_rng(0)
    out["results"] = []
    for name in ("wq", "wk", "wo", "w_gate", "w_down", "output"):
        t = mats[name]
        lin = make_linear(t)
        for m in (1, 16, 256):
            act = Activations(rng.standard_normal((m, t.cols)).astype(np.float32))
            act.q  # quantize outside the timing
            lin(act)
            times = []
            for _ in range(repeats):
                s = time.perf_counter()
                lin(act)
                times.append(time.perf_counter() - s)
            sec = statistics.median(times)
            out["results"].append({"matrix": f"{name} {t.rows}x{t.cols} {t.fmt}", "tokens": m, "us": sec * 1e6,
                                   "GOP_s": 2 * t.rows * t.cols * m / sec / 1e9, "GB_s": lin.nbytes / sec / 1e9})
    return out


def print_report(out: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]ponder bench {out['benchmark']}[/bold]  {out['model']}  threads={out['threads']}  "
                  f"{out['cpu']}  isa={out.get('isa', '?')}  kernels={out.get('runtime') or '?'}  {out['date']}")
    if out.get("amx"):
        console.print("llama.cpp runs without its AMX repacking (it died with SIGILL on such a host)")
    if out["benchmark"] == "start":
        from ponder.bench.start import print_start

        print_start(out, console)
        return
    if "memory_bandwidth_GBs" in out:
        console.print(f"memory read bandwidth (measured): {out['memory_bandwidth_GBs']:.1f} GB/s")
    if out["benchmark"] == "ttc":
        from ponder.bench.ttc import print_ttc

        print_ttc(out, console)
        return
    if out["benchmark"] == "parallel":
        console.print(f"{out['n_seqs']} samples of one {out['prompt_tokens']}-token prompt, "
                      f"{out['new_tokens']} new tokens each")
        table = Table()
        for col in ("engine", "aggregate decode tok/s (median)", "prefill s", "runs"):
            table.add_column(col, justify="right")
        for r in out["results"]:
            table.add_row(r["engine"], f"{r['decode_tok_s']:.1f}", f"{r['prefill_s']:.2f}", " ".join(map(str, r["runs"])))
        console.print(table)
        if "speculative_vs_off" in out:
            console.print(f"[bold]speculation on / off = {out['speculative_vs_off']:.3f}×[/bold]")
        if "ratio_vs_llama_cpp" in out:
            console.print(f"[bold]ponder / llama.cpp = {out['ratio_vs_llama_cpp']:.2f}×[/bold]")
        return
    if "speculative" in out:
        from ponder.bench.spec_decode import print_spec

        print_spec(out, console)
        return
    if out["benchmark"] == "prefix":
        r = out["results"][0]
        console.print(f"second request: {r['cached_tokens']:.0f} of {r['prompt_tokens']:.0f} prompt tokens from the "
                      f"prefix cache ({100 * r['skipped_fraction']:.1f}% of prefill skipped); "
                      f"prefill {r['cold_s']:.3f} s cold, {r['warm_s']:.3f} s warm ({r['speedup']:.1f}× faster)")
        return
    if out["benchmark"] == "kernels":
        table = Table()
        for col in ("matrix", "tokens", "µs", "GOP/s", "GB/s of weights"):
            table.add_column(col, justify="right")
        for r in out["results"]:
            table.add_row(r["matrix"], str(r["tokens"]), f"{r['us']:.0f}", f"{r['GOP_s']:.1f}", f"{r['GB_s']:.1f}")
        console.print(table)
        return
    if out.get("model_file_MB"):
        console.print(f"model resident memory: {out['model_resident_MB']:.0f} MB for a {out['model_file_MB']:.0f} MB file "
                      f"({out['model_resident_MB'] / out['model_file_MB']:.2f}×)")
    limit_name = "bandwidth limit" if out["benchmark"] == "decode" else "int8 peak"
    console.print(f"{limit_name}: {out['limit_tok_s']:.0f} tok/s  (weights {out['weight_bytes_per_token'] / 1e6:.1f} MB/token, "
                  f"{out['matmul_flop_per_token'] / 1e6:.0f} MFLOP/token; peaks fp32 {out['peak_fp32_GFLOPs']:.0f} GFLOP/s, "
                  f"int8 {out['peak_int8_GOPs']:.0f} GOP/s)")
    table = Table()
    for col in ("engine", "tok/s (median)", "GB/s", "GFLOP/s", f"× {limit_name}", "runs"):
        table.add_column(col, justify="right")
    for r in out["results"]:
        table.add_row(r["engine"], f"{r['tok_s']:.1f}", f"{r['GB_s']:.1f}", f"{r['GFLOP_s']:.1f}",
                      f"{r['fraction_of_limit']:.2f}", " ".join(str(x) for x in r["runs"]))
    console.print(table)
    if "ratio_vs_llama_cpp" in out:
        console.print(f"[bold]ponder / llama.cpp = {out['ratio_vs_llama_cpp']:.2f}×[/bold]")
