"""ponder's own native kernel runtime: kernels compiled by llvmlite into cached objects, run on its own pool.

The end state (issue 14): every kernel of the generate path comes from one cached native
object per unit and runs on this pool, and Numba is not imported at run time.  Today the
weight products and the activation quantizers run here (kernels/qmm_native.py), and paged
attention (kernels/attention_native.py: a step's jobs as the pool's items); the norms, RoPE,
SiLU, the KV writes and the sampler's kernels have native twins (kernels/ops_emit.py, not yet
wired into the model).

    build.py   what goes into a unit's object, and compiling it (llvmlite, O3, host CPU)
    cache.py   the objects under $PONDER_HOME/kernels/, checksummed, rebuilt when stale or corrupt
    pool.py    the thread pool in IR: claim-by-CAS items, spin then futex-park idle workers
    bind.py    the process's runtime: MCJIT, the workers, run() through ctypes

Off by default until attention runs on the pool too; PONDER_NATIVE=1 turns it on (the same bits
either way).  Beside the native pool the engine must run Numba's kernels on one thread (two
spinning pools on the same cores collapse), and serial attention costs more than the native
products save: on a quiet 2-core machine (2026-12-02, 00:45-00:56 UTC, avx512_vnni) prefill of
256 tokens ran 0.85x and 16 samples of one prompt 0.85x the all-Numba engine, decode the same.
"""

from __future__ import annotations

import os
import threading

from ponder.kernels.native.bind import default_threads, run, runtime  # noqa: F401

_local = threading.local()


def enabled() -> bool:
    """What PONDER_NATIVE asks for."""
    return os.environ.get("PONDER_NATIVE", "0").strip() not in ("0", "false", "no", "off", "")


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
