"""The native runtime of one process: the loaded objects, the pool's workers, and run() through ctypes.

    run(name, argv, n_items, threads)   job: fn(argv, i) for i < n_items, on `threads` threads

`name` is an item function of a loaded unit (the unit is loaded on first use: from the
cache, else compiled and cached); `argv` is an int64 NumPy array (addresses, sizes and
strides; the caller keeps it and what it points to alive until run returns).

One MCJIT engine holds every unit's object (symbols resolve across them, and `syscall` /
`sched_yield` from the process).  The pool's state is an int64 array owned here; its
workers are Python threads that call pool_worker through ctypes (which releases the GIL,
so they run natively for their whole life), started lazily when a call first asks for
more threads, and stopped at interpreter exit (pool_stop wakes the parked ones; they
return and are joined).  Calls from several Python threads are serialized by a lock: the
pool runs one job at a time, and items are independent, so the bits do not depend on it.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import struct
import threading
import time

import numpy as np

from ponder.kernels import compile_events
from ponder.kernels.native import build, cache, pool

_c64 = ctypes.c_int64


class _PyMethodDef(ctypes.Structure):
    _fields_ = [("ml_name", ctypes.c_char_p), ("ml_meth", ctypes.c_void_p), ("ml_flags", ctypes.c_int),
                ("ml_doc", ctypes.c_char_p)]

_ENTRY = ctypes.CFUNCTYPE(None, _c64, _c64, _c64)    # entry(pool state, args, threads)
ARGV_WORDS = 64   # the longest argument vector an entry may take


_FLOATS = (float, np.float64, np.float32)
_double = struct.Struct("<d")
_int64 = struct.Struct("<q")


def word(v) -> int:
    """The int64 word the py_call builtin (pycall.py) passes for v: an int itself, an ndarray's data
    address, a float's (Python, numpy.float64 or numpy.float32) IEEE double bits."""
    if isinstance(v, np.ndarray):
        return v.ctypes.data
    if type(v) in _FLOATS:
        return _int64.unpack(_double.pack(float(v)))[0]
    if type(v) is int:
        return v
    raise TypeError(f"native call: a word is not an int, a float or a numpy.ndarray: {type(v).__name__}")


def default_threads() -> int:
    """Threads when nobody said: NUMBA_NUM_THREADS, else every CPU (as Numba's default)."""
    try:
        return max(1, int(os.environ.get("NUMBA_NUM_THREADS", "")))
    except ValueError:
        return os.cpu_count() or 1


class Runtime:
    def __init__(self):
        llvm = build._llvm()
        self._llvm = llvm
        name, feats = build.cpu()
        tm = llvm.Target.from_default_triple().create_target_machine(cpu=name, features=feats, opt=3)
        self._ee = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
        self._units: dict[str, str] = {}          # unit -> how it was loaded ("hit", "compiled")
        self._addr: dict[str, int] = {}
        self._lock = threading.Lock()             # one job at a time; also guards loading
        self.state = np.zeros(pool.WORDS, np.int64)
        self.state[pool.SPIN] = pool.DEFAULT_SPIN
        self._sp = self.state.ctypes.data
        self._workers: list[threading.Thread] = []
        self._argv = np.zeros(ARGV_WORDS, np.int64)   # call()'s argument vector, written under the lock
        self._argvp = self._argv.ctypes.data
        self._packers: dict[int, struct.Struct] = {}
        self._entries: dict[int, object] = {}
        self._load("pool")
        self._run = ctypes.CFUNCTYPE(None, _c64, _c64, _c64, _c64, _c64)(self._addr_of("pool_run"))
        self._worker = ctypes.CFUNCTYPE(None, _c64, _c64)(self._addr_of("pool_worker"))
        self._stop = ctypes.CFUNCTYPE(None, _c64)(self._addr_of("pool_stop"))
        self.pycall = self._make_pycall()
        atexit.register(self.stop)

    def _make_pycall(self):
        """The py_call builtin (pycall.py), or None if this interpreter's object layout is not the
        one it reads (then call() goes through ctypes)."""
        from ponder.kernels.native import pycall

        try:
            for name, obj in pycall.OBJECTS.items():
                addr = self._ee.get_global_value_address(name)
                ctypes.c_int64.from_address(addr).value = id(getattr(np, obj) if isinstance(obj, str) else obj)
            self._mdef = _PyMethodDef(b"ponder_native_call", self._addr_of("py_call"), pycall.METH_FASTCALL, None)
            new = ctypes.pythonapi.PyCFunction_NewEx
            new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.py_object, ctypes.py_object]
            fn = new(ctypes.addressof(self._mdef), None, None)
            out, probe = np.zeros(6, np.int64), np.zeros(5, np.float32)
            words = (5, probe, -7, 1.5, np.float64(-2.25), np.float32(0.1))
            fn(self._addr_of("py_call_probe"), out.ctypes.data, len(words), *words)
            if out.tolist() != [word(w) for w in words]:
                return None
            return fn
        except (AttributeError, KeyError, RuntimeError, TypeError, ValueError, OSError):
            return None

    @property
    def state_address(self) -> int:
        return self._sp

    def ensure_workers(self, threads: int) -> None:
        """Start workers so that a job may run on `threads` threads (the caller and threads - 1)."""
        if threads - 1 > len(self._workers):
            with self._lock:
                self._start_workers(threads - 1)

    # -- objects --------------------------------------------------------------
    def _load(self, unit: str) -> None:
        key = build.key(unit)
        obj, status = cache.read(key)
        if obj is None:
            name = "native thread pool" if unit == "pool" else f"native {unit} kernels"
            compile_events.started(name)    # the CLI's first-run notice says so (cli/compile_notice.py)
            t0 = time.perf_counter()
            obj = build.compile_unit(unit)
            cache.write(key, obj)
            compile_events.finished(name, time.perf_counter() - t0)
            status = f"compiled ({status})"
        self._ee.add_object_file(self._llvm.ObjectFileRef.from_data(obj))
        self._ee.finalize_object()
        self._units[unit] = status

    def load(self, unit: str) -> str:
        """Load a unit if it is not yet; how it was loaded: 'hit' or 'compiled (missing|stale|corrupt)'."""
        with self._lock:
            if unit not in self._units:
                self._load(unit)
            return self._units[unit]

    def _addr_of(self, name: str) -> int:
        a = self._addr.get(name)
        if a is None:
            a = self._ee.get_function_address(name)
            if not a:
                raise KeyError(f"no native function {name!r} is loaded")
            self._addr[name] = a
        return a

    def address(self, name: str, unit: str) -> int:
        """The address of function `name` of `unit` (loading the unit on first use)."""
        a = self._addr.get(name)
        if a is None:
            self.load(unit)
            a = self._addr_of(name)
        return a


    # -- the pool ---------------------------------------------------------------
    def _start_workers(self, n: int) -> None:
        while len(self._workers) < n:
            t = threading.Thread(target=self._worker, args=(self._sp, len(self._workers)),
                                 name=f"ponder-native-{len(self._workers)}", daemon=True)
            t.start()
            self._workers.append(t)

    def run(self, fn: int, argv: np.ndarray, n_items: int, threads: int) -> None:
        """fn(argv, i) for i < n_items on min(threads, n_items) threads (the caller is one of them)."""
        active = min(threads, n_items) - 1
        with self._lock:
            if active > len(self._workers):
                self._start_workers(active)
            self._run(self._sp, fn, argv.ctypes.data, n_items, active)

    def call(self, entry: int, values: tuple, threads: int) -> None:
        """entry(state, args, threads) with args = values, which runs its own jobs on the pool.

        values: ints, ndarrays (their data addresses) and floats (their double's bits: word()).
        Through the py_call builtin when this interpreter allows it (pycall.py), else through
        ctypes with the argument vector packed into the runtime's own, under the lock."""
        if self.pycall is not None:
            if threads - 1 > len(self._workers):
                self.ensure_workers(threads)
            self.pycall(entry, self._sp, threads, *values)
            return
        values = tuple(map(word, values))
        fn = self._entries.get(entry)
        if fn is None:
            fn = self._entries[entry] = _ENTRY(entry)
        packer = self._packers.get(len(values))
        if packer is None:
            if len(values) > ARGV_WORDS:
                raise ValueError(f"an entry takes at most {ARGV_WORDS} arguments")
            packer = self._packers[len(values)] = struct.Struct(f"<{len(values)}q")
        with self._lock:
            if threads - 1 > len(self._workers):
                self._start_workers(threads - 1)
            packer.pack_into(self._argv, 0, *values)
            fn(self._sp, self._argvp, threads)

    def stop(self) -> None:
        """Stop the workers (at exit; a stopped runtime runs later jobs on the caller alone)."""
        with self._lock:
            if self._workers:
                self._stop(self._sp)
                for t in self._workers:
                    t.join(timeout=5)
                self._workers = []
                self.state[pool.STOP] = 0

    @property
    def units(self) -> dict[str, str]:
        return dict(self._units)


_runtime: Runtime | None = None
_init_lock = threading.Lock()


def runtime() -> Runtime:
    """The process's runtime, made on first use."""
    global _runtime
    if _runtime is None:
        with _init_lock:
            if _runtime is None:
                _runtime = Runtime()
    return _runtime


def run(name: str, unit: str, argv: np.ndarray, n_items: int, threads: int) -> None:
    """Job: item function `name` of `unit` over n_items items, on up to `threads` threads."""
    rt = runtime()
    rt.run(rt.address(name, unit), argv, n_items, threads)
