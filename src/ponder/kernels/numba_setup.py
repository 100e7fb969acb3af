"""What every module of Numba kernels does once per process, on import, before its first kernel loads.

Only the modules that define Numba kernels import this one (and so Numba): on the native
path (kernels/native) a process never imports Numba at all, which is a third of a warm start.

* Numba's NumPy support: Numba imports numba.np.arraymath when the first kernel is loaded
  from its cache, and that module imports scipy.linalg, where installed, only to set a flag
  that picks a BLAS inner product for np.convolve/np.correlate (measured: most of a second,
  in a process that needs neither).  No ponder kernel calls those, and np.dot in a kernel
  still imports BLAS itself when it compiles, so the flag is set with scipy's BLAS module
  briefly hidden.
* Compile events: Numba fires "numba:compile" around each real compilation (never around a
  load from its cache), nested for a kernel's callees; the top-level ones are forwarded to
  kernels/compile_events.py under the kernel's name (less the source hash its name ends in).
"""

from __future__ import annotations

import re
import sys
import time

from ponder.kernels import compile_events

_BLAS = "scipy.linalg.cython_blas"
_ready = False


def prepare() -> None:
    global _ready
    if _ready:
        return
    _ready = True
    if "numba.np.arraymath" not in sys.modules and _BLAS not in sys.modules:
        sys.modules[_BLAS] = None  # an import of it now fails at once, without importing scipy
        try:
            import numba.np.arraymath  # noqa: F401
        finally:
            del sys.modules[_BLAS]
    from numba.core import event

    class _Forward(event.Listener):
        depth, name, t0 = 0, "", 0.0

        def on_start(self, ev) -> None:
            self.depth += 1
            if self.depth == 1:  # a kernel's callees compile inside it: one event per kernel
                self.name, self.t0 = _name(ev), time.perf_counter()
                compile_events.started(self.name)

        def on_end(self, ev) -> None:
            self.depth -= 1
            if self.depth == 0:
                compile_events.finished(self.name, time.perf_counter() - self.t0)

    event.register("numba:compile", _Forward())


def _name(ev) -> str:
    data = ev.data or {}
    fn = getattr(data.get("dispatcher"), "py_func", None)
    name = getattr(fn, "__qualname__", None) or "kernel"
    return re.sub(r"_[0-9a-f]{8,}$", "", name)  # the kernels' names end in a source hash
