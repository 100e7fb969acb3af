"""Running a model's Python program in a sandboxed subprocess: `run_python(code) -> SandboxResult`.

The program never runs in ponder's process.  What holds, layer by layer (the kernel's limits are
the real fence; the audit hook is a second one that also gives clear error messages):

- a fresh child interpreter, `python -s -S -P`: no site-packages, and an EMPTY environment (but for
  PYTHONHASHSEED=0, removed before the program runs), so no secret of the parent is inherited;
  cwd is a fresh temporary folder and `~` (no HOME) is nobody's nonexistent home;
- new mount, network and PID namespaces (`unshare --mount --net --pid --fork --kill-child`) when the
  machine allows: the network namespace has no interface up, so no connection leaves (not even to
  127.0.0.1); private tmpfs mounts cover the world-writable folders (/tmp, /var/tmp, /dev/shm,
  /run/lock), and the program's folder is on the private /tmp, gone when it ends; killing the
  namespace's first process kills every process the program forked, even ones that left the group;
- when started as root, the child drops to the unprivileged user `nobody` before the program runs:
  it cannot write outside its own temporary folder (which it owns) or read other users' files, and
  the process limit below is enforced (the kernel does not enforce RLIMIT_NPROC on root);
- resource limits (setrlimit): CPU seconds, address space, processes, file size, open files;
- a wall-clock timeout that kills the whole process group (and with it the PID namespace);
- output goes to a file in the temporary folder, capped by RLIMIT_FSIZE, and only the first
  `max_output` characters are read back, so a program printing forever cannot fill memory;
- an audit hook installed before the program: sockets, subprocesses, exec, ctypes and any open()
  outside the temporary folder raise PermissionError; new imports are impossible (sys.path is
  emptied after a fixed set of standard modules is preloaded), so behaviour does not depend on the
  host's installed packages.

The result is deterministic for a deterministic program (hash randomization is off).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

NOBODY = 65534
PRELOADED = ("math", "cmath", "fractions", "decimal", "itertools", "functools", "collections", "statistics",
             "random", "re", "string", "datetime", "heapq", "bisect", "operator", "json", "socket")


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 5.0
    cpu_seconds: int = 6  # a backstop above the wall clock, for processes that outlive the group kill
    memory_bytes: int = 512 << 20
    processes: int = 16
    file_bytes: int = 1 << 20
    open_files: int = 32
    max_output: int = 2000  # characters of output returned
    audit_hook: bool = True  # False only in tests: shows the kernel's fences hold on their own


@dataclass(frozen=True)
class SandboxResult:
    output: str  # stdout and stderr interleaved, at most max_output characters
    returncode: int | None  # None when killed at the wall-clock limit
    timed_out: bool
    truncated: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


# The child's first code: limits, preload, drop privileges, audit hook, then the program.
_BOOTSTRAP = r"""
import os, sys, resource
work, source = sys.argv[1], sys.argv[2]
cpu, mem, nproc, fsize, nofile, uid, hook_on = map(int, sys.argv[3:10])
del sys.argv[1:]
os.environ.pop("PYTHONHASHSEED", None)  # set only to make the child's hashing deterministic
for lim, v in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, mem), (resource.RLIMIT_FSIZE, fsize),
               (resource.RLIMIT_NOFILE, nofile), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(lim, (v, v))
import signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the file limit fails with an error instead
import traceback
for m in PRELOADED:
    __import__(m)
os.makedirs(work, mode=0o700, exist_ok=True)
if uid >= 0:
    os.chown(work, uid, uid)
os.chdir(work)
if uid >= 0:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
sys.path[:] = []
sys.path_importer_cache.clear()

def install(root):
    # constants live in this closure, out of reach of the program (it cannot reach the hook itself)
    blocked = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "pty.",
               "ctypes.", "os.putenv", "os.unsetenv", "shutil.", "winreg.", "_winapi.")
    paths = ("open", "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
             "os.symlink", "os.truncate", "os.utime", "os.listdir", "os.scandir", "os.chdir")
    realpath, join, fsdecode = os.path.realpath, os.path.join, os.fsdecode

    def inside(p):
        return isinstance(p, int) or realpath(join(root, fsdecode(p))).startswith(root)

    def hook(event, args):
        if event.startswith(blocked):
            raise PermissionError(f"{event} is not allowed in the sandbox")
        if event in paths and args and not inside(args[0]):
            raise PermissionError(f"{event} outside the sandbox folder is not allowed: {args[0]!r}")
        if event in ("os.rename", "os.link", "os.symlink") and len(args) > 1 and not inside(args[1]):
            raise PermissionError(f"{event} outside the sandbox folder is not allowed: {args[1]!r}")

    sys.addaudithook(hook)

if hook_on:
    install(os.path.realpath(work) + os.sep)
code = compile(source, "main.py", "exec")
del install, source, m, lim, v, work, cpu, mem, nproc, fsize, nofile, uid, hook_on, resource
try:
    exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
except SystemExit:
    raise
except BaseException as e:  # the traceback from the program's first frame: the bootstrap is not its business
    traceback.print_exception(type(e), e, e.__traceback__.tb_next)
    sys.exit(1)
""".replace("PRELOADED", repr(PRELOADED))


# Inside the new mount namespace: private, small tmpfs over every world-writable folder, so that
# even the unprivileged user can write nothing that outlives the sandbox or that others see.
_MOUNTS = ("mount -t tmpfs -o size=64m,mode=1777 ponder /tmp || exit 97; "
           "for d in /var/tmp /dev/shm /run/lock; do [ -d $d ] && mount -t tmpfs -o size=1m,mode=1777 ponder $d; done; "
           'exec "$@"')
PRIVATE_WORK = "/tmp/sandbox"  # on the private /tmp of the mount namespace


@functools.lru_cache(maxsize=1)
def _namespace_prefix() -> tuple[str, ...]:
    """The command that runs the child in new mount, network and PID namespaces, or () where the
    machine refuses them (then the audit hook, the rlimits and the uid are the fences)."""
    exe, sh = shutil.which("unshare"), shutil.which("sh")
    if not exe or not sh or not shutil.which("mount"):
        return ()
    for flags in (("--mount", "--net", "--pid", "--fork", "--kill-child"),
                  ("--user", "--map-root-user", "--mount", "--net", "--pid", "--fork", "--kill-child")):
        args = (exe, *flags, sh, "-c", _MOUNTS, "sh")
        try:
            if subprocess.run([*args, "true"], capture_output=True, timeout=10, env={}).returncode == 0:
                return args
        except (OSError, subprocess.SubprocessError):
            continue
    return ()


def isolation() -> dict:
    """What this machine's sandbox holds (for tests and `ponder` diagnostics)."""
    ns = _namespace_prefix()
    return {"namespaces": bool(ns), "user_namespace": "--user" in ns,
            "drops_to_nobody": os.geteuid() == 0 and "--user" not in ns}


def _interpreter() -> str:
    return os.path.realpath(sys.executable)


# The program travels as one argv string, and Linux caps one argument at 128 KiB (MAX_ARG_STRLEN):
# the bound is on its UTF-8 bytes, well below that.
MAX_CODE_BYTES = 64_000


def _unrunnable(code: str) -> str | None:
    """Why `code` cannot be handed to the child as an argument, or None."""
    if "\0" in code:
        return "NUL byte in the program"
    try:
        size = len(code.encode("utf-8"))
    except UnicodeEncodeError:
        return "the program is not valid Unicode (a lone surrogate)"
    return f"program longer than {MAX_CODE_BYTES} bytes" if size > MAX_CODE_BYTES else None


def run_python(code: str, limits: Limits = Limits()) -> SandboxResult:
    """Run `code` in a fresh sandboxed interpreter and return its (capped) output."""
    t0 = time.perf_counter()
    why = _unrunnable(code)
    if why:
        return SandboxResult(f"refused: {why}\n", 1, False, False, 0.0)
    tmp = tempfile.mkdtemp(prefix="ponder-py-")  # ponder's own: the output file (and the work folder without namespaces)
    try:
        ns = _namespace_prefix()
        uid = NOBODY if os.geteuid() == 0 and "--user" not in ns else -1
        work = PRIVATE_WORK if ns else os.path.join(tmp, "work")
        out_path = os.path.join(tmp, "output")
        if not ns and uid >= 0:
            os.chmod(tmp, 0o711)  # nobody may pass through to its work folder, not read ponder's output
        argv = [*ns, _interpreter(), "-s", "-S", "-P", "-X", "utf8", "-B", "-c", _BOOTSTRAP, work, code,
                str(limits.cpu_seconds), str(limits.memory_bytes), str(limits.processes), str(limits.file_bytes),
                str(limits.open_files), str(uid), str(int(limits.audit_hook))]
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=tmp,
                                    env={"PYTHONHASHSEED": "0"}, start_new_session=True, close_fds=True)
            timed_out = False
            try:
                rc = proc.wait(timeout=limits.wall_seconds)
            except subprocess.TimeoutExpired:
                timed_out, rc = True, None
                _kill_group(proc)
        with open(out_path, "rb") as f:
            raw = f.read(4 * limits.max_output + 4)
        text = raw.decode("utf-8", errors="replace")
        if ns and rc:  # unshare's own complaint when its child died of a signal (e.g. the CPU limit)
            text = "".join(ln for ln in text.splitlines(True) if not ln.startswith("unshare: "))
        truncated = len(text) > limits.max_output or os.path.getsize(out_path) > len(raw)
        return SandboxResult(text[:limits.max_output], rc, timed_out, truncated, time.perf_counter() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
