"""`ponder chat`: a conversation with a model in the terminal, streamed token by token.

Each turn renders the whole conversation with the model's chat template and sends it as one
request; the engine's prefix cache still holds the conversation so far, so a turn computes
little more than its new tokens, and the footer says how many prompt tokens came from the cache.

Ctrl-C stops a reply (what was said stays in the conversation) and, at the prompt, clears the
line; Ctrl-D exits.  The interrupt is only noted by a signal handler and acted on between two
engine steps, so the engine is never left halfway through a step.
"""

from __future__ import annotations

import signal
import sys
import time

from ponder.errors import PonderError

HELP = """commands:
  /reset          start a new conversation (the system prompt stays)
  /seed N         sample replies with seed N (default: a fresh seed each reply, shown in /save)
  /temperature T  sampling temperature (0 is greedy)
  /save FILE      write the last reply as a transcript (`ponder verify FILE` replays it)
  /help           this list
  /bye            exit (or Ctrl-D)
Ctrl-C stops a reply."""


class Chat:
    """The conversation and its settings; `turn` streams one reply to `out`."""

    def __init__(self, engine, out, *, temperature: float, seed: int | None, max_tokens: int,
                 system: str | None = None):
        self.engine = engine
        self.out = out
        self.temperature, self.seed, self.max_tokens = temperature, seed, max_tokens
        self.system = [{"role": "system", "content": system}] if system else []
        self.messages: list[dict] = list(self.system)
        self.last = None  # the last reply's GenerationResult (what /save writes)
        self._stop = False
        self._dim = ("\x1b[2m", "\x1b[0m") if getattr(out, "isatty", lambda: False)() else ("", "")

    def say(self, text: str) -> None:
        self.out.write(f"{self._dim[0]}{text}{self._dim[1]}\n")
        self.out.flush()

    # -- commands -------------------------------------------------------------
    def command(self, line: str) -> bool:
        """Run a /command; False when the chat should end."""
        from ponder import SamplingParams

        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        if name in ("/bye", "/exit", "/quit"):
            return False
        if name == "/help":
            self.say(HELP)
        elif name == "/reset":
            self.messages = list(self.system)
            self.last = None
            self.say("new conversation")
        elif name == "/seed":
            try:
                seed = int(arg)
                SamplingParams(seed=seed)
            except (ValueError, PonderError):
                self.say(f"/seed takes an integer in [0, 2**63) (got {arg!r})")
                return True
            self.seed = seed
            self.say(f"seed {seed}")
        elif name == "/temperature":
            try:
                t = float(arg)
                SamplingParams(temperature=t)
                if t != t or t == float("inf"):
                    raise ValueError
            except (ValueError, PonderError):
                self.say(f"/temperature takes a number >= 0 (got {arg!r})")
                return True
            self.temperature = t
            self.say(f"temperature {t:g}")
        elif name == "/save":
            self.save(arg)
        else:
            self.say(f"unknown command {name}; /help lists them")
        return True

    def save(self, path: str) -> None:
        from ponder.engine import transcript

        if not path:
            self.say("/save needs a file name")
        elif self.last is None:
            self.say("nothing to save yet: no reply in this conversation")
        else:
            try:
                transcript.save(self.engine.transcript(self.last), path)
            except OSError as e:
                self.say(f"cannot write {path}: {e.strerror}")
                return
            self.say(f"saved the last reply, with the conversation before it, to {path}"
                     f" (check it with `ponder verify {path}`)")

    # -- one reply -------------------------------------------------------------
    def _on_sigint(self, signum, frame) -> None:
        self._stop = True

    def turn(self, text: str) -> None:
        """Send a user message and stream the reply."""
        from ponder import SamplingParams
        from ponder.cli import compile_notice
        from ponder.cli.stream import stream

        engine = self.engine
        messages = self.messages + [{"role": "user", "content": text}]
        params = SamplingParams(temperature=self.temperature, seed=self.seed, max_tokens=self.max_tokens)
        self._stop = False
        previous = signal.signal(signal.SIGINT, self._on_sigint)  # from here on, Ctrl-C means "stop the reply"
        compiling = compile_notice.install()
        t0, compiled_before = time.perf_counter(), compiling.seconds
        try:
            try:
                rid = engine.add_request(messages, params)
            except PonderError as e:
                self.say(f"error: {e}" + ("; /reset starts a new conversation" if len(self.messages) > 1 else ""))
                return
            result = stream(engine, rid, params, self.out, lambda: self._stop)
        finally:
            signal.signal(signal.SIGINT, previous)
        wall = time.perf_counter() - t0 - (compiling.seconds - compiled_before)  # tok/s without a first compile
        self.out.write("\n")
        self.messages = messages + [{"role": "assistant", "content": result.text}]
        self.last = result
        u = result.usage
        n = len(result.token_ids)
        stopped = {"abort": ", stopped", "length": ", cut at --max-tokens or the context"}.get(result.finish_reason, "")
        self.say(f"[{n} tokens, {n / wall if wall > 0 else 0:.1f} tok/s{stopped}; prompt {u['prompt_tokens']} tokens, "
                 f"{u['cached_tokens']} reused from the cache]")


def run(args) -> int:
    """The `ponder chat` command."""
    from ponder import Engine, SamplingParams

    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:  # pragma: no cover  (not on every platform)
        pass
    SamplingParams(temperature=args.temperature, seed=args.seed, max_tokens=args.max_tokens)  # fail before loading
    from ponder.cli.main import speculative_option

    engine = Engine.from_pretrained(args.model, threads=args.threads, **speculative_option(args))
    chat = Chat(engine, sys.stdout, temperature=args.temperature, seed=args.seed, max_tokens=args.max_tokens,
                system=args.system)
    info = engine.info()
    chat.say(f"ponder chat with {info.model_name} (context {info.context_length} tokens, {info.isa}, "
             f"{info.threads} threads). /help for commands, Ctrl-D to exit.")
    while True:
        try:
            line = input(">>> ")
        except EOFError:  # Ctrl-D
            sys.stdout.write("\n")
            return 0
        except KeyboardInterrupt:  # Ctrl-C at the prompt clears the line, as in a shell
            sys.stdout.write("\n")
            continue
        # bytes a terminal sends that are not UTF-8 arrive as lone surrogates (surrogateescape): not text
        line = line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        if not line.strip():
            continue
        if line.startswith("/"):
            if not chat.command(line):
                return 0
            continue
        chat.turn(line)
