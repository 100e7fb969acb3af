"""Which process is running a run, and whether it still exists.

A run records the PID and host of the process working on it, and on Linux the
process's start time: a PID alone can be reused after the process is gone.  A
run marked `running` whose process no longer exists was killed (SIGKILL, power
loss) without the chance to mark itself `interrupted`.
"""

from __future__ import annotations

import os
import socket


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) from /proc, or None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: the fields that follow start after the last ")"
    fields = text.rsplit(")", 1)[-1].split()
    return (fields[0], fields[19]) if len(fields) > 19 else None


def identity() -> dict:
    """This process: {"pid", "host", "start"} as recorded with a run."""
    pid = os.getpid()
    st = _stat(pid)
    return {"pid": pid, "host": socket.gethostname(), "start": st[1] if st else None}


def state(pid: int | None, host: str | None, start: str | None) -> str:
    """"alive", "gone", or "unknown" (another host, or nothing recorded) for a recorded process."""
    # os.kill(pid, 0) probes a process only on POSIX (on Windows signal 0 is a Ctrl-C event)
    if not pid or not host or host != socket.gethostname() or os.name != "posix":
        return "unknown"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:  # exists, owned by someone else
        pass
    except OSError:
        return "unknown"
    st = _stat(pid)
    if st is None:
        return "alive"
    status, started = st
    # a killed process that its parent has not reaped yet is a zombie; a different start time is a reused PID
    return "gone" if status in ("Z", "X") or (start is not None and started != start) else "alive"


def is_self(pid: int | None, host: str | None) -> bool:
    """Whether a recorded process is this one."""
    return pid == os.getpid() and host == socket.gethostname()
