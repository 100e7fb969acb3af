"""`ponder` subcommands: pull, models, generate (and more as the layers below grow).

Errors a user can fix (PonderError) are printed as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import json
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


def _cmd_generate(args) -> int:
    from ponder import Engine, SamplingParams

    engine = Engine.from_pretrained(args.model, threads=args.threads)
    prompt = [{"role": "user", "content": args.prompt}] if args.chat else args.prompt
    params = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                            max_tokens=args.max_tokens, seed=args.seed, stop=tuple(args.stop or ()))
    result = engine.generate(prompt, params)[0]
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
        }))
    else:
        print(result.text)
    return 0


def _cmd_verify(args) -> int:
    from ponder import Engine
    from ponder.engine import transcript

    t = transcript.load(args.file)
    engine = Engine.from_pretrained(args.model or t["model"]["name"], threads=args.threads)
    report = engine.verify(t)
    print(report.summary())
    if report.divergence and args.trace:
        for row in report.divergence.trace[-args.trace:]:
            print(json.dumps(row))
    return 0 if report.verified else 1


def _cmd_bench(args) -> int:
    from ponder.bench import suite

    if args.kind == "kernels":
        out = suite.run_kernels(args.model, args.threads, args.repeats)
    else:
        tokens = args.tokens or (256 if args.kind == "prefill" else 64)
        out = suite.run_speed(args.kind, args.model, args.threads, args.vs, tokens, args.repeats)
    if args.json:
        print(json.dumps(out))
    else:
        suite.print_report(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ponder.loading.registry import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="ponder", description="Exact, reproducible test-time reasoning on your CPU.")
    sub = parser.add_subparsers(dest="command", required=True)

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
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("verify", help="replay a transcript and report the first divergent token, if any")
    p.add_argument("file")
    p.add_argument("-m", "--model", default=None, help="model to replay with (default: the transcript's)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--trace", type=int, default=5, help="show the logprob trace of the last N positions")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("bench", help="measure speed against llama.cpp and the machine's limits")
    p.add_argument("kind", choices=["kernels", "decode", "prefill"])
    p.add_argument("-m", "--model", default=DEFAULT_MODEL)
    p.add_argument("--vs", choices=["llama.cpp"], default=None, help="also run llama.cpp (pip install 'ponder[bench]')")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=None, help="tokens to decode (64) or prompt length to prefill (256)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PonderError as e:
        print(f"ponder: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ponder: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
