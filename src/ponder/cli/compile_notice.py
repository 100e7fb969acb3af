"""Tell the user, on stderr, when kernels are being compiled for this CPU, and how long it took.

Kernels are compiled the first time they run without a cached build (the native runtime's
objects, kernels/native, and any Numba kernel): on the first run on a machine (or after an
upgrade) that can be most of a minute, which looks like a hang unless it is said.  The
kernels report each real compilation (never a load from a cache) to kernels/compile_events,
so listening there gives the message exactly when compiling happens: a header once, one
line as each kernel starts, and the total at exit.  The listener also adds up the compile time, so a
tokens-per-second figure can leave it out (`ponder run`'s progress bar does).
Lines are whole and written to the current sys.stderr, so they also show above a
rich progress display (which redirects stderr while it is live).

It also says when the Token Recycling prior of a model is built (once per model file,
engine/recycling_prior.py), the other one-time wait of a first run.

Only the CLI installs it: the library itself prints nothing.
"""

from __future__ import annotations

import atexit
import sys


class CompileNotice:
    def __init__(self, stream=None):
        self.stream = stream  # None: sys.stderr at the time of writing
        self.kernels = 0  # top-level compilations seen
        self.seconds = 0.0  # wall time spent in them

    def __call__(self, name: str, seconds: float | None) -> None:
        """kernels.compile_events' listener: before (seconds None) and after a kernel compiles."""
        if seconds is None:
            self._begin(name)
        else:
            self.seconds += seconds

    def _begin(self, name: str) -> None:
        if self.kernels == 0:
            self._write(f"ponder: compiling kernels for this CPU ({_isa()}), once; later runs load them "
                        "from the cache\n")
            atexit.register(self._summary)
        self.kernels += 1
        self._write(f"  [{self.kernels}] {name}\n")

    def _summary(self) -> None:
        self._write(f"ponder: compiled {self.kernels} kernels in {self.seconds:.0f} s; they are cached now\n")

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stderr
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError, AttributeError):  # a closed or missing stderr must not break a run
            pass


def _isa() -> str:
    from ponder.kernels import isa

    return isa.current()


_installed: CompileNotice | None = None


def install(stream=None) -> CompileNotice:
    """Start listening (once per process); returns the notice, whose .seconds is the compile time so far."""
    global _installed
    if _installed is None:
        from ponder.kernels import compile_events

        _installed = CompileNotice(stream)
        compile_events.listeners.append(_installed)
        # the other one-time build a first run may do: the Token Recycling prior of a model
        from ponder.engine import recycling_prior

        recycling_prior.notice.append(lambda text: _installed._write(text + "\n"))
    return _installed
