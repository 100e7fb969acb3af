"""ponder's own native kernel runtime: kernels compiled by llvmlite into cached objects, run on its own pool.

Every kernel of the generate path comes from a cached native object and runs on this pool,
and Numba is not imported (a warm `ponder generate` starts in about half the time):

* the weight products and the activation quantizers (kernels/qmm_native.py, qmm_emit.py,
  act_quant_emit.py), one unit per instruction set;
* paged attention (kernels/attention_native.py, attention_job_emit.py: a step's jobs are the
  pool's items), one unit per (instruction set, head dim, KV block size);
* the norms, RoPE and the split into heads, SiLU*mul, the KV writes and the sampler's kernels
  (kernels/ops_native.py, sampling_native.py, ops_emit.py), one unit "ops", serial.

    build.py   what goes into a unit's object, and compiling it (llvmlite, O3, host CPU)
    cache.py   the objects under $PONDER_HOME/kernels/, checksummed, rebuilt when stale or corrupt
    pool.py    the thread pool in IR: claim-by-CAS items, spin then futex-park idle workers
    bind.py    the process's runtime: MCJIT, the workers, run() through ctypes
    pycall.py  a CPython builtin in IR that carries the calls

On by default; PONDER_NATIVE=0 runs the Numba twins instead (the reference: the same bits).
A model that has float weights, or runs PONDER_ISA=scalar, runs on Numba whatever this says
(model/kernel_set.py).  On a quiet 2-core machine (2026-12-02, 02:45-03:00 UTC, avx512_vnni),
native against all-Numba, alternated fresh processes: prefill of 256 tokens 1.06x, 16 samples
of one prompt 1.17x, decode 1.39x, warm start to the first token 0.44x the time (BENCHMARKS.md).
"""

from __future__ import annotations

import os
import threading

from ponder.kernels.native.bind import default_threads, run, runtime  # noqa: F401

_local = threading.local()


def enabled() -> bool:
    """What PONDER_NATIVE asks for (on unless it says 0, false, no or off)."""
    return os.environ.get("PONDER_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


# Whether this process runs its kernels here (the products, and a model's other kernels:
# model/kernel_set.py; the sampler's: engine/sampler.py).  A module attribute, read at each
# use, so that a benchmark can alternate the two in one process (the same bits either way).
active = enabled()


def threads() -> int:
    """Threads of this Python thread's native jobs: set_threads(), else default_threads()."""
    n = getattr(_local, "threads", None)
    if n is None:
        n = _local.threads = default_threads()
    return n


def set_threads(n: int | None) -> int | None:
    """Set this Python thread's native thread count (None: the default); returns the previous setting."""
    before = getattr(_local, "threads", None)
    _local.threads = n
    return before
