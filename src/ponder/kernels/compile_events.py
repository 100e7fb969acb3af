"""Who hears that a kernel is being compiled, whatever compiles it (Numba or the native runtime).

    listeners: callables listener(name, seconds)

A listener is called with seconds None as a top-level compilation starts (so that a notice can
say what it is doing while it does it) and with its wall seconds when it ends; never for a
load from a cache.  The native runtime (kernels/native/bind.py) reports its units here, and
the Numba kernel modules forward Numba's "numba:compile" events here (kernels/numba_setup.py),
so a listener needs no Numba import.  The library itself prints nothing: the CLI's first-run
notice (cli/compile_notice.py) is the listener.
"""

from __future__ import annotations

listeners: list = []


def started(name: str) -> None:
    for listener in list(listeners):
        listener(name, None)


def finished(name: str, seconds: float) -> None:
    for listener in list(listeners):
        listener(name, seconds)
