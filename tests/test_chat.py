"""`ponder chat` through a pseudo-terminal: multi-turn with prefix reuse, the /commands, a transcript that
`ponder verify` accepts, Ctrl-C stopping a reply without ending the program, Ctrl-D exiting."""

import os
import pty
import re
import select
import signal
import sys
import time

import pytest

from ponder.cli.main import main

from tiny_models import write_gguf

PROMPT = b">>> "


class Terminal:
    """`ponder ARGS` on a pseudo-terminal, as a user would run it."""

    def __init__(self, args, home):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PONDER_HOME": str(home), "TERM": "dumb"}
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: becomes `ponder` with the pty as its controlling terminal
            os.execve(sys.executable, [sys.executable, "-m", "ponder.cli.main", *args], env)
        self.seen = b""

    def read_until(self, marker: bytes, timeout: float = 300) -> bytes:
        """Everything after the previous read up to and including `marker`."""
        deadline = time.time() + timeout
        while marker not in self.seen:
            left = deadline - time.time()
            ready, _, _ = select.select([self.fd], [], [], max(left, 0))
            if not ready:
                raise AssertionError(f"no {marker!r} within {timeout}s; the terminal shows {self.seen[-1500:]!r}")
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # the child exited
                chunk = b""
            if not chunk:
                raise AssertionError(f"exited before {marker!r}; the terminal shows {self.seen[-1500:]!r}")
            self.seen += chunk
        i = self.seen.index(marker) + len(marker)
        out, self.seen = self.seen[:i], self.seen[i:]
        return out

    def wait_output(self, timeout: float = 300) -> None:
        """Until the terminal shows something not read yet."""
        deadline = time.time() + timeout
        while not self.seen and time.time() < deadline:
            if select.select([self.fd], [], [], max(deadline - time.time(), 0))[0]:
                self.seen += os.read(self.fd, 4096)
        assert self.seen, f"nothing shown within {timeout}s"

    def exited(self) -> bool:
        return os.waitpid(self.pid, os.WNOHANG)[0] != 0

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self, timeout: float = 30) -> int:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:  # drain, so the child never blocks on a full terminal
                if select.select([self.fd], [], [], 0.05)[0]:
                    self.seen += os.read(self.fd, 4096)
            except OSError:
                pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"still running after {timeout}s; the terminal shows {self.seen[-1500:]!r}")

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


FOOTER = re.compile(rb"\[(\d+) tokens, [\d.]+ tok/s([^;]*); prompt (\d+) tokens, (\d+) reused from the cache\]")


def _footer(text: bytes):
    m = FOOTER.search(text)
    assert m, text
    return int(m[1]), m[2].decode(), int(m[3]), int(m[4])


def test_chat_multi_turn_commands_and_transcript(tiny_llama, tmp_path, capsys):
    term = Terminal(["chat", "-m", str(tiny_llama[2]), "--max-tokens", "6", "--seed", "3"], tmp_path)
    try:
        assert b"ponder chat with" in term.read_until(PROMPT)
        term.send(b"hello there\r")
        n1, _, prompt1, cached1 = _footer(term.read_until(PROMPT))
        assert 0 < n1 <= 6 and cached1 == 0
        term.send(b"and then?\r")
        _, _, prompt2, cached2 = _footer(term.read_until(PROMPT))
        # the second turn's prompt starts with the first turn's prompt and reply: the cache serves them
        assert prompt2 > prompt1 + n1 and cached2 >= prompt1
        term.send(b"/temperature 0\r")
        assert b"temperature 0" in term.read_until(PROMPT)
        term.send(b"/seed nope\r")
        assert b"/seed takes an integer" in term.read_until(PROMPT)
        term.send(b"caf\xe9 \xff\r")  # not UTF-8: replaced, not a traceback
        _footer(term.read_until(PROMPT))
        term.send(b"/frobnicate\r")
        assert b"unknown command /frobnicate" in term.read_until(PROMPT)
        term.send(b"one more\r")
        _footer(term.read_until(PROMPT))
        saved = tmp_path / "chat.json"
        term.send(b"/save " + str(saved).encode() + b"\r")
        assert b"ponder verify" in term.read_until(PROMPT)
        term.send(b"/reset\r")
        assert b"new conversation" in term.read_until(PROMPT)
        term.send(b"hello there\r")  # a new conversation: the same first prompt, now wholly cached
        _, _, prompt4, cached4 = _footer(term.read_until(PROMPT))
        assert prompt4 == prompt1 and cached4 >= prompt1 - 1
        term.send(b"\x04")  # Ctrl-D
        assert term.wait() == 0
    finally:
        term.close()
    assert main(["verify", str(saved), "-m", str(tiny_llama[2])]) == 0
    assert "verified" in capsys.readouterr().out


def test_ctrl_c_stops_a_reply_not_the_program(tiny_llama, tmp_path):
    w, cfg = tiny_llama[0], tiny_llama[1]
    long_ctx = write_gguf(tmp_path / "long.gguf", w, {**cfg, "max_position_embeddings": 8192})
    term = Terminal(["chat", "-m", str(long_ctx), "--max-tokens", "8000", "--temperature", "0"], tmp_path)
    try:
        term.read_until(PROMPT)
        # Ctrl-C at the prompt: a fresh prompt, not an exit.  CPython's readline loses a SIGINT that
        # lands between the prompt's write and its select(); a person is never that fast, but on a
        # loaded machine the child can be descheduled in that window for longer than any fixed
        # wait here (seen in a full test run).  So press again, as a person would, if no prompt came.
        for attempt in range(5):
            time.sleep(0.2)
            term.send(b"\x03")
            try:
                term.read_until(PROMPT, timeout=10)
                break
            except AssertionError:
                if attempt == 4 or term.exited():
                    raise
        term.send(b"tell me everything\r")
        term.read_until(b"everything\r\n")  # the terminal's echo
        term.wait_output()  # the reply is streaming (8000 tokens take far longer)
        term.send(b"\x03")
        n, stopped, _, _ = _footer(term.read_until(PROMPT))
        assert stopped == ", stopped" and 0 < n < 8000
        term.send(b"/bye\r")
        assert term.wait() == 0
    finally:
        term.close()
