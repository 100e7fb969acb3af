"""`ponder` subcommands: pull, models, generate, chat, verify, info, bench, run, runs, report.

Errors a user can fix (PonderError) are printed as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys

from ponder.errors import PonderError


def _cmd_pull(args) -> int:
    from ponder.loading import registry

    path = registry.pull(args.name)
    print(path)
    return 0


def _cmd_models(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from ponder.loading import registry

    table = Table(title=f"models (cache: {registry.ponder_home()})")
    for col in ("name", "cached at", "description"):
        table.add_column(col)
    for row in registry.list_models():
        table.add_row(row["name"], row["path"] or "-", row["description"])
    Console().print(table)
    return 0


def speculative_option(args) -> dict:
    """The Engine keyword for --speculative: nothing when the flag is absent (the Engine's default)."""
    return {"speculative": args.speculative} if getattr(args, "speculative", None) else {}


def add_speculative_flag(p) -> None:
    p.add_argument("--speculative", choices=["off", "lookup", "recycling"], default=None,
                   help="draft tokens and verify them in one step while few sequences decode: prompt lookup or "
                        "Token Recycling (same tokens either way; default off)")


def _cmd_generate(args) -> int:
    from ponder import Engine, SamplingParams

    params = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                            max_tokens=args.max_tokens, seed=args.seed, stop=tuple(args.stop or ()))  # before the load
    tools = None
    if args.tools:
        from ponder.tools import get_tools

        tools = get_tools(args.tools)  # before the load: a bad name is a quick error
    engine = Engine.from_pretrained(args.model, threads=args.threads, **speculative_option(args))
    prompt = [{"role": "user", "content": args.prompt}] if args.chat else args.prompt
    if args.json:
        startup_over()
        result = engine.generate(prompt, params, tools)[0]
    else:
        result = _stream(engine, prompt, params, tools)
    if args.transcript:
        from ponder.engine import transcript

        transcript.save(engine.transcript(result), args.transcript)
    if args.json:
        print(json.dumps({
            "model": args.model,
            "prompt_token_ids": result.prompt_token_ids,
            "token_ids": result.token_ids,
            "text": result.text,
            "finish_reason": result.finish_reason,
            "logprobs": result.logprobs,
            "seed": result.seed,
            **({"tool_calls": result.outputs[0].tool_calls, "tool_mask": result.outputs[0].tool_mask}
               if tools else {}),
        }))
    return 0


def _stream(engine, prompt, params, tools=None):
    """Generate, writing the text to stdout as it becomes final; returns the result."""
    from ponder.cli.stream import stream

    result = stream(engine, engine.add_request(prompt, params, tools), params, sys.stdout, first_step=startup_over)
    if result.error is not None:
        raise result.error
    sys.stdout.write("\n")
    return result


def _cmd_verify(args) -> int:
    from ponder import Engine
    from ponder.engine import transcript

    t = transcript.load(args.file)
    tools = None
    if t.get("tools"):
        from ponder.tools import get_tools

        tools = get_tools(t["tools"])
    engine = Engine.from_pretrained(args.model or t["model"]["name"], threads=args.threads,
                                    activation_bits=t.get("activation_bits", 16))
    report = engine.verify(t, tools)
    print(report.summary())
    if report.divergence and args.trace:
        for row in report.divergence.trace[-args.trace:]:
            print(json.dumps(row))
    return 0 if report.verified else 1


def _cmd_bench(args) -> int:
    from ponder.bench import suite

    if args.kind == "kernels":
        out = suite.run_kernels(args.model, args.threads, args.repeats)
    elif args.kind == "start":
        from ponder.bench.start import run_start

        out = run_start(args.model, args.threads, args.vs, args.repeats)
    elif args.kind == "ttc":
        from ponder.bench.ttc import Workload, run_ttc

        out = run_ttc(args.model, args.threads, args.vs,
                      Workload(suite=args.suite, problems=args.problems, samples=args.samples or 8,
                               max_tokens=args.tokens or 128))
    elif args.kind == "parallel":
        out = suite.run_parallel(args.model, args.threads, args.vs, args.samples or 16, args.prompt_tokens,
                                 args.tokens or 256, args.repeats, args.speculative)
    elif args.kind == "prefix":
        out = suite.run_prefix(args.model, args.threads, args.prompt_tokens if args.prompt_tokens != 256 else 1000,
                               args.repeats)
    elif args.kind == "decode" and args.speculative:
        from ponder.bench.spec_decode import run_spec_decode

        out = run_spec_decode(args.model, args.threads, args.speculative, args.vs, args.tokens or 128, args.repeats,
                              args.speculative_tokens, args.speculative_shared, not args.speculative_cold)
    else:
        tokens = args.tokens or (256 if args.kind == "prefill" else 64)
        out = suite.run_speed(args.kind, args.model, args.threads, args.vs, tokens, args.repeats)
    if args.json:
        print(json.dumps(out))
    else:
        suite.print_report(out)
    return 0


def _wide_console():
    from rich.console import Console

    # tables of results stay whole when piped to a file, instead of wrapping at 80 columns
    return Console() if sys.stdout.isatty() else Console(width=200)


def _run_config(args):
    from dataclasses import fields

    from ponder.runner import RunConfig
    from ponder.strategies import Options

    given = {f.name: getattr(args, f.name) for f in fields(Options) if getattr(args, f.name, None) is not None}
    options = Options(**given).to_dict()
    return RunConfig(suite=args.suite, difficulty=args.difficulty, problems=args.problems, strategy=args.strategy,
                     seed=args.seed, model=args.model, number_format=args.number_format,
                     prompt_style=args.prompt_style, shots=args.shots, shot_match=args.shot_match,
                     tools=[t for t in (args.tools or "").split(",") if t.strip()],
                     tool_exemplars=False if args.no_tool_exemplars else None, categories=args.categories.split(",") if args.categories else [],
                     on_error=args.on_error, checker=args.checker, scorer=args.scorer, options=options)


def _cmd_run(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ponder import Engine
    from ponder.report import summary_table
    from ponder.runner import Interrupted, execute, prepare, resume_config
    from ponder.store import RunStore
    from ponder.strategies import EngineBackend

    err = Console(stderr=True)
    store = RunStore(args.store)
    if args.resume is not None:
        config = resume_config(store, args.resume)
    else:
        config = _run_config(args)
    _, warnings, _ = prepare(config)  # bad input fails here, before the model loads
    for w in warnings:
        err.print(f"[yellow]warning:[/] {w}", highlight=False)
    if args.backend == "openai":
        from ponder.strategies.openai_backend import OpenAIBackend

        if not args.base_url:
            raise PonderError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        tokenizer = None
        if args.tokenizer:
            from ponder.loading.model_files import load_model

            tokenizer = load_model(args.tokenizer).tokenizer
        backend = OpenAIBackend(args.base_url, api_key=args.api_key, model=args.served_model, tokenizer=tokenizer)
    else:
        backend = EngineBackend(Engine.from_pretrained(config.model, threads=args.threads))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("acc {task.fields[acc]}"), TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn())
    with Progress(*columns, console=err, disable=args.no_progress) as progress:
        task = progress.add_task(f"{config.strategy} on {config.suite}", total=None, acc="-", tps="-")

        from ponder.cli import compile_notice

        notice = compile_notice.install()

        def on_progress(done, total, stats):
            acc = f"{100 * stats['score'] / done:.1f}%" if done else "-"
            tps = f"{stats['generated'] / stats['wall']:.1f}" if stats["wall"] > 0 else "-"  # compiling left out
            progress.update(task, completed=done, total=total, acc=acc, tps=tps)

        try:
            run_id = execute(config, backend, store, run_id=args.resume, on_progress=on_progress,
                             compile_clock=lambda: notice.seconds)
        except Interrupted as e:
            progress.stop()
            err.print(f"ponder: {e}", highlight=False)
            return 130
    summary = store.summary(run_id)
    _wide_console().print(summary_table([summary], title=f"run {run_id}: {config.suite} d{config.difficulty}, "
                                                   f"{config.model}, seed {config.seed}"))
    return 0


def _cmd_runs(args) -> int:
    from ponder.report import runs_table
    from ponder.runner import resume_command
    from ponder.store import RunStore

    store = RunStore(args.store)
    runs = store.runs()
    for r in runs:
        if "damaged" in r:
            print(f"ponder: warning: {r['damaged']}", file=sys.stderr)
    if args.json:
        print(json.dumps(runs, default=str))
    elif not runs:
        print(f"no runs yet in {store.path} (start one with `ponder run`)")
    else:
        _wide_console().print(runs_table(runs))
        for r in runs:
            if r["status"] == "interrupted" and "damaged" not in r and r["done"] < r["n_problems"]:
                gone = " (its process is gone)" if r["process"] == "gone" else ""
                print(f"run {r['id']} was interrupted{gone}: continue it with `{resume_command(r['id'], store.path)}`")
    return 0


def _cmd_report(args) -> int:
    from ponder.report import plot_runs, select_runs, summary_table
    from ponder.store import RunStore

    store = RunStore(args.store)
    ids = select_runs(store.runs() if not args.runs else [], args.runs, args.last, store.path)
    summaries = [store.summary(r) for r in ids]
    _wide_console().print(summary_table(summaries))
    name = "-".join(map(str, ids)) if len(ids) <= 4 else f"{ids[0]}-to-{ids[-1]}"
    out = args.out or f"ponder-report-{name}.png"
    print(f"wrote {plot_runs(summaries, out)}")
    return 0


def _cmd_chat(args) -> int:
    from ponder.cli import chat

    return chat.run(args)


def _cmd_info(args) -> int:
    from ponder.cli import info

    return info.run(args)


def _cmd_serve(args) -> int:
    from ponder.server.serve import serve

    from ponder.server.serve import parse_size

    kv_memory = parse_size(args.kv_memory) if args.kv_memory is not None else None
    return serve(args.model, host=args.host, port=args.port, api_key=args.api_key, max_queue=args.max_queue,
                 threads=args.threads, kv_memory=kv_memory, **speculative_option(args))


class _Subcommand(argparse.ArgumentParser):
    """A subcommand's parser that can add its arguments when it is first used (parsed, or its help shown).

    `run`'s arguments name the strategies, suites and prompt styles, which means importing
    those packages: every other command (generate above all, whose start is timed against
    llama.cpp) would pay for them on each start.
    """

    def __init__(self, *args, populate=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._populate = populate

    def _ensure_populated(self) -> None:
        if self._populate is not None:
            populate, self._populate = self._populate, None
            populate(self)

    def parse_known_args(self, args=None, namespace=None):
        self._ensure_populated()
        return super().parse_known_args(args, namespace)

    def format_usage(self):
        self._ensure_populated()
        return super().format_usage()

    def format_help(self):
        self._ensure_populated()
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    from ponder.loading.registry import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="ponder", description="Exact, reproducible test-time reasoning on your CPU.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Subcommand)

    p = sub.add_parser("pull", help="fetch a known model into the cache")
    p.add_argument("name", nargs="?", default=DEFAULT_MODEL)
    p.set_defaults(func=_cmd_pull)

    p = sub.add_parser("models", help="list known and cached models")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("generate", help="generate text for one prompt")
    p.add_argument("prompt")
    p.add_argument("-m", "--model", default=DEFAULT_MODEL, help="model name or path (.gguf or checkpoint dir)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (the default) is greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--stop", action="append", help="stop string (repeatable)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print ids, text and finish reason as one JSON object")
    p.add_argument("--transcript", metavar="FILE", help="write a replayable transcript (see `ponder verify`)")
    add_speculative_flag(p)
    p.add_argument("--tools", default=None, metavar="calc[,python]",
                   help="tools the model may call, run inside the engine's decoding loop")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("chat", help="talk with a model in the terminal (streamed; /help for commands)")
    p.add_argument("-m", "--model", default=DEFAULT_MODEL, help="model name or path (.gguf or checkpoint dir)")
    p.add_argument("--temperature", type=float, default=0.7, help="0 is greedy (default 0.7; /temperature T)")
    p.add_argument("--seed", type=int, default=None, help="seed for every reply (default: a fresh one; /seed N)")
    p.add_argument("--max-tokens", type=int, default=1024, help="longest reply (default 1024)")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--threads", type=int, default=None)
    add_speculative_flag(p)
    p.set_defaults(func=_cmd_chat)

    p = sub.add_parser("info", help="version, instruction set, threads, kernel cache and cached models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("verify", help="replay a transcript and report the first divergent token, if any")
    p.add_argument("file")
    p.add_argument("-m", "--model", default=None, help="model to replay with (default: the transcript's)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--trace", type=int, default=5, help="show the logprob trace of the last N positions")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("serve", help="serve the OpenAI-compatible HTTP API (completions, chat, tokenizer)")
    p.add_argument("-m", "--model", default=DEFAULT_MODEL, help="model name or path (.gguf or checkpoint dir)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None,
                   help="require Authorization: Bearer KEY (default: $PONDER_API_KEY if set, else no key; the "
                        "variable keeps the key out of `ps`)")
    p.add_argument("--max-queue", type=int, default=256,
                   help="prompts held at once, running or waiting; more get 429 (default 256)")
    p.add_argument("--kv-memory", default=None, metavar="SIZE",
                   help="memory for the KV cache pool, e.g. 512M or 2G (default 512M); it bounds the tokens held "
                        "by all running requests, and so the longest prompt")
    p.add_argument("--threads", type=int, default=None)
    add_speculative_flag(p)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("bench", help="measure speed against llama.cpp and the machine's limits "
                                     "(ttc: the test-time workload, greedy + majority@N; start: fresh "
                                     "processes to the first token)")
    p.add_argument("kind", choices=["kernels", "decode", "prefill", "parallel", "prefix", "ttc", "start"])
    p.add_argument("-m", "--model", default=DEFAULT_MODEL)
    p.add_argument("--vs", choices=["llama.cpp"], default=None, help="also run llama.cpp (pip install 'ponder[bench]')")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=None,
                   help="tokens to decode (64), prompt length to prefill (256), or ttc: max tokens per answer (128)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--samples", type=int, default=None,
                   help="parallel: samples of the one prompt (16); ttc: majority@N (8)")
    p.add_argument("--problems", type=int, default=40, help="ttc: problems (40)")
    p.add_argument("--suite", default="words", help="ttc: the problem suite (words)")
    p.add_argument("--prompt-tokens", type=int, default=256, help="parallel: prompt length; prefix: shared prefix (1000)")
    p.add_argument("--speculative", choices=["lookup", "recycling"], default=None,
                   help="decode: chat answers with this speculation vs without; parallel: also run with it on")
    p.add_argument("--speculative-tokens", type=int, default=None,
                   help="decode --speculative: draft tokens per step (the engine's default for the mode)")
    p.add_argument("--speculative-shared", action="store_true",
                   help="decode --speculative: one proposer (Token Recycling table) for all requests")
    p.add_argument("--speculative-cold", action="store_true",
                   help="decode --speculative recycling: tables start empty, not from the model's prior")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("run", help="solve a suite of checkable problems with a test-time strategy",
                       populate=_add_run_args)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("runs", help="list the stored runs")
    p.add_argument("--store", default=None, help="results file (default $PONDER_HOME/runs.sqlite)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_runs)

    p = sub.add_parser("report", help="compare runs: a table and a PNG of accuracy against generated tokens")
    p.add_argument("runs", nargs="*", type=int, metavar="RUN",
                   help="run ids (default: the latest run and the other runs of its task)")
    p.add_argument("--last", type=int, default=None, metavar="N", help="the N latest runs")
    p.add_argument("-o", "--out", default=None, help="PNG path (default ponder-report-RUNS.png)")
    p.add_argument("--store", default=None, help="results file (default $PONDER_HOME/runs.sqlite)")
    p.set_defaults(func=_cmd_report)
    return parser


def _add_run_args(p) -> None:
    from ponder.loading.registry import DEFAULT_MODEL
    from ponder.strategies import STRATEGIES
    from ponder.tasks import PROMPT_STYLES, SHOT_MATCHES, SUITES

    p.add_argument("--suite", default="arithmetic", help=f"{', '.join(SUITES)}, or a path to a .jsonl file")
    p.add_argument("--backend", choices=["local", "openai"], default="local",
                   help="local: this machine's engine; openai: any OpenAI-compatible server (--base-url)")
    p.add_argument("--base-url", default=None, help="openai backend: e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--api-key", default=None,
                   help="openai backend: bearer token (default: $PONDER_API_KEY, else $OPENAI_API_KEY; the "
                        "variables keep the key out of `ps`)")
    p.add_argument("--served-model", default=None, help="openai backend: model id (default: the server's first)")
    p.add_argument("--tokenizer", default=None,
                   help="openai backend: local model name/path whose tokenizer renders chats (default: server /tokenize)")
    p.add_argument("--difficulty", type=int, default=1, help="digits (arithmetic) or size (algorithmic)")
    p.add_argument("--problems", type=int, default=50)
    p.add_argument("--categories", default=None, help="comma-separated subset, e.g. add,mul")
    p.add_argument("--strategy", default="greedy", help=", ".join(STRATEGIES))
    p.add_argument("--samples", type=int, default=None, help="N samples (k for short-m@k, the cap for adaptive)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-m", "--model", default=DEFAULT_MODEL)
    p.add_argument("--number-format", choices=["plain", "commas"], default="plain")
    p.add_argument("--prompt-style", choices=list(PROMPT_STYLES), default="direct")
    p.add_argument("--tools", default=None, metavar="calc[,python]",
                   help="tools the model may call while it answers: calc (exact arithmetic before '='), "
                        "python (a sandboxed ```python block); works with every strategy and backend")
    p.add_argument("--no-tool-exemplars", action="store_true",
                   help="leave out the tools' few-shot exemplars (on by default with --tools)")
    p.add_argument("--shots", type=int, default=0,
                   help="K worked examples from the suite's own generator before each problem (disjoint from it; "
                        "with calc, each worked as 'expression = value')")
    p.add_argument("--shot-match", choices=list(SHOT_MATCHES), default="any",
                   help="any: the same K shots for every problem; category: K of the problem's own category "
                        "(e.g. add/fraction)")
    p.add_argument("--checker", default=None, help="override the answer kind: number, list, text, latex")
    p.add_argument("--on-error", choices=["stop", "skip"], default="stop", help="bad JSONL lines")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (default 0.7)")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--min-p", type=float, default=None)
    p.add_argument("--max-tokens", type=int, default=None, help="per answer (default 128)")
    p.add_argument("--batch", type=int, default=None,
                   help="samples per round: adaptive-majority, best-of-n --select verifier (4)")
    p.add_argument("--confidence", type=float, default=None, help="adaptive-majority: stop at this posterior (0.95)")
    p.add_argument("--m", type=int, default=None, help="short-m@k: vote among the first m to finish (3)")
    p.add_argument("--chunk", type=int, default=None, help="short-m@k: tokens per lockstep round (8)")
    p.add_argument("--select", choices=["oracle", "logprob", "weighted", "verifier"], default=None,
                   help="best-of-n selector (verifier: suites with a solution verifier; stops at the first verified)")
    p.add_argument("--beam-width", type=int, default=None)
    p.add_argument("--expand", type=int, default=None, help="beam: candidates per beam and step (3)")
    p.add_argument("--probe-tokens", type=int, default=None, help="beam: tokens before early rejection (6)")
    p.add_argument("--keep", type=float, default=None, help="beam: fraction of probed candidates kept (0.5)")
    p.add_argument("--max-steps", type=int, default=None, help="beam, smc: steps (8)")
    p.add_argument("--step-tokens", type=int, default=None, help="beam, smc: tokens per step; self-verify: per check (48)")
    p.add_argument("--potential", choices=["likelihood", "tool", "verifier"], default=None,
                   help="smc: what weighs a particle (likelihood)")
    p.add_argument("--beta", type=float, default=None, help="smc: weight = exp(beta * potential) (1.0)")
    p.add_argument("--unconfirmed-weight", type=float, default=None,
                   help="self-verify: the vote of an answer its check did not confirm (0.25)")
    p.add_argument("--scorer", default=None, help="beam: MODULE:FUNCTION(question, partial) -> score")
    p.add_argument("--resume", type=int, default=None, metavar="RUN_ID", help="continue an interrupted run")
    p.add_argument("--store", default=None, help="results file (default $PONDER_HOME/runs.sqlite)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")


# commands that run kernels: the first run on a machine compiles them, and says so
_KERNEL_COMMANDS = {"generate", "verify", "serve", "bench", "run", "chat"}


def _import_numpy_with_one_blas_thread() -> None:
    """Import NumPy with OpenBLAS kept to one thread, unless the user chose a count.

    No BLAS runs on the engine's path (the kernels are ponder's own), yet OpenBLAS starts a
    thread per core, with its buffers, when NumPy is imported: 70 ms of a 1 s start, measured.
    OpenBLAS reads the variable once, as it loads; it is removed again at once, so the
    processes this one starts (llama.cpp's side of `ponder bench start`, tools) see the
    user's environment.
    """
    if "numpy" in sys.modules or "OPENBLAS_NUM_THREADS" in os.environ:
        return
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        import numpy  # noqa: F401
    finally:
        del os.environ["OPENBLAS_NUM_THREADS"]


_freeze_start_up = False  # main() sets it when it runs as the program (see startup_over)


def startup_over() -> None:
    """Turn the cyclic garbage collector back on, with what start-up built out of its scans.

    main() turns it off first: start-up (the imports, the tokenizer, Numba's typing
    registries on the first kernel call) makes half a million long-lived objects, and the
    collector scanned them over and over for ~0.1 s of a 1 s `ponder generate` while
    freeing nothing.  Turned back on as they are, they would all be scanned at once by the
    next collection (60 ms, measured): gc.freeze() moves them out of its reach first, when
    main() runs as the program.  Called from other code (tests), main() does not freeze:
    what is frozen is never collected, and an earlier engine's cycles would stay for good.
    `generate` calls this once its first step is done; every other command right after
    parsing.  (Decoding makes no cyclic garbage: 200 tokens left 0 unreachable objects.)
    """
    if not gc.isenabled():
        if _freeze_start_up:
            gc.freeze()
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    global _freeze_start_up
    _freeze_start_up = argv is None  # `ponder ...` itself, not a call from other code
    gc.disable()  # until startup_over()
    try:
        args = build_parser().parse_args(argv)
        if args.command != "generate":
            startup_over()
        if args.command in _KERNEL_COMMANDS:
            _import_numpy_with_one_blas_thread()
            from ponder.cli import compile_notice

            compile_notice.install()
        return args.func(args)
    except PonderError as e:
        print(f"ponder: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ponder: interrupted", file=sys.stderr)
        return 130
    finally:
        startup_over()  # main() also runs inside other processes (tests): leave the collector on


if __name__ == "__main__":
    sys.exit(main())
