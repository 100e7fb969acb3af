"""Tell the user, on stderr, when kernels are being compiled for this CPU, and how long it took.

Numba compiles a kernel the first time it runs without a cached build (and the native
runtime, kernels/native, compiles its objects; it calls this notice's `native`): on the first
run on a machine (or after an upgrade) that is most of a minute, which looks like a
hang unless it is said.  Numba fires a "numba:compile" event around each real
compilation (never around a load from its cache), so listening to it gives the
message exactly when compiling happens: a header once, one line as each kernel
starts, and the total at exit.  The listener also adds up the compile time, so a
tokens-per-second figure can leave it out (`ponder run`'s progress bar does).
Lines are whole and written to the current sys.stderr, so they also show above a
rich progress display (which redirects stderr while it is live).

It also says when the Token Recycling prior of a model is built (once per model file,
engine/recycling_prior.py), the other one-time wait of a first run.

Only the CLI installs it: the library itself prints nothing.
"""

from __future__ import annotations

import atexit
import re
import sys
import time


class CompileNotice:
    def __init__(self, stream=None):
        self.stream = stream  # None: sys.stderr at the time of writing
        self.kernels = 0  # top-level compilations seen
        self.seconds = 0.0  # wall time spent in them
        self._depth = 0
        self._t0 = 0.0

    # numba.core.event.Listener's methods (install() mixes that class in)
    def on_start(self, event) -> None:
        self._depth += 1
        if self._depth > 1:  # a kernel's callees compile inside it: one line per kernel
            return
        self._begin(_name(event))

    def native(self, unit: str, seconds: float | None) -> None:
        """The native runtime's listener (kernels/native/bind.py): before (seconds None) and after a unit compiles."""
        if seconds is None:
            self._begin(f"native {unit} kernels" if unit != "pool" else "native thread pool")
        else:
            self.seconds += seconds

    def _begin(self, name: str) -> None:
        if self.kernels == 0:
            self._write(f"ponder: compiling kernels for this CPU ({_isa()}), once; later runs load them "
                        "from the cache\n")
            atexit.register(self._summary)
        self.kernels += 1
        self._t0 = time.perf_counter()
        self._write(f"  [{self.kernels}] {name}\n")

    def on_end(self, event) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.seconds += time.perf_counter() - self._t0

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


def _name(event) -> str:
    data = event.data or {}
    fn = getattr(data.get("dispatcher"), "py_func", None)
    name = getattr(fn, "__qualname__", None) or "kernel"
    return re.sub(r"_[0-9a-f]{8,}$", "", name)  # the kernels' names end in a source hash


_installed: CompileNotice | None = None


def install(stream=None) -> CompileNotice:
    """Start listening (once per process); returns the notice, whose .seconds is the compile time so far."""
    global _installed
    if _installed is None:
        from numba.core import event

        _installed = type("CompileListener", (CompileNotice, event.Listener), {})(stream)
        event.register("numba:compile", _installed)
        # the other one-time build a first run may do: the Token Recycling prior of a model
        from ponder.engine import recycling_prior

        recycling_prior.notice.append(lambda text: _installed._write(text + "\n"))
        from ponder.kernels.native import bind

        bind.compile_listeners.append(_installed.native)
    return _installed
